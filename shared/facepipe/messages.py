"""Typed messages at every boundary: the HTTP request, the queue task, and the result.

Schema versions: ``FaceTask.version`` and ``Result.version`` change only with a breaking change.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from pathlib import PurePath
from typing import Annotated, Any, Literal

import pydantic_core
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StrictInt,
    ValidationError,
    model_serializer,
)

from facepipe.errors import InvalidMessage, InvalidRequest

# request_ids become S3 key parts and log fields: keep them to a safe alphabet.
REQUEST_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:#@=+-]{0,127}$"
_REQUEST_ID_RE = re.compile(REQUEST_ID_PATTERN)
MAX_FILENAME = 255  # the default of FACEPIPE_MAX_FILENAME; no filename is ever longer
# Characters no filename may hold: C0/C1 controls and the two BMP non-characters, which SQS
# refuses in a message body (it allows #x9 #xA #xD #x20-#xD7FF #xE000-#xFFFD #x10000-#x10FFFF).
_FILENAME_BAD_RE = re.compile("[\x00-\x1f\x7f-\x9f\ufffe\uffff]")
MAX_VALIDATION_ERRORS = 5  # fields named in one error message; the rest are counted


def new_request_id() -> str:
    return uuid.uuid4().hex


def check_request_id(value: str) -> str:
    if not _REQUEST_ID_RE.fullmatch(value):
        raise ValueError(
            "request_id must be 1-128 characters of letters, digits and ._:#@=+- "
            "starting with a letter or digit"
        )
    return value


RequestId = Annotated[str, AfterValidator(check_request_id)]


def check_printable(value: str) -> str:
    if _FILENAME_BAD_RE.search(value):
        raise ValueError("must not contain control characters")
    return value


Filename = Annotated[str, Field(max_length=MAX_FILENAME), AfterValidator(check_printable)]
# S3 keys are at most 1024 bytes; a result's copy is written to such a key (S3 ingress).
OutputKey = Annotated[str, Field(min_length=1, max_length=1024), AfterValidator(check_printable)]
TimingName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_]{1,32}$")]
_ALBUM_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_album(value: str) -> str:
    if not _ALBUM_RE.fullmatch(value):
        raise ValueError("album name must be 1-64 letters, digits and ._- starting with one")
    return value


# How a request's final result is delivered: ``queue``, posted to the response queue (and kept
# in the result ledger, where the stack keeps results), or ``by_id``, kept in the ledger only,
# for a client that reads it by request_id (``/results``) and never takes the queue's copy,
# which would wait there unread for the queue's retention in every queue consumer's way.
Reply = Literal["queue", "by_id"]
RequestReply = Annotated[
    Reply,
    Field(
        description="how the final result is delivered: `queue` (posted to the response "
        "queue, and kept by request_id where the stack keeps results) or `by_id` (kept by "
        "request_id only, for a client that reads it from `/results`; nothing on the response "
        "queue)",
    ),
]


class AlbumRequest(BaseModel):
    """Album mode of a frame: ``index`` adds its faces to the album, ``find`` searches the album
    for the frame's (largest) face and answers with the photos holding that person."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, AfterValidator(check_album)]
    mode: Literal["index", "find"]


# --- HTTP request -----------------------------------------------------------------------------
# What a body over FACEPIPE_MAX_BODY_BYTES is told (the local Function URL says it too).
BODY_TOO_LARGE_ADVICE = (
    "send fewer frames per request; a single frame this large must be downscaled (`facepipe "
    "send` does it, keeping boxes in the original's pixels) or uploaded to the bucket instead "
    "(`facepipe upload`: photos of up to FACEPIPE_MAX_OBJECT_BYTES, 20 MiB)"
)
MAX_SIDE = 1_000_000  # the most pixels a frame's width or height may say (tasks, results)
Side = Annotated[StrictInt, Field(ge=1, le=MAX_SIDE)]


class FrameIn(BaseModel):
    """One frame in a POST body. ``content`` is the base64 of a JPEG/PNG/WebP file;
    ``original_size`` the ``[width, height]`` of the frame it was downscaled from (a frame too
    large for one request body), whose pixels boxes and landmarks are then given in; ``reply``
    how its result is delivered (:data:`Reply`)."""

    model_config = ConfigDict(extra="forbid")

    request_id: RequestId = Field(default_factory=new_request_id)
    filename: Filename = ""
    content: str = Field(min_length=1)
    album: AlbumRequest | None = None
    original_size: Annotated[list[Side], Field(min_length=2, max_length=2)] | None = None
    reply: RequestReply = "queue"


class DetectRequest(BaseModel):
    """A POST body: one frame, or ``{"frames": [...]}``."""

    model_config = ConfigDict(extra="forbid")

    frames: list[FrameIn] = Field(min_length=1)

    @classmethod
    def parse(
        cls, body: Any, *, max_frames: int, max_filename: int = MAX_FILENAME
    ) -> DetectRequest:
        if not isinstance(body, dict):
            raise InvalidRequest(
                'the body must be a JSON object: {"request_id", "filename", "content"} '
                'or {"frames": [...]}'
            )
        data = body if "frames" in body else {"frames": [body]}
        frames = data.get("frames")
        if isinstance(frames, list) and len(frames) > max_frames:
            raise InvalidRequest(
                f"{len(frames)} frames in one request; the limit is {max_frames} "
                "(FACEPIPE_MAX_FRAMES): split the request",
                code="too_many_frames",
                status=413,
            )
        try:
            request = cls.model_validate(data)
        except ValidationError as exc:
            raise InvalidRequest(describe_validation(exc)) from exc
        ids = [f.request_id for f in request.frames]
        if len(set(ids)) != len(ids):
            raise InvalidRequest("request_id values must be unique within one request")
        for index, frame in enumerate(request.frames):
            if len(frame.filename) > max_filename:
                where = f"frames.{index}.filename" if "frames" in body else "filename"
                raise InvalidRequest(
                    f"{where}: {len(frame.filename)} characters, over the limit of "
                    f"{max_filename} (FACEPIPE_MAX_FILENAME): send a shorter name"
                )
        return request


_PLAIN_NAME_RE = re.compile(r"[A-Za-z0-9_\[\]-]{1,40}")


def _field_name(part: int | str) -> str:
    """A location part of a validation error: an unknown field's name comes from the input, so
    it is shown escaped and short (no control characters reach logs, queues or answers)."""
    if isinstance(part, int) or _PLAIN_NAME_RE.fullmatch(part):
        return str(part)
    shown = ascii(part)
    return shown if len(shown) <= 40 else shown[:36] + "...'"


def describe_validation(exc: ValidationError) -> str:
    """pydantic errors → one readable line naming each bad field (never echoes the values);
    at most :data:`MAX_VALIDATION_ERRORS` are spelled out, so the line stays short."""
    errors = exc.errors(include_input=False, include_url=False)
    parts = []
    for err in errors[:MAX_VALIDATION_ERRORS]:
        loc = ".".join(_field_name(p) for p in err["loc"]) or "body"
        parts.append(f"{loc[:100]}: {err['msg'][:200]}")
    if len(errors) > MAX_VALIDATION_ERRORS:
        parts.append(f"and {len(errors) - MAX_VALIDATION_ERRORS} more errors")
    return "; ".join(parts)


# --- results by request_id (the Function URL's /results) ------------------------------------
MAX_RESULT_IDS = 100  # request_ids per POST /results: one DynamoDB BatchGetItem
# done: the result is in ``result``; pending: admitted, not out yet; unknown: no such request_id
# in the ledger; on_queue: done, but only the response queue has it; deferred: done, but over
# what one answer carries (ask again). See facepipe.stages.results.
ResultStateName = Literal["done", "pending", "unknown", "on_queue", "deferred"]


class ResultsRequest(BaseModel):
    """A ``POST /results`` body: ``{"request_ids": [...]}``, 1 to :data:`MAX_RESULT_IDS` ids."""

    model_config = ConfigDict(extra="forbid")

    request_ids: list[RequestId] = Field(min_length=1, max_length=MAX_RESULT_IDS)

    @classmethod
    def parse(cls, body: str | bytes) -> ResultsRequest:
        try:
            return cls.model_validate_json(body)
        except ValidationError as exc:
            raise InvalidRequest(
                f'{describe_validation(exc)}; POST {{"request_ids": [...]}} with 1 to '
                f"{MAX_RESULT_IDS} request_ids"
            ) from exc


class ResultState(BaseModel):
    """One request_id in a ``/results`` answer: its ``state`` and, when ``done``, its
    ``result`` as posted to the response queue (a claim-checked one names its S3 copy in
    ``payload_uri``); ``message`` says what to do about the other states (single lookups)."""

    request_id: str
    state: ResultStateName
    result: dict[str, Any] | None = None
    message: str | None = None

    def answer(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


# --- queue task (detection → recognition) ---------------------------------------------------
Point = Annotated[list[float], Field(min_length=2, max_length=2)]


class FaceCrop(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False)

    box: list[float] = Field(min_length=4, max_length=4)
    probability: float = Field(ge=0.0, le=1.0)
    landmarks: list[Point] = Field(default_factory=list, max_length=100)
    crop_png: str = Field(min_length=1, description="base64 PNG of the uint8 RGB crop")


class FaceTask(BaseModel):
    """One frame's faces on the request queue. When the message would be too large the faces go
    to S3 (claim check) and ``payload_key`` names the object holding ``faces``."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    version: Literal[1] = 1
    request_id: RequestId
    filename: Filename = ""
    width: int = Field(ge=1, le=MAX_SIDE)
    height: int = Field(ge=1, le=MAX_SIDE)
    detector: str = Field(default="mtcnn", max_length=64)
    embedder: str = Field(
        "vggface2",
        max_length=64,
        description="the embedder the crops were cut for (FACEPIPE_EMBEDDER of detection); "
        "tasks from before it was recorded carry facenet crops",
    )
    faces: list[FaceCrop] = Field(default_factory=list)
    faces_dropped: int | None = Field(
        default=None, ge=0, description="faces found beyond FACEPIPE_MAX_FACES (the smallest)"
    )
    payload_key: Annotated[str, AfterValidator(check_printable)] | None = Field(
        default=None, min_length=1, max_length=1024
    )
    album: AlbumRequest | None = None
    output_key: OutputKey | None = Field(
        default=None,
        description="S3 ingress: the data bucket key the final result is also written to",
    )
    timings_ms: dict[TimingName, float] = Field(default_factory=dict, max_length=32)
    sent_at: float = Field(description="epoch seconds when detection sent the task")
    reply: RequestReply = "queue"

    @model_serializer(mode="wrap")
    def _without_default_reply(self, handler: SerializerFunctionWrapHandler) -> Any:
        """``reply`` is written only when it is ``by_id``: a ``queue`` task is the same JSON as
        before the field, which a recognition worker of an older release still reads (its
        ``FaceTask`` forbids unknown fields)."""
        data = handler(self)
        if isinstance(data, dict) and self.reply == "queue":
            data.pop("reply", None)
        return data

    @classmethod
    def parse_json(cls, text: str | bytes) -> FaceTask:
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            raise InvalidMessage(
                f"the queue message is not a valid face task: {describe_validation(exc)}; "
                "tasks are written by the detection function"
            ) from exc


class FacePayload(BaseModel):
    """The S3 object of a claim-checked task."""

    model_config = ConfigDict(extra="forbid")

    request_id: RequestId
    faces: list[FaceCrop]

    @classmethod
    def parse_json(cls, data: str | bytes, key: str) -> FacePayload:
        try:
            return cls.model_validate_json(data)
        except ValidationError as exc:
            raise InvalidMessage(
                f"claim-check payload {key} is not valid: {describe_validation(exc)}"
            ) from exc


def readable_request_id(body: str | bytes, attribute: object = None) -> str | None:
    """The request_id of a queue message that may be malformed, so that its ``error`` result
    can still reach the client: the ``request_id`` message attribute, else the body's
    ``request_id`` field (the rest of the body may be invalid, or even cut short). Only a value
    that is a valid request_id counts; ``None`` when there is none.

    >>> readable_request_id('{"request_id": "r1", "width": "wide"}')
    'r1'
    >>> readable_request_id("not json", "r2"), readable_request_id("not json")
    ('r2', None)
    """
    candidates: list[object] = [attribute, _readable_body(body).get("request_id")]
    for value in candidates:
        if isinstance(value, str) and _REQUEST_ID_RE.fullmatch(value):
            return value
    return None


def readable_reply(body: str | bytes) -> Reply:
    """How the result of a queue message that may be malformed is delivered: ``by_id`` when its
    body's ``reply`` field says so (however invalid the rest), else ``queue``, the default.

    >>> readable_reply('{"request_id": "r1", "width": "wide", "reply": "by_id"}')
    'by_id'
    >>> readable_reply("not json"), readable_reply('{"reply": "email"}')
    ('queue', 'queue')
    """
    return "by_id" if _readable_body(body).get("reply") == "by_id" else "queue"


def _readable_body(body: str | bytes) -> dict[str, Any]:
    """The fields of a JSON object that may be invalid or cut short, as far as they parse."""
    try:
        data = pydantic_core.from_json(body, allow_partial=True)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


# --- result (recognition → response queue) ----------------------------------------------------
class ErrorInfo(BaseModel):
    code: str
    message: str


class PersonMatch(BaseModel):
    """One of a face's top-k people: their best gallery row's similarity and distance."""

    name: str
    similarity: float
    distance: float


class FaceResult(BaseModel):
    box: list[float]
    probability: float
    landmarks: list[list[float]] = Field(default_factory=list)
    name: str
    distance: float | None = None
    similarity: float | None = None
    matches: list[PersonMatch] = Field(
        default_factory=list, description="top-k people, best first, whatever the threshold"
    )
    embedding: list[float] | None = None

    def label(self) -> str:
        """How people read the face: ``alice (0.75)``, the name and its similarity (the demo's
        table, ``facepipe run``, the annotations); just the name without a similarity."""
        return self.name if self.similarity is None else f"{self.name} ({self.similarity:.2f})"


class AlbumMatch(BaseModel):
    photo: str
    box: list[float]
    similarity: float
    distance: float


class AlbumOutcome(BaseModel):
    """What an album frame did: faces ``indexed``, or the ``matches`` (photos, best first)."""

    name: str
    mode: Literal["index", "find"]
    indexed: int | None = None
    matches: list[AlbumMatch] | None = None


class Models(BaseModel):
    detector: str = "mtcnn"
    embedder: str | None = None


class Result(BaseModel):
    """One final result per request_id, posted to the response queue (or, ``reply`` ``by_id``,
    only kept in the result ledger)."""

    version: Literal[1] = 1
    request_id: str
    filename: str = ""
    status: Literal["ok", "no_face", "error"]
    width: int | None = None
    height: int | None = None
    faces: list[FaceResult] = Field(default_factory=list)
    result: list[str] = Field(default_factory=list, description="recognised names, as faces")
    models: Models = Field(default_factory=Models)
    weights: str | None = None
    timings_ms: dict[str, float] = Field(default_factory=dict)
    album: AlbumOutcome | None = None
    error: ErrorInfo | None = None
    output_key: str | None = Field(
        default=None,
        description="S3 ingress: the data bucket key this result is also written to "
        "(output/<input key without input/>.json)",
    )
    faces_dropped: int | None = Field(
        default=None, description="faces found beyond FACEPIPE_MAX_FACES (the smallest), if any"
    )
    payload_uri: str | None = Field(
        default=None,
        description="a result too large for the response queue: the s3:// URI of the whole "
        "result (this message carries it without faces, result and album)",
    )
    reply: Reply = Field(
        default="queue",
        exclude=True,
        description="where the stack delivers this result (its request's `reply`), not part of "
        "it: never written, so always `queue` in a result read back",
    )

    def to_json(self) -> str:
        return self.model_dump_json(exclude_none=True)


def results_table(results: Sequence[Result]) -> str:
    """Results as people read them (the demo, ``get``/``poll``/``run`` on a terminal): one row
    per result, ``request_id  file  status  faces: name (similarity)``."""
    rows = [("request_id", "file", "status", "faces: name (similarity)")]
    for r in results:
        faces = ", ".join(f.label() for f in r.faces)
        if r.error is not None:
            faces = f"{r.error.code}: {r.error.message}"
        rows.append((r.request_id, PurePath(r.filename).name, r.status, faces or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join(
        "  ".join(cell.ljust(widths[i]) if i < 3 else cell for i, cell in enumerate(row))
        for row in rows
    )


class Accepted(BaseModel):
    """What the Function URL answers for each frame (HTTP 202): ``queued`` (its faces go to
    recognition), ``no_face`` (its result is posted already) or ``duplicate`` (the same frame
    was sent before under this request_id and its result is already out: nothing is posted
    again)."""

    request_id: str
    filename: str
    status: Literal["queued", "no_face", "duplicate"]
    faces: int
    faces_dropped: int | None = None

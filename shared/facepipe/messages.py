"""Typed messages at every boundary: the HTTP request, the queue task, and the result.

Schema versions: ``FaceTask.version`` and ``Result.version`` change only with a breaking change.
"""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from facepipe.errors import InvalidMessage, InvalidRequest

# request_ids become S3 key parts and log fields: keep them to a safe alphabet.
REQUEST_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:#@=+-]{0,127}$"
_REQUEST_ID_RE = re.compile(REQUEST_ID_PATTERN)
MAX_FILENAME = 255


def new_request_id() -> str:
    return uuid.uuid4().hex


def check_request_id(value: str) -> str:
    if not _REQUEST_ID_RE.match(value):
        raise ValueError(
            "request_id must be 1-128 characters of letters, digits and ._:#@=+- "
            "starting with a letter or digit"
        )
    return value


RequestId = Annotated[str, AfterValidator(check_request_id)]
_ALBUM_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_album(value: str) -> str:
    if not _ALBUM_RE.match(value):
        raise ValueError("album name must be 1-64 letters, digits and ._- starting with one")
    return value


class AlbumRequest(BaseModel):
    """Album mode of a frame: ``index`` adds its faces to the album, ``find`` searches the album
    for the frame's (largest) face and answers with the photos holding that person."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, AfterValidator(check_album)]
    mode: Literal["index", "find"]


# --- HTTP request -----------------------------------------------------------------------------
class FrameIn(BaseModel):
    """One frame in a POST body. ``content`` is the base64 of a JPEG/PNG/WebP file."""

    model_config = ConfigDict(extra="forbid")

    request_id: RequestId = Field(default_factory=new_request_id)
    filename: str = Field("", max_length=MAX_FILENAME)
    content: str = Field(min_length=1)
    album: AlbumRequest | None = None


class DetectRequest(BaseModel):
    """A POST body: one frame, or ``{"frames": [...]}``."""

    model_config = ConfigDict(extra="forbid")

    frames: list[FrameIn] = Field(min_length=1)

    @classmethod
    def parse(cls, body: Any, *, max_frames: int) -> DetectRequest:
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
        return request


def describe_validation(exc: ValidationError) -> str:
    """pydantic errors → one readable line naming each bad field (never echoes the values)."""
    parts = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


# --- queue task (detection → recognition) ---------------------------------------------------
class FaceCrop(BaseModel):
    box: list[float] = Field(min_length=4, max_length=4)
    probability: float
    landmarks: list[list[float]] = Field(default_factory=list)
    crop_png: str = Field(description="base64 PNG of the uint8 RGB crop")


class FaceTask(BaseModel):
    """One frame's faces on the request queue. When the message would be too large the faces go
    to S3 (claim check) and ``payload_key`` names the object holding ``faces``."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    request_id: RequestId
    filename: str = ""
    width: int
    height: int
    detector: str = "mtcnn"
    embedder: str = Field(
        "vggface2",
        description="the embedder the crops were cut for (FACEPIPE_EMBEDDER of detection); "
        "tasks from before it was recorded carry facenet crops",
    )
    faces: list[FaceCrop] = Field(default_factory=list)
    payload_key: str | None = None
    album: AlbumRequest | None = None
    timings_ms: dict[str, float] = Field(default_factory=dict)
    sent_at: float = Field(description="epoch seconds when detection sent the task")

    @classmethod
    def parse_json(cls, text: str) -> FaceTask:
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            raise InvalidMessage(describe_validation(exc)) from exc


class FacePayload(BaseModel):
    """The S3 object of a claim-checked task."""

    request_id: str
    faces: list[FaceCrop]


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
    """One final result per request_id, posted to the response queue."""

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

    def to_json(self) -> str:
        return self.model_dump_json(exclude_none=True)


class Accepted(BaseModel):
    """What the Function URL answers for each frame (HTTP 202)."""

    request_id: str
    filename: str
    status: Literal["queued", "no_face"]
    faces: int

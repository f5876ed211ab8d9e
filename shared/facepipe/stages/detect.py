"""The detection stage: a POST body → decoded frames → faces → one queue task per frame.

Frames with no face get their final ``no_face`` result straight away, so every accepted
request_id ends in exactly one result. Nothing here knows about AWS: where tasks and results go
is a :class:`Dispatcher` (SQS in Lambda, a list in tests, direct recognition in ``facepipe run``).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from PIL import Image

from facepipe.config import Settings
from facepipe.errors import InvalidRequest, PayloadTooLarge
from facepipe.messages import (
    BODY_TOO_LARGE_ADVICE,
    Accepted,
    AlbumOutcome,
    AlbumRequest,
    DetectRequest,
    FaceCrop,
    FaceTask,
    FrameIn,
    Models,
    Reply,
    Result,
)
from facepipe.stages.ledger import Admission, ResultLedger
from facepipe.vision.crops import crop_to_b64
from facepipe.vision.detector import DetectedFace, FaceDetector
from facepipe.vision.frames import decode_base64, load_image, open_image


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000.0, 3)


@dataclass
class FrameFaces:
    """A frame after detection, in memory: what both stages agree a frame is."""

    request_id: str
    filename: str
    width: int
    height: int
    faces: list[DetectedFace]
    timings_ms: dict[str, float] = field(default_factory=dict)
    sent_at: float | None = None
    embedder: str = "vggface2"  # the embedder the crops were cut for
    album: AlbumRequest | None = None  # album mode of the frame, if any
    output_key: str | None = None  # S3 ingress: where the final result is also written
    faces_dropped: int = 0  # faces found beyond FACEPIPE_MAX_FACES (the smallest)
    reply: Reply = "queue"  # how the final result is delivered (the request's `reply`)

    def to_task(self) -> FaceTask:
        return FaceTask(
            request_id=self.request_id,
            filename=self.filename,
            width=self.width,
            height=self.height,
            embedder=self.embedder,
            album=self.album,
            output_key=self.output_key,
            faces_dropped=self.faces_dropped or None,
            faces=[
                FaceCrop(
                    box=[round(v, 2) for v in f.box],
                    probability=f.probability,
                    landmarks=[[round(x, 2), round(y, 2)] for x, y in f.landmarks],
                    crop_png=crop_to_b64(f.crop),
                )
                for f in self.faces
            ],
            timings_ms=self.timings_ms,
            sent_at=time.time(),
            reply=self.reply,
        )

    def scale_to(self, width: int, height: int) -> None:
        """Boxes, landmarks and size in the pixels of the ``width`` × ``height`` frame this one
        was downscaled from (a request's ``original_size``); the crops stay as they were cut."""
        sx, sy = width / self.width, height / self.height
        self.faces = [
            replace(
                f,
                box=(f.box[0] * sx, f.box[1] * sy, f.box[2] * sx, f.box[3] * sy),
                landmarks=tuple((x * sx, y * sy) for x, y in f.landmarks),
            )
            for f in self.faces
        ]
        self.width, self.height = width, height

    def no_face_result(self) -> Result:
        return Result(
            request_id=self.request_id,
            filename=self.filename,
            status="no_face",
            width=self.width,
            height=self.height,
            models=Models(),
            timings_ms=self.timings_ms,
            album=empty_album_outcome(self.album),
            output_key=self.output_key,
            reply=self.reply,
        )

    def accepted(self) -> Accepted:
        """What the Function URL answers for this frame."""
        return Accepted(
            request_id=self.request_id,
            filename=self.filename,
            status="queued" if self.faces else "no_face",
            faces=len(self.faces),
            faces_dropped=self.faces_dropped or None,
        )


def empty_album_outcome(album: AlbumRequest | None) -> AlbumOutcome | None:
    """The album part of a result with no face: nothing indexed, nobody found."""
    if album is None:
        return None
    if album.mode == "index":
        return AlbumOutcome(name=album.name, mode="index", indexed=0)
    return AlbumOutcome(name=album.name, mode="find", matches=[])


class Detection:
    """Decode + detect for one frame, with stage timings and the frame limits of the settings
    (pixels per frame, pixels MTCNN runs on, faces kept)."""

    def __init__(self, settings: Settings, detector: FaceDetector) -> None:
        self.settings = settings
        self.detector = detector

    def image(self, request_id: str, filename: str, image: Image.Image) -> FrameFaces:
        """Detect the faces of a decoded frame: MTCNN on at most the pixels the memory budget
        allows (``Settings.detect_pixel_limit``), the ``max_faces`` largest kept."""
        start = time.perf_counter()
        limit = self.settings.detect_pixel_limit(image.width * image.height)
        faces = self.detector.detect(image, max_pixels=limit)
        kept = faces[: self.settings.max_faces]
        found = FrameFaces(
            request_id,
            filename,
            image.width,
            image.height,
            kept,
            {"detect": _ms(start)},
            embedder=self.detector.cropper.kind,
        )
        found.faces_dropped = len(faces) - len(kept)
        return found

    def decode(self, content_b64: str) -> tuple[Image.Image, float]:
        start = time.perf_counter()
        image = self.load(self.open(content_b64))
        return image, _ms(start)

    def decode_bytes(self, data: bytes) -> tuple[Image.Image, float]:
        """An image file's bytes (an S3 object) under the same format and pixel limits as a
        POSTed frame, so both entrances accept and refuse exactly the same images."""
        start = time.perf_counter()
        return self.load(self.open_bytes(data)), _ms(start)

    def open(self, content_b64: str) -> Image.Image:
        """A POSTed frame's header, checked against the limits; no pixel decoded yet."""
        return self.open_bytes(decode_base64(content_b64))

    def open_bytes(self, data: bytes) -> Image.Image:
        return open_image(
            data, max_pixels=self.settings.frame_pixel_limit, formats=self.settings.accepted_formats
        )

    def load(self, image: Image.Image) -> Image.Image:
        return load_image(image)


class Dispatcher(Protocol):
    """Where the detection stage sends its output."""

    def send_task(self, task: FaceTask) -> None: ...

    def send_result(self, result: Result) -> None: ...


@dataclass
class DetectionReport:
    """What one request did: the per-frame answers plus counts for metrics."""

    accepted: list[Accepted]

    @property
    def faces(self) -> int:
        return sum(a.faces for a in self.accepted)

    def body(self) -> dict[str, object]:
        frames = [a.model_dump(exclude_none=True) for a in self.accepted]
        out: dict[str, object] = {"frames": frames}
        if len(self.accepted) == 1:
            out["request_id"] = self.accepted[0].request_id
        return out


def frame_digest(frame: FrameIn) -> str:
    """What makes a POSTed frame the same frame again (a client's retry): its name, album mode,
    image bytes as base64 (whitespace aside) and original size, if it says one. The ledger keeps
    it with the request_id.

    >>> frame_digest(FrameIn(request_id="r", filename="a.jpg", content="aGk="))[:12]
    'f7f3bb7e976b'
    """
    digest = hashlib.sha256()
    for part in (frame.filename, frame.album.model_dump_json() if frame.album else ""):
        digest.update(part.encode())
        digest.update(b"\0")
    digest.update("".join(frame.content.split()).encode())
    if frame.original_size is not None:
        width, height = frame.original_size
        digest.update(f"\0{width},{height}".encode())
    return digest.hexdigest()[:32]


class DuplicateRequestId(InvalidRequest):
    """A request_id already used for another frame: answering would lose one of the two."""

    code = "duplicate_request_id"
    status = 409


class DetectionService:
    """POST body → :class:`DetectionReport`, all or nothing per request.

    Every frame is checked (headers, limits) before any is decoded, then decoded and detected
    one at a time (a request costs the memory of its largest frame, not of all of them), and
    only when every frame got through are the request_ids admitted to the ledger and the tasks
    and ``no_face`` results sent. A bad frame (4xx), a request_id in use for another frame
    (409 ``duplicate_request_id``) or a request over the pixel budget leaves no trace on the
    queues. The same frame sent again under its request_id (a client retrying) is processed
    again, or answered ``duplicate`` when its result is already out.
    """

    def __init__(
        self, detection: Detection, dispatcher: Dispatcher, ledger: ResultLedger | None = None
    ) -> None:
        self.detection = detection
        self.dispatcher = dispatcher
        self.ledger = ledger

    def parse(self, body: str | bytes) -> DetectRequest:
        settings = self.detection.settings
        size = len(body.encode() if isinstance(body, str) else body)
        if size > settings.max_body_bytes:
            raise PayloadTooLarge(
                f"the body is {size} bytes, over the limit of {settings.max_body_bytes} "
                f"(FACEPIPE_MAX_BODY_BYTES): {BODY_TOO_LARGE_ADVICE}"
            )
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
            raise InvalidRequest(f"the body is not valid JSON ({exc})") from exc
        except RecursionError as exc:
            raise InvalidRequest("the body is not valid JSON: it is nested too deeply") from exc
        request = DetectRequest.parse(
            payload, max_frames=settings.max_frames, max_filename=settings.max_filename
        )
        if not self.keeps_results:
            _refuse_by_id([f.request_id for f in request.frames if f.reply == "by_id"])
        return request

    @property
    def keeps_results(self) -> bool:
        """Whether results can be read here by request_id (a ledger, and
        ``FACEPIPE_RESULTS_BY_ID`` on): only then may a frame ask for ``"reply": "by_id"``."""
        return self.ledger is not None and self.detection.settings.results_by_id

    def handle_body(self, body: str | bytes) -> DetectionReport:
        request = self.parse(body)
        digests = {f.request_id: frame_digest(f) for f in request.frames}
        admissions = self.ledger.check(digests) if self.ledger is not None else {}
        _refuse_conflicts([r for r, a in admissions.items() if a is Admission.CONFLICT])
        todo = [f for f in request.frames if admissions.get(f.request_id) != Admission.ANSWERED]
        images = self._open_all(request.frames, todo)
        outputs: dict[str, FaceTask | Result] = {}
        accepted: dict[str, Accepted] = {}
        for frame in todo:
            found = self._detect(request.frames, frame, images.pop(frame.request_id))
            outputs[frame.request_id] = found.to_task() if found.faces else found.no_face_result()
            accepted[frame.request_id] = found.accepted()
        if self.ledger is not None:
            answered = self._admit({r: digests[r] for r in outputs})
            for request_id in answered:
                del outputs[request_id]
        for output in outputs.values():
            if isinstance(output, FaceTask):
                self.dispatcher.send_task(output)
            else:
                self.dispatcher.send_result(output)
        return DetectionReport(
            [
                accepted[f.request_id]
                if f.request_id in outputs
                else Accepted(
                    request_id=f.request_id, filename=f.filename, status="duplicate", faces=0
                )
                for f in request.frames
            ]
        )

    def _open_all(
        self, frames: Sequence[FrameIn], todo: Sequence[FrameIn]
    ) -> dict[str, Image.Image]:
        """Every frame's header checked, and the request's pixel budget, before any decoding."""
        settings = self.detection.settings
        images: dict[str, Image.Image] = {}
        total = 0
        for frame in todo:
            try:
                image = self.detection.open(frame.content)
            except InvalidRequest as exc:
                exc.message = f"{_where(frames, frame)}: {exc.message}"
                raise
            total += image.width * image.height
            images[frame.request_id] = image
        if total > settings.max_request_pixels:
            raise PayloadTooLarge(
                f"the request's {len(todo)} frames hold {total} pixels, over the limit of "
                f"{settings.max_request_pixels} per request (FACEPIPE_MAX_REQUEST_PIXELS): send "
                "fewer or smaller frames per request",
                code="request_too_large",
            )
        return images

    def _detect(self, frames: Sequence[FrameIn], frame: FrameIn, image: Image.Image) -> FrameFaces:
        start = time.perf_counter()
        try:
            pixels = self.detection.load(image)
        except InvalidRequest as exc:  # a body corrupt past its header: still nothing sent
            exc.message = f"{_where(frames, frame)}: {exc.message}"
            raise
        decode_ms = _ms(start)
        found = self.detection.image(frame.request_id, frame.filename, pixels)
        found.timings_ms["decode"] = decode_ms
        found.album = frame.album
        found.reply = frame.reply
        if frame.original_size is not None:
            width, height = frame.original_size
            if width < pixels.width or height < pixels.height:
                raise InvalidRequest(
                    f"{_where(frames, frame, 'original_size')}: {width}x{height} is smaller than "
                    f"the image sent ({pixels.width}x{pixels.height}); it is the size of the "
                    "frame the image was downscaled from"
                )
            found.scale_to(width, height)
        return found

    def _admit(self, digests: Mapping[str, str]) -> set[str]:
        """Admit every request_id (all or none): the ones answered meanwhile are returned
        (nothing to send for them); a conflict withdraws this request's admissions → 409."""
        assert self.ledger is not None
        admitted: list[str] = []
        answered: set[str] = set()
        for request_id, digest in digests.items():
            admission = self.ledger.admit(request_id, digest)
            if admission is Admission.CONFLICT:
                for earlier in admitted:
                    self.ledger.withdraw(earlier, digests[earlier])
                _refuse_conflicts([request_id])
            if admission is Admission.NEW:
                admitted.append(request_id)
            elif admission is Admission.ANSWERED:
                answered.add(request_id)
        return answered


def _where(frames: Sequence[FrameIn], frame: FrameIn, name: str = "") -> str:
    """``frames[1] (cam-7)`` or ``content (cam-7)``: which frame an error is about (with a field
    ``name``: ``frames[1].original_size (cam-7)`` or ``original_size (cam-7)``)."""
    if len(frames) > 1:
        where = f"frames[{frames.index(frame)}]" + (f".{name}" if name else "")
    else:
        where = name or "content"
    return f"{where} ({frame.request_id})"


class ResultsByIdOff(InvalidRequest):
    """A frame asks for its result by request_id only, where nobody can read it so."""

    code = "results_by_id_off"
    status = 400


def _refuse_by_id(request_ids: Sequence[str]) -> None:
    """400 when frames ask for ``"reply": "by_id"`` of a stack that does not offer results by
    request_id: kept only where nobody can read it, such a result would be lost."""
    if request_ids:
        raise ResultsByIdOff(
            f'request_id {_shown(request_ids)}: "reply": "by_id" asks for the result by '
            "request_id only, and this stack does not offer results by request_id "
            "(FACEPIPE_RESULTS_BY_ID is off, as on a public Function URL): send without it and "
            "take the results from the response queue"
        )


def _shown(request_ids: Sequence[str]) -> str:
    """At most 5 request_ids, and how many more."""
    more = f" and {len(request_ids) - 5} more" if len(request_ids) > 5 else ""
    return ", ".join(request_ids[:5]) + more


def _refuse_conflicts(conflicts: Sequence[str]) -> None:
    """409 naming the request_ids that already name another frame, if any."""
    if conflicts:
        raise DuplicateRequestId(
            f"request_id {_shown(conflicts)} already names another frame (its result is out "
            "or on its way); a request_id names one frame: send this frame with a new request_id"
        )

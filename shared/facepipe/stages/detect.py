"""The detection stage: a POST body → decoded frames → faces → one queue task per frame.

Frames with no face get their final ``no_face`` result straight away, so every accepted
request_id ends in exactly one result. Nothing here knows about AWS: where tasks and results go
is a :class:`Dispatcher` (SQS in Lambda, a list in tests, direct recognition in ``facepipe run``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Literal, Protocol

from PIL import Image

from facepipe.config import Settings
from facepipe.crops import crop_to_b64
from facepipe.detection import DetectedFace, FaceDetector
from facepipe.errors import InvalidRequest, PayloadTooLarge
from facepipe.frames import decode_base64, decode_image
from facepipe.messages import (
    Accepted,
    AlbumOutcome,
    AlbumRequest,
    DetectRequest,
    FaceCrop,
    FaceTask,
    Models,
    Result,
)


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

    def to_task(self) -> FaceTask:
        return FaceTask(
            request_id=self.request_id,
            filename=self.filename,
            width=self.width,
            height=self.height,
            embedder=self.embedder,
            album=self.album,
            output_key=self.output_key,
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
        )

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
        )


def empty_album_outcome(album: AlbumRequest | None) -> AlbumOutcome | None:
    """The album part of a result with no face: nothing indexed, nobody found."""
    if album is None:
        return None
    if album.mode == "index":
        return AlbumOutcome(name=album.name, mode="index", indexed=0)
    return AlbumOutcome(name=album.name, mode="find", matches=[])


class Detection:
    """Decode + detect for one frame, with stage timings."""

    def __init__(self, settings: Settings, detector: FaceDetector) -> None:
        self.settings = settings
        self.detector = detector

    def image(self, request_id: str, filename: str, image: Image.Image) -> FrameFaces:
        start = time.perf_counter()
        faces = self.detector.detect(image)
        return FrameFaces(
            request_id,
            filename,
            image.width,
            image.height,
            faces,
            {"detect": _ms(start)},
            embedder=self.detector.cropper.kind,
        )

    def decode(self, content_b64: str) -> tuple[Image.Image, float]:
        start = time.perf_counter()
        image = self._decode(decode_base64(content_b64))
        return image, _ms(start)

    def decode_bytes(self, data: bytes) -> tuple[Image.Image, float]:
        """An image file's bytes (an S3 object) under the same format and pixel limits as a
        POSTed frame, so both entrances accept and refuse exactly the same images."""
        start = time.perf_counter()
        return self._decode(data), _ms(start)

    def _decode(self, data: bytes) -> Image.Image:
        return decode_image(
            data, max_pixels=self.settings.max_pixels, formats=self.settings.accepted_formats
        )


class Dispatcher(Protocol):
    """Where the detection stage sends its output."""

    def send_task(self, task: FaceTask) -> None: ...

    def send_result(self, result: Result) -> None: ...


@dataclass
class DetectionReport:
    """What one request did: the per-frame answers plus counts for metrics."""

    accepted: list[Accepted]
    frames: list[FrameFaces]

    @property
    def faces(self) -> int:
        return sum(len(f.faces) for f in self.frames)

    def body(self) -> dict[str, object]:
        out: dict[str, object] = {"frames": [a.model_dump() for a in self.accepted]}
        if len(self.accepted) == 1:
            out["request_id"] = self.accepted[0].request_id
        return out


class DetectionService:
    """POST body → :class:`DetectionReport`; raises :class:`InvalidRequest` (4xx) for bad input
    before anything is sent, so a rejected request leaves no trace on the queues."""

    def __init__(self, detection: Detection, dispatcher: Dispatcher) -> None:
        self.detection = detection
        self.dispatcher = dispatcher

    def handle_body(self, body: str | bytes) -> DetectionReport:
        settings = self.detection.settings
        size = len(body.encode() if isinstance(body, str) else body)
        if size > settings.max_body_bytes:
            raise PayloadTooLarge(
                f"the body is {size} bytes, over the limit of {settings.max_body_bytes} "
                "(FACEPIPE_MAX_BODY_BYTES): send fewer or smaller frames per request"
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
        # Decode every frame first: one bad frame rejects the request before any is queued.
        decoded = []
        for index, frame in enumerate(request.frames):
            try:
                decoded.append(self.detection.decode(frame.content))
            except InvalidRequest as exc:
                where = f"frames[{index}]" if len(request.frames) > 1 else "content"
                exc.message = f"{where} ({frame.request_id}): {exc.message}"
                raise
        report = DetectionReport([], [])
        for frame, (image, decode_ms) in zip(request.frames, decoded, strict=True):
            found = self.detection.image(frame.request_id, frame.filename, image)
            found.timings_ms["decode"] = decode_ms
            found.album = frame.album
            status: Literal["queued", "no_face"] = "queued"
            if found.faces:
                self.dispatcher.send_task(found.to_task())
            else:
                self.dispatcher.send_result(found.no_face_result())
                status = "no_face"
            report.frames.append(found)
            report.accepted.append(
                Accepted(
                    request_id=frame.request_id,
                    filename=frame.filename,
                    status=status,
                    faces=len(found.faces),
                )
            )
        return report

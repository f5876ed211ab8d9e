"""Wiring: settings → ready-to-use stage services with their AWS adapters.

Handlers call these once at init (cold start) and keep the result for every invocation.
"""

from __future__ import annotations

import logging

from botocore.exceptions import ClientError

from facepipe.aws.clients import client
from facepipe.aws.s3 import S3PayloadStore, read_uri
from facepipe.aws.sqs import SqsDispatcher, SqsResultSink
from facepipe.config import Settings
from facepipe.detection import FaceCropper, FaceDetector, FacenetCropper
from facepipe.embedding import Embedder, FacenetEmbedder
from facepipe.errors import ConfigError, GalleryError
from facepipe.matching import Gallery
from facepipe.stages.detect import Detection, DetectionService
from facepipe.stages.recognize import Recognition, RecognitionService
from facepipe.torch_runtime import configure_threads

_log = logging.getLogger(__name__)


def _require(settings: Settings, *names: str) -> None:
    missing = [f"FACEPIPE_{n.upper()}" for n in names if not getattr(settings, n)]
    if missing:
        raise ConfigError(f"missing configuration: {', '.join(missing)}")


def make_cropper(settings: Settings) -> FaceCropper:
    """The crop step ``FACEPIPE_EMBEDDER`` needs: facenet's ``extract_face`` or dlib's chip."""
    if settings.embedder == "dlib":
        from facepipe.dlib_embedder import DlibChipCropper

        return DlibChipCropper()
    return FacenetCropper(settings.image_size, settings.margin, kind=settings.embedder)


def make_detector(settings: Settings) -> FaceDetector:
    configure_threads(settings.threads)
    return FaceDetector(
        image_size=settings.image_size,
        margin=settings.margin,
        min_face_size=settings.min_face_size,
        min_probability=settings.min_face_probability,
        device=settings.device,
        cropper=make_cropper(settings),
    )


def make_embedder(settings: Settings) -> Embedder:
    """The embedder ``FACEPIPE_EMBEDDER`` names (dlib is imported only when chosen)."""
    configure_threads(settings.threads)
    if settings.embedder == "dlib":
        from facepipe.dlib_embedder import DlibEmbedder

        return DlibEmbedder(settings.weights, settings.device)
    return FacenetEmbedder(settings.embedder, settings.weights, settings.device)


def load_gallery(settings: Settings, s3: object | None = None) -> Gallery:
    """The gallery ``FACEPIPE_GALLERY`` names, or an empty one when unset."""
    if not settings.gallery:
        return Gallery()
    if s3 is None and settings.gallery.startswith("s3://"):
        s3 = client("s3", settings)
    try:
        data = read_uri(settings.gallery, s3)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            # A fresh stack has no gallery yet: run, naming everyone unknown, rather than fail
            # every batch into the DLQ. A gallery that exists but is unreadable still fails.
            _log.warning("no gallery at %s yet: every face is unknown", settings.gallery)
            return Gallery()
        raise GalleryError(f"cannot read gallery {settings.gallery}: {exc}") from exc
    except OSError as exc:
        raise GalleryError(f"cannot read gallery {settings.gallery}: {exc}") from exc
    return Gallery.from_bytes(data, source=settings.gallery)


def detection_service(settings: Settings) -> DetectionService:
    _require(settings, "request_queue_url", "response_queue_url", "bucket")
    sqs = client("sqs", settings)
    payloads = S3PayloadStore(client("s3", settings), settings.bucket, settings.payload_prefix)
    dispatcher = SqsDispatcher(
        sqs,
        settings.request_queue_url,
        SqsResultSink(sqs, settings.response_queue_url),
        payloads,
        settings.max_message_bytes,
    )
    return DetectionService(Detection(settings, make_detector(settings)), dispatcher)


def recognition_service(settings: Settings) -> RecognitionService:
    _require(settings, "response_queue_url", "bucket")
    s3 = client("s3", settings)
    recognition = Recognition(
        make_embedder(settings), load_gallery(settings, s3), settings.effective_match_threshold
    )
    return RecognitionService(
        recognition,
        SqsResultSink(client("sqs", settings), settings.response_queue_url),
        S3PayloadStore(s3, settings.bucket, settings.payload_prefix),
    )

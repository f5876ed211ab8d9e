"""The one wiring module: settings → a process's ready-to-use services and their AWS adapters.

Handlers, workers and the CLI call these once at init (cold start) and keep the result. The
recognition-only modules (embedders, gallery, albums) are imported by the factories that need
them, so that the detection function's cold start imports none of them.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from facepipe.aws.clients import LazyClient, client
from facepipe.aws.dynamo_ledger import DynamoLedger
from facepipe.aws.s3 import S3ObjectReader, S3PayloadStore, S3ResultCopies
from facepipe.aws.sqs import SqsDispatcher, SqsResultSink
from facepipe.config import Settings
from facepipe.errors import ConfigError, GalleryError
from facepipe.runtime import configure_threads
from facepipe.stages.batch import QueueStage
from facepipe.stages.detect import Detection, DetectionService
from facepipe.stages.ledger import (
    MAX_KEPT_RESULT_BYTES,
    MemoryLedger,
    OncePerRequest,
    ResultLedger,
    ResultSink,
)
from facepipe.stages.results import ResultReader
from facepipe.vision.detector import FaceCropper, FaceDetector, FacenetCropper

if TYPE_CHECKING:
    from facepipe.identity.embedders import Embedder
    from facepipe.identity.gallery import Matcher
    from facepipe.identity.gallery_store import GalleryBackend
    from facepipe.stages.ingest import IngestService
    from facepipe.stages.recognize import RecognitionService

_log = logging.getLogger(__name__)


def _require(settings: Settings, *names: str) -> None:
    missing = [f"FACEPIPE_{n.upper()}" for n in names if not getattr(settings, n)]
    if missing:
        raise ConfigError(f"missing configuration: {', '.join(missing)}")


def make_cropper(settings: Settings) -> FaceCropper:
    """The crop step ``FACEPIPE_EMBEDDER`` needs: facenet's ``extract_face`` or dlib's chip."""
    if settings.embedder == "dlib":
        from facepipe.identity.dlib_embedder import DlibChipCropper

        return DlibChipCropper()
    return FacenetCropper(settings.image_size, settings.margin, kind=settings.embedder)


def make_detector(settings: Settings) -> FaceDetector:
    configure_threads(settings.threads)
    return FaceDetector(
        image_size=settings.image_size,
        margin=settings.margin,
        min_face_size=settings.min_face_size,
        min_probability=settings.min_face_probability,
        max_side=settings.max_detect_side,
        device=settings.device,
        cropper=make_cropper(settings),
    )


def make_embedder(settings: Settings) -> Embedder:
    """The embedder ``FACEPIPE_EMBEDDER`` names (dlib is imported only when chosen). Torch's
    thread count is set by the facenet embedder itself, only when it runs on torch: the baked
    ONNX graph's cold start imports no torch, even with ``FACEPIPE_THREADS`` set."""
    if settings.embedder == "dlib":
        from facepipe.identity.dlib_embedder import DlibEmbedder

        return DlibEmbedder(settings.weights, settings.device)
    from facepipe.identity.facenet import FacenetEmbedder

    return FacenetEmbedder(
        settings.embedder, settings.weights, settings.device, settings.embed_mode, settings.threads
    )


class ServedGallery:
    """The gallery ``FACEPIPE_GALLERY`` names, as the functions read it: through its store
    (manifest checked); read errors become ``GalleryError`` naming it.

    A missing S3 object at the function's init is an empty gallery when its manifest is missing
    too: a fresh stack runs, naming everyone unknown, rather than fail every batch into the DLQ.
    A gallery object gone while its manifest stays was deleted, not yet written: that is an
    error at init, and so is any missing gallery on a reload (``missing_ok=False``), so that
    :class:`~facepipe.stages.recognize.GallerySource` keeps the gallery it has instead of
    swapping in an empty one. A missing local file is always an error (a typo, not a fresh
    stack)."""

    def __init__(self, settings: Settings, s3: object | None = None) -> None:
        from facepipe.app.stores import open_gallery_store

        self.uri = settings.gallery
        self.store: GalleryBackend = open_gallery_store(settings.gallery, settings, s3)

    def tag(self) -> str:
        return self.store.tag()

    def load(self, *, missing_ok: bool = True) -> Matcher:
        try:
            status = self.store.status()
            if status != "present":
                if not self.uri.startswith(("s3://", "lancedb+s3://")):
                    raise GalleryError(f"cannot read gallery {self.uri}: no such file")
                if not missing_ok or status == "gone":
                    raise GalleryError(
                        f"gallery {self.uri} is gone (deleted?): restore its last version, or "
                        "write an empty gallery with `facepipe gallery remove` to clear it"
                    )
                _log.warning("no gallery at %s yet: every face is unknown", self.uri)
            return self.store.load()
        except (ClientError, OSError) as exc:
            raise GalleryError(f"cannot read gallery {self.uri}: {exc}") from exc


def load_gallery(settings: Settings, s3: object | None = None) -> Matcher:
    """The gallery ``FACEPIPE_GALLERY`` names, or an empty one when unset."""
    if not settings.gallery:
        from facepipe.identity.gallery import Gallery

        return Gallery(index_min_size=settings.index_min_size, index_nprobe=settings.index_nprobe)
    return ServedGallery(settings, s3).load()


def make_ledger(settings: Settings) -> ResultLedger:
    """The result ledger: the DynamoDB table ``FACEPIPE_LEDGER_TABLE``, else one in memory."""
    if settings.ledger_table:
        return DynamoLedger(client("dynamodb", settings), settings.ledger_table)
    return MemoryLedger()


def result_sink(
    settings: Settings, sqs: object, payloads: S3PayloadStore, ledger: ResultLedger
) -> OncePerRequest:
    """The response queue behind the ledger: one final result per request_id, kept in the
    ledger as posted; a result too large for the queue or for a ledger item is claim-checked in
    ``payloads``, and S3-ingress results are also written to their ``output_key`` in the same
    bucket."""
    limit = min(settings.max_message_bytes, MAX_KEPT_RESULT_BYTES)
    sink: ResultSink = SqsResultSink(sqs, settings.response_queue_url, payloads, limit)
    sink = S3ResultCopies(sink, payloads.s3, settings.bucket, settings.output_prefix)
    return OncePerRequest(sink, ledger)


def detection_service(settings: Settings) -> DetectionService:
    """The detection function's service: MTCNN, the request queue, the ledger, the results."""
    _require(settings, "request_queue_url", "response_queue_url", "bucket")
    sqs = client("sqs", settings)
    s3 = LazyClient("s3", settings)  # only oversized tasks and S3-ingress results use S3
    payloads = S3PayloadStore(s3, settings.bucket, settings.payload_prefix)
    ledger = make_ledger(settings)
    dispatcher = SqsDispatcher(
        sqs,
        settings.request_queue_url,
        result_sink(settings, sqs, payloads, ledger),
        payloads,
        settings.max_message_bytes,
    )
    return DetectionService(Detection(settings, make_detector(settings)), dispatcher, ledger)


def result_reader(settings: Settings, detection: DetectionService) -> ResultReader | None:
    """What the Function URL's ``/results`` reads results by request_id from: the detection
    service's ledger, unless ``FACEPIPE_RESULTS_BY_ID`` is off (a public URL)."""
    if not settings.results_by_id or detection.ledger is None:
        return None
    return ResultReader(detection.ledger)


def ingest_service(settings: Settings) -> IngestService:
    """S3 ingress on top of the detection function's own service: the same detector, limits,
    dispatcher and ledger (one image, two handlers: the ingest function's module builds this)."""
    from facepipe.stages.ingest import IngestService

    detection = detection_service(settings)
    assert detection.ledger is not None  # detection_service always gives it one
    return IngestService(
        detection.detection,
        detection.dispatcher,
        S3ObjectReader(LazyClient("s3", settings)),
        ingest_prefix=settings.ingest_prefix,
        output_prefix=settings.output_prefix,
        max_object_bytes=settings.max_object_bytes,
        finished=detection.ledger.finished,
    )


def recognition_service(settings: Settings) -> RecognitionService:
    """The recognition function's service: the embedder, the gallery (reloaded when a new
    version is stored), the albums, the ledger and the response queue. Its modules are imported
    here: detection's cold start imports none of them."""
    from facepipe.app.stores import albums_location, open_albums
    from facepipe.stages.recognize import (
        GallerySource,
        Recognition,
        RecognitionService,
        check_gallery_embedder,
    )

    _require(settings, "response_queue_url", "bucket")
    s3 = client("s3", settings)
    embedder = make_embedder(settings)
    source = None
    if settings.gallery:
        source = GallerySource(
            ServedGallery(settings, s3),
            settings.gallery_refresh_seconds,
            check=lambda gallery: check_gallery_embedder(gallery, embedder),
        )
    recognition = Recognition(
        embedder,
        source.current() if source else load_gallery(settings),
        settings.effective_match_threshold,
        top_k=settings.top_k,
        source=source,
    )
    location = albums_location(settings)
    payloads = S3PayloadStore(s3, settings.bucket, settings.payload_prefix)
    return RecognitionService(
        recognition,
        result_sink(settings, client("sqs", settings), payloads, make_ledger(settings)),
        payloads,
        open_albums(location, s3 if "s3://" in location else None, settings),
    )


def recognition_stage(settings: Settings) -> QueueStage:
    """What the recognition function builds at init (weights, gallery, clients), for a worker."""
    if not settings.request_queue_url:
        raise ConfigError("the recognition worker needs FACEPIPE_REQUEST_QUEUE_URL")
    return QueueStage(
        "recognition", "recognition", settings.request_queue_url, recognition_service(settings)
    )


def detection_stage(settings: Settings) -> QueueStage:
    """What the ingest function builds at init, for a worker: the S3 ingest queue → detection →
    tasks on the request queue (or final results); metrics under the IngestFunction's
    ``service`` dimension."""
    if not settings.ingest_queue_url:
        raise ConfigError("the detection worker needs FACEPIPE_INGEST_QUEUE_URL (IngestQueue)")
    return QueueStage("detection", "ingest", settings.ingest_queue_url, ingest_service(settings))


def build_stages(settings: Settings) -> list[QueueStage]:
    """The stages ``FACEPIPE_STAGE`` names (``both``: detection and recognition)."""
    wanted = ("detection", "recognition") if settings.stage == "both" else (settings.stage,)
    builders = {"detection": detection_stage, "recognition": recognition_stage}
    return [builders[name](settings) for name in wanted]

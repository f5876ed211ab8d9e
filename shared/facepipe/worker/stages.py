"""What a worker does with a batch of queue messages: the stage interface and its stages.

A :class:`Stage` turns received messages into a :class:`StageWork` in one call (the shared,
expensive part: recognition embeds every crop of the batch in one forward pass), then the
consumer asks the work to :meth:`~StageWork.finish` each message on its own: posting its result
is the message's only side effect, and a message whose ``finish`` raises has failed (it stays on
the queue for redelivery, then the DLQ), exactly as a record of a Lambda partial batch response.
Keeping the two phases apart is what lets the consumer stop between two messages at shutdown.

The recognition Lambda drives :class:`RecognitionWork` too (``functions/recognition/app.py``),
so the function and the worker share one code path down to the per-record log line and metrics.
The detection stage consumes the S3 ingest queue with the ingest function's own service
(:class:`~facepipe.stages.ingest.IngestService`) and metrics (``record_ingest``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from facepipe.config import Settings
from facepipe.errors import ConfigError
from facepipe.messages import Result
from facepipe.observability import logger, record_ingest, record_results
from facepipe.stages.ingest import Ingested, IngestService, objects_in_message
from facepipe.stages.recognize import PreparedBatch, RecognitionService


@dataclass(frozen=True)
class Message:
    """One received SQS message, as the worker needs it."""

    message_id: str
    receipt_handle: str
    body: str
    request_id: str | None = None  # the `request_id` message attribute, when present
    attributes: Mapping[str, str] = field(default_factory=dict)  # system attributes

    @classmethod
    def from_sqs(cls, message: Mapping[str, Any]) -> Message:
        """A ``ReceiveMessage`` entry (``MessageId``, ``ReceiptHandle``, ``Body``, ...)."""
        attribute = message.get("MessageAttributes", {}).get("request_id", {})
        value = attribute.get("StringValue") if isinstance(attribute, Mapping) else None
        return cls(
            message_id=message["MessageId"],
            receipt_handle=message["ReceiptHandle"],
            body=message["Body"],
            request_id=value if isinstance(value, str) else None,
            attributes=dict(message.get("Attributes", {})),
        )


class StageWork(Protocol):
    """A prepared batch: finish each message, then record the batch."""

    def finish(self, message_id: str) -> None:
        """Do the message's side effect (post its result); raise when it failed."""

    def record(self, failed: int, elapsed_ms: float) -> None:
        """Metrics and one log line for the batch (called once, after every finish)."""


class Stage(Protocol):
    """One queue's processing: ``prepare(messages)`` → :class:`StageWork`.

    ``name`` is the ``--stage`` and the health endpoint's key; ``metrics_service`` the metrics'
    ``service`` dimension (the matching function's, so the dashboard counts both);
    ``queue_url`` is the queue the worker consumes for it.
    """

    name: str
    metrics_service: str
    queue_url: str

    def prepare(self, messages: Sequence[Message]) -> StageWork: ...


def finish_lambda_batch(
    event: Mapping[str, Any], context: Any, work: StageWork, processor: Any, start: float
) -> dict[str, Any]:
    """A stage's batch as a Lambda finishes it: Powertools' batch ``processor`` runs
    ``work.finish`` for each record and reports only the failed ones (ReportBatchItemFailures);
    then the batch is recorded, its time counted from ``start`` (``perf_counter``)."""
    from aws_lambda_powertools.utilities.batch import process_partial_response

    response = process_partial_response(
        event=dict(event),
        record_handler=lambda record: work.finish(record.message_id),
        processor=processor,
        context=context,
    )
    failed = len(response.get("batchItemFailures", []))
    work.record(failed, round((time.perf_counter() - start) * 1000, 3))
    return dict(response)


# --- recognition ------------------------------------------------------------------------------
class RecognitionWork:
    """A recognition batch after its forward pass (:class:`PreparedBatch`), finished record by
    record with the function's semantics: a record whose result cannot be posted fails alone."""

    def __init__(self, batch: PreparedBatch) -> None:
        self.batch = batch
        self.done: list[Result] = []

    def finish(self, message_id: str) -> None:
        try:
            result = self.batch.finish(message_id)
        except Exception as exc:
            logger.warning(
                "record failed",
                extra={
                    "request_id": self.batch.request_id(message_id),
                    "error": type(exc).__name__,
                    "detail": str(exc),
                },
            )
            raise
        if result is not None:  # None: a duplicate of a request already answered
            self.done.append(result)

    def record(self, failed: int, elapsed_ms: float) -> None:
        record_results(
            self.done,
            failed,
            elapsed_ms,
            duplicates=self.batch.duplicates,
            gallery_stale=self.batch.gallery_stale,
        )


class RecognitionStage:
    """The request queue → results, through the recognition function's own service object."""

    name = "recognition"
    metrics_service = "recognition"

    def __init__(self, service: RecognitionService, queue_url: str) -> None:
        self.service = service
        self.queue_url = queue_url

    def prepare(self, messages: Sequence[Message]) -> RecognitionWork:
        return RecognitionWork(
            self.service.prepare(
                {m.message_id: m.body for m in messages},
                {m.message_id: m.request_id for m in messages},
            )
        )


def recognition_stage(settings: Settings) -> RecognitionStage:
    """What the recognition function builds at init (weights, gallery, clients), for a worker."""
    from facepipe.services import recognition_service

    if not settings.request_queue_url:
        raise ConfigError("the recognition worker needs FACEPIPE_REQUEST_QUEUE_URL")
    return RecognitionStage(recognition_service(settings), settings.request_queue_url)


# --- detection (S3 ingest queue) ---------------------------------------------------------------
class IngestWork:
    """An ingest batch: each message's objects are detected at its finish (no shared batch step:
    MTCNN runs per photo), through the ingest function's own service."""

    def __init__(self, service: IngestService, messages: Sequence[Message]) -> None:
        self.service = service
        self.messages = {m.message_id: m for m in messages}
        self.done: list[Ingested] = []

    def finish(self, message_id: str) -> None:
        for obj in objects_in_message(self.messages[message_id].body):
            try:
                self.done.append(self.service.handle(obj))
            except Exception as exc:
                logger.warning(
                    "object failed",
                    extra={
                        "request_id": obj.request_id(),
                        "key": obj.key,
                        "error": type(exc).__name__,
                        "detail": str(exc),
                    },
                )
                raise

    def record(self, failed: int, elapsed_ms: float) -> None:
        record_ingest(self.done, failed, elapsed_ms)


class DetectionStage:
    """The S3 ingest queue → detection → tasks on the request queue (or final results)."""

    name = "detection"
    metrics_service = "ingest"  # the IngestFunction's POWERTOOLS_SERVICE_NAME

    def __init__(self, service: IngestService, queue_url: str) -> None:
        self.service = service
        self.queue_url = queue_url

    def prepare(self, messages: Sequence[Message]) -> IngestWork:
        return IngestWork(self.service, messages)


def detection_stage(settings: Settings) -> DetectionStage:
    """What the ingest function builds at init (``functions/detection/app.py``: the detection
    service, then S3 ingress on top of it), for a worker."""
    from facepipe.services import detection_service, ingest_service

    if not settings.ingest_queue_url:
        raise ConfigError("the detection worker needs FACEPIPE_INGEST_QUEUE_URL (IngestQueue)")
    return DetectionStage(
        ingest_service(settings, detection_service(settings)), settings.ingest_queue_url
    )


def build_stages(settings: Settings) -> list[Stage]:
    """The stages ``FACEPIPE_STAGE`` names (``both``: detection and recognition)."""
    wanted = ("detection", "recognition") if settings.stage == "both" else (settings.stage,)
    builders: dict[str, Callable[[Settings], Stage]] = {
        "detection": detection_stage,
        "recognition": recognition_stage,
    }
    return [builders[name](settings) for name in wanted]

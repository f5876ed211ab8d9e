"""One queue batch, as the Lambdas and the workers both drive it.

A stage's service turns the received :class:`Message` s into a :class:`Batch` in one call
(``prepare``: the shared, expensive part; recognition embeds every crop of the batch in one
forward pass), then the driver asks the batch to :meth:`~Batch.finish` each message on its own:
posting its result is the message's only side effect, and a message whose ``finish`` raises has
failed (it stays on the queue for redelivery, then the DLQ), exactly as a record of a Lambda
partial batch response. Keeping the two phases apart is what lets a worker stop between two
messages at shutdown.

The drivers: :func:`facepipe.aws.powertools.finish_lambda_batch` (Powertools' batch processor,
``functions/*/app.py``) and :class:`facepipe.worker.consumer.QueueConsumer`; both log a failed
message with :meth:`Batch.log_keys` and record :meth:`Batch.summary` as the same metrics.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from facepipe.messages import Result


@dataclass(frozen=True)
class Message:
    """One SQS message, read once from whichever shape delivered it."""

    message_id: str
    receipt_handle: str
    body: str
    request_id: str | None = None  # the `request_id` message attribute, when present
    attributes: Mapping[str, str] = field(default_factory=dict)  # system attributes

    @classmethod
    def from_receive(cls, message: Mapping[str, Any]) -> Message:
        """A ``ReceiveMessage`` entry (``MessageId``, ``ReceiptHandle``, ``Body``, ...)."""
        return cls(
            message_id=message["MessageId"],
            receipt_handle=message["ReceiptHandle"],
            body=message["Body"],
            request_id=_string_attribute(message.get("MessageAttributes"), "StringValue"),
            attributes=dict(message.get("Attributes", {})),
        )

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Message:
        """A record of a Lambda SQS event (``messageId``, ``body``, ``messageAttributes``...)."""
        return cls(
            message_id=record["messageId"],
            receipt_handle=record.get("receiptHandle", ""),
            body=record["body"],
            request_id=_string_attribute(record.get("messageAttributes"), "stringValue"),
            attributes=dict(record.get("attributes", {})),
        )


def _string_attribute(attributes: object, value_key: str) -> str | None:
    """The ``request_id`` message attribute's string value; ``None`` when absent or no string."""
    attribute = attributes.get("request_id") if isinstance(attributes, Mapping) else None
    value = attribute.get(value_key) if isinstance(attribute, Mapping) else None
    return value if isinstance(value, str) else None


@dataclass
class RecognitionSummary:
    """A recognition batch, for its metrics: the results posted, the duplicates dropped, and
    why the gallery matched against is an older one (``None`` when it is the stored one)."""

    results: list[Result] = field(default_factory=list)
    duplicates: int = 0
    gallery_stale: str | None = None


IngestStatus = Literal["queued", "no_face", "error", "duplicate", "skipped"]


@dataclass(frozen=True)
class Ingested:
    """What became of one uploaded object (for metrics and the log line)."""

    request_id: str
    key: str
    status: IngestStatus
    faces: int = 0
    error: str | None = None


@dataclass
class IngestSummary:
    """An ingest batch, for its metrics: every object it processed."""

    done: list[Ingested] = field(default_factory=list)


class Batch(Protocol):
    """A prepared batch: finish each message, then summarise it."""

    def finish(self, message_id: str) -> None:
        """Do the message's side effect (post its result); raise when it failed."""

    def log_keys(self, message_id: str) -> dict[str, Any]:
        """What names a failed message in its log line (its request_id, as far as readable)."""

    def summary(self) -> RecognitionSummary | IngestSummary:
        """What the batch did, once every message is finished."""


class BatchService(Protocol):
    """A stage's service: received messages → a :class:`Batch`."""

    def prepare(self, messages: Sequence[Message]) -> Batch: ...


@dataclass(frozen=True)
class QueueStage:
    """One queue's processing, for a worker: ``name`` is the ``--stage`` and the health
    endpoint's key; ``metrics_service`` the metrics' ``service`` dimension (the matching
    function's, so the dashboard counts both); ``queue_url`` the queue it consumes."""

    name: str
    metrics_service: str
    queue_url: str
    service: BatchService

    def prepare(self, messages: Sequence[Message]) -> Batch:
        return self.service.prepare(messages)

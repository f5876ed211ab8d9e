"""Lambda's SQS event source mapping, locally: a thread that polls a queue and invokes a function.

What the mapping does in AWS, and so here:

* long-polls the queue (``ReceiveMessage`` with up to 10 messages a call, every system and
  message attribute) and gathers a batch until it holds ``batch_size`` messages, or
  ``window_seconds`` (``MaximumBatchingWindowInSeconds``) have passed since its first message,
  or the next message would take the event over 6 MB (that message starts the next batch);
* invokes the function with the batch as an SQS event
  (:func:`~facepipe.local.events.sqs_event`) carrying the real message ids, receipt handles,
  system attributes (``ApproximateReceiveCount``, ``SentTimestamp``, ...) and message
  attributes;
* with ``ReportBatchItemFailures``: deletes every record the response's ``batchItemFailures``
  does not list; when the function fails (unhandled error, init failure) or its response is
  malformed (an ``itemIdentifier`` missing, empty or not in the batch), deletes none, so the whole
  batch is retried. Without it, a success deletes the whole batch.

Records that are not deleted are left alone: they come back when the queue's visibility timeout
expires, and the queue's ``RedrivePolicy`` moves them to the dead-letter queue after
``maxReceiveCount`` receives (SQS does that on receive; moto too).

Not emulated: concurrent batches (one poller, one batch at a time; ``ScalingConfig`` is
ignored) and the mapping's own back-off after errors.

Example:
    >>> source = SqsEventSource(aws.sqs, url, arn, invoker, batch_size=10, window_seconds=1)
    >>> source.start()  # doctest: +SKIP
    >>> ...
    >>> source.stop()
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from facepipe.local.events import sqs_event
from facepipe.local.invokers import Invoker, error_payload
from facepipe.local.rie import function_error

MAX_PAYLOAD_BYTES = 6_291_456  # Lambda's synchronous invocation payload limit
MAX_RECEIVE = 10  # SQS ReceiveMessage's MaxNumberOfMessages
_log = logging.getLogger(__name__)


@dataclass
class BatchOutcome:
    """What became of one batch: which records were deleted and which were left to come back."""

    message_ids: list[str]
    receive_counts: dict[str, int]
    deleted: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    error: str | None = None  # function error or malformed response: the whole batch failed


def lambda_message_attributes(attributes: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """SQS API message attributes (``StringValue``/``BinaryValue``/``DataType``) → the shape a
    Lambda SQS record carries (``stringValue``, ``binaryValue`` in base64, ``dataType``, ...)."""
    shaped: dict[str, Any] = {}
    for name, value in attributes.items():
        record: dict[str, Any] = {}
        if "StringValue" in value:
            record["stringValue"] = value["StringValue"]
        if "BinaryValue" in value:
            record["binaryValue"] = base64.b64encode(value["BinaryValue"]).decode("ascii")
        record.update(stringListValues=[], binaryListValues=[], dataType=value["DataType"])
        shaped[name] = record
    return shaped


def reported_failures(payload: Any, message_ids: Sequence[str]) -> list[str] | None:
    """The message ids a ``ReportBatchItemFailures`` response lists as failed, or None when the
    response is malformed and the whole batch counts as failed (Lambda's rules: no response, an
    empty one or an empty/absent list is a full success)."""
    if payload is None:
        return []
    if not isinstance(payload, dict):
        return None
    failures = payload.get("batchItemFailures")
    if failures is None:
        return []
    if not isinstance(failures, list):
        return None
    known, failed = set(message_ids), []
    for item in failures:
        identifier = item.get("itemIdentifier") if isinstance(item, dict) else None
        if not isinstance(identifier, str) or identifier not in known:
            return None
        failed.append(identifier)
    return failed


def _size(message: Mapping[str, Any]) -> int:
    """About what the message adds to the event, in bytes."""
    return len(json.dumps(message, default=str).encode())


class SqsEventSource:
    """Polls ``queue_url`` on a thread and invokes ``invoker`` with batches, as Lambda's SQS
    event source mapping does.

    Args:
        sqs: a boto3 SQS client.
        queue_url / queue_arn: the queue (the ARN goes in each record's ``eventSourceARN``).
        invoker: the function (:class:`~facepipe.local.invokers.Invoker`).
        batch_size: ``BatchSize``, the most records per invocation.
        window_seconds: ``MaximumBatchingWindowInSeconds``.
        report_batch_item_failures: ``FunctionResponseTypes: [ReportBatchItemFailures]``.
        max_payload_bytes: the most bytes of messages per invocation (Lambda: 6 MB).
        poll_wait_seconds: the longest long-poll; :meth:`stop` waits at most about this long
            (plus an invocation in progress).

    ``batches``, ``records_ok`` (deleted), ``records_failed`` (left on the queue) and
    ``function_errors`` count what happened; ``outcomes`` holds the last 1000 batches.
    """

    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        queue_arn: str,
        invoker: Invoker,
        batch_size: int = 10,
        window_seconds: float = 0.0,
        *,
        report_batch_item_failures: bool = True,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
        poll_wait_seconds: int = 1,
        name: str | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.sqs = sqs
        self.queue_url = queue_url
        self.queue_arn = queue_arn
        self.invoker = invoker
        self.batch_size = batch_size
        self.window_seconds = float(window_seconds)
        self.report_batch_item_failures = report_batch_item_failures
        self.max_payload_bytes = max_payload_bytes
        self.poll_wait_seconds = poll_wait_seconds
        self.name = name or f"{queue_arn.rsplit(':', 1)[-1]} → {invoker.name}"
        self.batches = 0
        self.records_ok = 0
        self.records_failed = 0
        self.function_errors = 0
        self.outcomes: deque[BatchOutcome] = deque(maxlen=1000)
        self._carry: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="sqs-event-source", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop polling; waits up to ``timeout`` s for a batch in progress to finish. Messages
        received but not yet invoked are left alone (they come back after the visibility
        timeout, as when a mapping is disabled)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            if self._thread.is_alive():
                _log.warning("%s: a batch was still running at shutdown", self.name)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                batch = self._gather()
                if batch and not self._stop.is_set():
                    self.process(batch)
            except Exception:  # never let one bad poll end the mapping
                _log.exception("%s: polling failed; retrying in 1 s", self.name)
                self._stop.wait(1)

    # --- one batch ---------------------------------------------------------------------------
    def _receive(self, count: int, wait: int) -> list[dict[str, Any]]:
        response = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=min(MAX_RECEIVE, count),
            WaitTimeSeconds=wait,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        return list(response.get("Messages", []))

    def _gather(self) -> list[dict[str, Any]]:
        """Receive until the batch is full, the window since its first message has passed, or
        the payload limit is reached (messages beyond it start the next batch)."""
        batch: list[dict[str, Any]] = []
        carried, self._carry = self._carry, []
        self._admit(batch, carried)
        first = time.monotonic() if batch else None
        while not self._carry and not self._stop.is_set() and len(batch) < self.batch_size:
            if first is None:
                wait = self.poll_wait_seconds
            else:
                remaining = self.window_seconds - (time.monotonic() - first)
                if remaining <= 0:
                    break
                # WaitTimeSeconds is whole seconds: the window's last fraction is short polls.
                wait = min(self.poll_wait_seconds, int(remaining))
            received = self._receive(self.batch_size - len(batch), wait)
            self._admit(batch, received)
            if received and first is None:
                first = time.monotonic()
            elif not received and wait == 0 and first is not None:
                self._stop.wait(0.05)
        return batch

    def _admit(self, batch: list[dict[str, Any]], messages: Sequence[dict[str, Any]]) -> None:
        """Add ``messages`` to ``batch`` while they fit; the rest wait for the next batch."""
        held = {m["MessageId"]: index for index, m in enumerate(batch)}
        size = sum(_size(m) for m in batch)
        for message in messages:
            index = held.get(message["MessageId"])
            if index is not None:
                # Back while its batch is still gathering (a visibility timeout shorter than the
                # window): this receive replaces the earlier one, whose receipt handle is stale.
                size += _size(message) - _size(batch[index])
                batch[index] = message
                continue
            message_size = _size(message)
            fits = len(batch) < self.batch_size and size + message_size <= self.max_payload_bytes
            if not self._carry and (fits or not batch):
                held[message["MessageId"]] = len(batch)
                batch.append(message)
                size += message_size
            else:
                self._carry.append(message)

    def process(self, messages: Sequence[Mapping[str, Any]]) -> BatchOutcome:
        """Invoke the function with ``messages`` (as received) and delete what succeeded."""
        ids = [m["MessageId"] for m in messages]
        event = sqs_event(
            [m["Body"] for m in messages],
            queue_arn=self.queue_arn,
            message_ids=ids,
            receipt_handles=[m["ReceiptHandle"] for m in messages],
            attributes=[m.get("Attributes", {}) for m in messages],
            message_attributes=[
                lambda_message_attributes(m.get("MessageAttributes", {})) for m in messages
            ],
        )
        outcome = BatchOutcome(
            message_ids=ids,
            receive_counts={
                m["MessageId"]: int(m.get("Attributes", {}).get("ApproximateReceiveCount", 0))
                for m in messages
            },
        )
        try:
            payload = self.invoker.invoke(event)
        except Exception as exc:  # an invoker never should; the mapping survives it anyway
            payload = error_payload(exc)
        error = function_error(payload)
        failed = list(ids)
        if error is not None:
            outcome.error = error
            self.function_errors += 1
        elif not self.report_batch_item_failures:
            failed = []
        else:
            reported = reported_failures(payload, ids)
            if reported is None:
                outcome.error = f"malformed batchItemFailures response: {str(payload)[:200]}"
            else:
                failed = reported
        outcome.failed = failed
        to_delete = [m for m in messages if m["MessageId"] not in set(failed)]
        outcome.deleted = self._delete(to_delete)
        self.batches += 1
        self.records_ok += len(outcome.deleted)
        self.records_failed += len(failed)
        self.outcomes.append(outcome)
        note = f"; whole batch failed: {outcome.error}" if outcome.error else ""
        _log.info(
            "%s: batch of %d: %d deleted, %d left for retry%s",
            self.name,
            len(ids),
            len(outcome.deleted),
            len(failed),
            note,
        )
        return outcome

    def _delete(self, messages: Sequence[Mapping[str, Any]]) -> list[str]:
        deleted: list[str] = []
        for start in range(0, len(messages), MAX_RECEIVE):
            chunk = messages[start : start + MAX_RECEIVE]
            response = self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)
                ],
            )
            for entry in response.get("Successful", []):
                deleted.append(chunk[int(entry["Id"])]["MessageId"])
            for entry in response.get("Failed", []):
                _log.warning(
                    "%s: could not delete %s: %s",
                    self.name,
                    chunk[int(entry["Id"])]["MessageId"],
                    entry.get("Message", entry.get("Code")),
                )
        return deleted

"""One SQS queue consumed outside Lambda, with the event source mapping's semantics.

:class:`QueueConsumer` long-polls a queue, gathers a batch, hands it to its
:class:`~facepipe.stages.batch.QueueStage`, deletes the messages that finished and leaves the ones
that failed (they come back after their visibility timeout and, after ``maxReceiveCount``
receives, SQS moves them to the dead-letter queue) — what Lambda's mapping does with
``ReportBatchItemFailures``. Beyond Lambda, it has to do itself what Lambda's runtime did:

* **visibility**: messages are received with ``visibility_timeout`` and renewed every third of
  it while their batch runs (:meth:`extend_visibility`, called by the worker's ticker), so a long
  batch keeps them and a dead worker hands them back after one timeout;
* **shutdown**: :meth:`request_stop` lets the batch in flight finish; :meth:`abandon` (the grace
  period is over) releases every message not finished with ``ChangeMessageVisibility`` 0. Each
  message is finished or released under one lock, never both: nothing is lost or answered twice.

Example:
    >>> consumer = QueueConsumer(sqs, stage, ConsumerOptions(wait_seconds=20))  # doctest: +SKIP
    >>> threading.Thread(target=consumer.run).start()  # until consumer.request_stop()
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from facepipe.aws.powertools import METRICS_LOCK, finish_message, flush_metrics, record_batch
from facepipe.aws.sqs import longest_wait
from facepipe.config import Settings
from facepipe.stages.batch import Message, QueueStage
from facepipe.stages.ledger import DEFAULT_LEASE_S

MAX_RECEIVE = 10  # SQS ReceiveMessage's MaxNumberOfMessages (and the batch APIs' entries)
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConsumerOptions:
    """How a consumer polls and batches (``FACEPIPE_WORKER_*``)."""

    wait_seconds: int = 20
    batch_size: int = 10
    window_seconds: float = 0.0
    visibility_timeout: int = 300

    @classmethod
    def from_settings(cls, settings: Settings) -> ConsumerOptions:
        if settings.worker_visibility_timeout <= DEFAULT_LEASE_S:
            _log.warning(
                "FACEPIPE_WORKER_VISIBILITY_TIMEOUT %d s is not above the result ledger's %d s "
                "lease: a message held by a worker that died mid-post comes back while the "
                "lease holds, fails as busy and spends a receive on its way to the DLQ",
                settings.worker_visibility_timeout,
                DEFAULT_LEASE_S,
            )
        return cls(
            wait_seconds=settings.worker_wait_seconds,
            batch_size=settings.worker_batch_size,
            window_seconds=settings.worker_batch_window_seconds,
            visibility_timeout=settings.worker_visibility_timeout,
        )


@dataclass
class Held:
    """A received message the consumer is responsible for until it is deleted, released or
    (failed) left to come back."""

    message: Message
    renewed_at: float  # monotonic time its visibility was last set
    finished: bool = False


class QueueConsumer:
    """Consumes ``stage.queue_url`` on the calling thread (:meth:`run`) until stopped.

    ``batches``, ``records_ok`` (deleted), ``records_failed`` (left for redelivery),
    ``released`` (handed back at shutdown) and ``extended`` (visibility renewals) count what
    happened; :meth:`snapshot` reports them for the health endpoint and the heartbeat.
    """

    def __init__(
        self,
        sqs: Any,
        stage: QueueStage,
        options: ConsumerOptions | None = None,
        *,
        clock: Any = time.monotonic,
    ) -> None:
        self.sqs = sqs
        self._longest_wait = longest_wait(sqs)
        self.stage = stage
        self.options = options or ConsumerOptions()
        self.clock = clock
        self.state = "starting"  # polling | processing | stopping | stopped | failed
        self.batches = self.records_ok = self.records_failed = 0
        self.released = self.extended = 0
        self.last_batch_at: float | None = None  # wall-clock time the last batch ended
        self.last_progress = clock()
        self._held: dict[str, Held] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._abandoned = False

    # --- the loop ------------------------------------------------------------------------------
    def run(self) -> None:
        """Poll, gather and process batches until :meth:`request_stop`; a failed poll is logged
        and retried after a second, so one network error does not end the worker."""
        try:
            while not self._stopping.is_set():
                try:
                    batch = self._gather()
                    if batch and self._begin(batch):
                        self._process(batch)
                except Exception:
                    _log.exception("%s: polling failed; retrying in 1 s", self.stage.name)
                    self._stopping.wait(1)
        except BaseException:
            self.state = "failed"
            raise
        finally:
            self.abandon()  # stopped while gathering: those messages go back at once
            if self.state != "failed":
                self.state = "stopped"

    def request_stop(self) -> None:
        """Stop after the batch in flight. Messages gathered for a batch that has not started
        are released now, and so is anything a receive still open returns."""
        with self._lock:
            self._stopping.set()
            processing = self.state == "processing"
            self.state = "stopping"
        if not processing:
            self.abandon()

    def abandon(self) -> None:
        """Release (visibility 0) every held message not finished, delete the finished ones,
        and refuse any later finish or receive: the batch in flight is over for this worker."""
        with self._lock:
            self._abandoned = True
            self._settle(list(self._held))

    # --- receiving -----------------------------------------------------------------------------
    def _receive(self, count: int, wait: int) -> list[Message]:
        response = self.sqs.receive_message(
            QueueUrl=self.stage.queue_url,
            MaxNumberOfMessages=min(MAX_RECEIVE, count),
            # a poll longer than half the client's read timeout would end in ReadTimeoutError
            WaitTimeSeconds=min(wait, self._longest_wait),
            VisibilityTimeout=self.options.visibility_timeout,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["All"],
        )
        messages = [Message.from_receive(m) for m in response.get("Messages", [])]
        now = self.clock()
        self.last_progress = now
        with self._lock:
            for message in messages:
                self._held[message.message_id] = Held(message, renewed_at=now)
            if self._abandoned:  # stopped while this receive was open
                self._settle([m.message_id for m in messages])
                return []
        return messages

    def _gather(self) -> list[Message]:
        """Receive until the batch is full or ``window_seconds`` have passed since its first
        message (no window: the first receive that returns anything is the batch)."""
        if self.state == "starting":
            self.state = "polling"
        batch: dict[str, Message] = {}
        first: float | None = None
        while len(batch) < self.options.batch_size and not self._stopping.is_set():
            if first is None:
                wait = self.options.wait_seconds
            else:
                remaining = self.options.window_seconds - (self.clock() - first)
                if remaining <= 0:
                    break
                wait = min(self.options.wait_seconds, int(remaining))  # whole seconds
            received = self._receive(self.options.batch_size - len(batch), wait)
            for message in received:  # a redelivery replaces the copy with the stale handle
                batch[message.message_id] = message
            if received and first is None:
                first = self.clock()
            if first is not None and self.options.window_seconds <= 0:
                break
            if not received and wait == 0:
                self._stopping.wait(0.05)
        return list(batch.values())

    def _begin(self, batch: Sequence[Message]) -> bool:
        """Mark the batch as processing, unless the consumer was stopped meanwhile (then its
        messages were already released)."""
        with self._lock:
            if self._abandoned or self._stopping.is_set():
                return False
            self.state = "processing"
            return True

    # --- processing ----------------------------------------------------------------------------
    def _process(self, batch: Sequence[Message]) -> None:
        start = time.perf_counter()
        self.last_progress = self.clock()
        ids = [m.message_id for m in batch]
        try:
            work = self.stage.prepare(batch)
        except Exception:  # as a function error: the whole batch comes back after its timeout
            _log.exception("%s: batch of %d failed", self.stage.name, len(batch))
            with self._lock:
                self._forget(ids)
            self._batch_done(ok=0, failed=len(ids))
            return
        failed: list[str] = []
        ok = 0
        for message_id in ids:
            with self._lock:  # a message is finished or released, never both
                if self._abandoned or message_id not in self._held:
                    break
                try:
                    finish_message(work, message_id)
                except Exception:
                    failed.append(message_id)
                else:
                    self._held[message_id].finished = True
                    ok += 1
            self.last_progress = self.clock()
        with self._lock:
            self._settle([i for i in ids if i not in failed])
            self._forget(failed)
        elapsed_ms = round((time.perf_counter() - start) * 1000, 3)
        if ok or failed:  # a batch released whole at shutdown did nothing worth a metric
            with METRICS_LOCK:
                record_batch(work, len(failed), elapsed_ms)
                flush_metrics(self.stage.metrics_service)
        self._batch_done(ok=ok, failed=len(failed))

    def _batch_done(self, *, ok: int, failed: int) -> None:
        self.batches += 1
        self.records_ok += ok
        self.records_failed += failed
        self.last_batch_at = time.time()
        self.last_progress = self.clock()
        with self._lock:
            if self.state == "processing":
                self.state = "polling"

    def _forget(self, message_ids: Sequence[str]) -> None:
        """(Lock held.) Failed messages are left alone: they come back when their visibility
        timeout ends, and SQS dead-letters them after ``maxReceiveCount`` receives."""
        for message_id in message_ids:
            self._held.pop(message_id, None)

    # --- visibility ----------------------------------------------------------------------------
    def _settle(self, message_ids: Sequence[str]) -> None:
        """(Lock held.) Delete the finished ones, release the rest; forget them all."""
        held = [self._held.pop(i) for i in message_ids if i in self._held]
        done = [h.message for h in held if h.finished]
        back = [h.message for h in held if not h.finished]
        self._batch_call("delete_message_batch", done, {})
        self._batch_call("change_message_visibility_batch", back, {"VisibilityTimeout": 0})
        if back:
            self.released += len(back)
            _log.info("%s: released %d messages (visibility 0)", self.stage.name, len(back))

    def extend_visibility(self) -> None:
        """Renew the visibility of every held, unfinished message whose last renewal is a third
        of the timeout old (the worker's ticker calls this about every second)."""
        due_after = self.options.visibility_timeout / 3
        with self._lock:
            now = self.clock()
            due = [
                h for h in self._held.values() if not h.finished and now - h.renewed_at >= due_after
            ]
            if not due:
                return
            self._batch_call(
                "change_message_visibility_batch",
                [h.message for h in due],
                {"VisibilityTimeout": self.options.visibility_timeout},
            )
            for held in due:
                held.renewed_at = now
            self.extended += len(due)

    def _batch_call(
        self, operation: str, messages: Sequence[Message], extra: dict[str, Any]
    ) -> None:
        """``DeleteMessageBatch`` / ``ChangeMessageVisibilityBatch`` in chunks of 10; failures
        are logged, not raised: a message not deleted comes back (the ledger answers it once),
        one not released comes back after its timeout."""
        call = getattr(self.sqs, operation)
        for start in range(0, len(messages), MAX_RECEIVE):
            chunk = messages[start : start + MAX_RECEIVE]
            entries = [
                {"Id": str(i), "ReceiptHandle": m.receipt_handle, **extra}
                for i, m in enumerate(chunk)
            ]
            try:
                response = call(QueueUrl=self.stage.queue_url, Entries=entries)
            except Exception:
                _log.warning("%s: %s failed", self.stage.name, operation, exc_info=True)
                continue
            for entry in response.get("Failed", []):
                _log.warning(
                    "%s: %s failed for %s: %s",
                    self.stage.name,
                    operation,
                    chunk[int(entry["Id"])].message_id,
                    entry.get("Message", entry.get("Code")),
                )

    # --- reporting -----------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """What the health endpoint and the heartbeat report for this stage."""
        with self._lock:
            in_flight = len(self._held)
        return {
            "stage": self.stage.name,
            "state": self.state,
            "batches": self.batches,
            "records_ok": self.records_ok,
            "records_failed": self.records_failed,
            "released": self.released,
            "visibility_extended": self.extended,
            "in_flight": in_flight,
            "last_batch_at": self.last_batch_at,
            "seconds_since_progress": round(self.clock() - self.last_progress, 3),
        }

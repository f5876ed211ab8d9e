"""Taking this client's results off the shared response queue, and only those.

Every client of a stack reads the same response queue, so a poller must not swallow results
that belong to someone else. :class:`ResultPoller` long-polls the queue, keeps and **deletes** the
results of the request_ids it waits for, and gives every other message straight back
(``ChangeMessageVisibility`` to 0) so that its owner receives it. A second copy of a result it
already has (SQS delivers at least once) is deleted and counted, not reported twice. It stops when
every wanted id has its result or the timeout passes, and reports the ids still missing.

A long poll ends well before the SQS client stops waiting for its answer (half its read timeout at
most): a receive the client gives up on may still take messages, which then stay invisible for the
queue's visibility timeout, and a result would be missed though it is on the queue. A receive that
fails all the same with a transient error (a timeout, a dropped connection, a 5xx or throttling
after botocore's own retries) is tried again after a short pause; :data:`RECEIVE_TRIES` failures
in a row, or any other error, end the poll with :class:`ReceiveFailed`.

Example:
    >>> poller = ResultPoller(sqs, queue_url)  # doctest: +SKIP
    >>> wanted = {"demo.alice", "demo.bob"}
    >>> report = poller.poll(wanted, timeout=60, on_result=print)  # doctest: +SKIP
    >>> report.missing  # doctest: +SKIP
    []
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError
from pydantic import ValidationError

from facepipe.aws.sqs import longest_wait
from facepipe.errors import FacepipeError
from facepipe.messages import ErrorInfo, Result

MAX_MESSAGES = 10  # SQS's most messages per receive
IDLE_BACKOFF = (0.1, 2.0)  # pause after a receive brought only others' results: first, most
RECEIVE_TRIES = 4  # receives failing in a row with a transient error before the poll gives up
RECEIVE_BACKOFF = (0.5, 4.0)  # pause after a failed receive: first, most
_THROTTLED = frozenset({"Throttling", "ThrottlingException", "RequestThrottled"})
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Received:
    """One of our results: the parsed model and the message body as the stack posted it."""

    result: Result
    body: str


@dataclass
class PollReport:
    """What a poll got: ``results`` by request_id in arrival order, the ``missing`` ids (in the
    order they were asked for), ``duplicates`` deleted, others' messages ``released``, and the
    ``receives`` it took ``via`` the response ``queue`` (``ReceiveMessage`` calls) or the
    Function ``url`` (``/results`` requests, :mod:`facepipe.client.url_results`)."""

    results: dict[str, Received] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    duplicates: int = 0
    released: int = 0
    receives: int = 0
    via: str = "queue"

    def counts(self) -> dict[str, int]:
        counts = {"ok": 0, "no_face": 0, "error": 0}
        for received in self.results.values():
            counts[received.result.status] += 1
        return counts

    def line(self) -> str:
        counts = self.counts()
        return (
            f"results {len(self.results)} (ok {counts['ok']}, no_face {counts['no_face']}, "
            f"error {counts['error']}), missing {len(self.missing)}, "
            f"duplicates {self.duplicates}; {self.receives} "
            + ("requests to the Function URL" if self.via == "url" else "receives from the queue")
        )


class ReceiveFailed(FacepipeError):
    """The response queue cannot be read: an error that is not transient, or one that is but
    kept happening."""

    code = "receive_failed"


def transient(exc: BaseException) -> bool:
    """Whether an SQS call's error may pass if the call is made again: connection errors and
    timeouts, 5xx answers and throttling (what is left after botocore's own retries)."""
    if isinstance(exc, BotoConnectionError | HTTPClientError):
        return True
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return status >= 500 or exc.response.get("Error", {}).get("Code") in _THROTTLED
    return False


def message_request_id(message: dict[str, Any]) -> str | None:
    """The ``request_id`` message attribute, else the body's ``request_id``, else None."""
    attribute = message.get("MessageAttributes", {}).get("request_id", {})
    if attribute.get("StringValue"):
        return str(attribute["StringValue"])
    try:
        body = json.loads(message.get("Body", ""))
    except ValueError:
        return None
    value = body.get("request_id") if isinstance(body, dict) else None
    return value if isinstance(value, str) and value else None


def whole_result(
    request_id: str, body: str, fetch: Callable[[str], bytes] | None = None
) -> Received:
    """The result a body holds (:func:`parse_result`); one that names its whole copy in S3
    (``payload_uri``: too large for the queue) is read back with ``fetch``, when given."""
    result = parse_result(request_id, body)
    if result.payload_uri and fetch is not None:
        body = fetch(result.payload_uri).decode()
        result = parse_result(request_id, body)
    return Received(result, body)


def parse_result(request_id: str, body: str) -> Result:
    """The message body as a :class:`Result`; one that is not becomes an ``error`` result, so the
    id is answered rather than waited for until the timeout."""
    try:
        return Result.model_validate_json(body)
    except ValidationError:
        return Result(
            request_id=request_id,
            status="error",
            error=ErrorInfo(
                code="invalid_result", message="the result message does not follow the schema"
            ),
        )


class ResultPoller:
    """Receives this client's results from ``queue_url`` (see the module docstring).

    Args:
        sqs: a boto3 SQS client.
        queue_url: the response queue (stack output ``ResponseQueueUrl``).
        fetch: reads an ``s3://`` URI: a result too large for the queue arrives as a message
            naming its object (``payload_uri``), read back with it (without ``fetch`` the short
            message is the result).
        clock / sleep: time sources (tests may pass their own).
    """

    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        *,
        fetch: Callable[[str], bytes] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.fetch = fetch
        self.clock = clock
        self.sleep = sleep
        self.max_wait = longest_wait(sqs)

    def poll(
        self,
        wanted: Iterable[str],
        *,
        timeout: float,
        on_result: Callable[[Received], None] | None = None,
    ) -> PollReport:
        """Receive until every id in ``wanted`` has a result or ``timeout`` seconds pass.

        ``on_result`` is called with each new result as it arrives (completion order).
        """
        order = list(dict.fromkeys(wanted))
        waiting = set(order)
        report = PollReport()
        deadline = self.clock() + timeout
        idle = 0.0
        while waiting:
            remaining = deadline - self.clock()
            if remaining <= 0:
                break
            wait = int(min(self.max_wait, remaining))
            last = remaining < 1  # under a second left: wait it out, then one last short receive
            if last:
                self.sleep(remaining)
            messages = self._receive(wait, report)
            mine, others = [], []
            for message in messages:
                request_id = message_request_id(message)
                if request_id in waiting:
                    try:
                        received = whole_result(request_id, message["Body"], self.fetch)
                    except Exception as exc:  # its object could not be read: the message again
                        logger.warning("cannot read result %s from S3: %s", request_id, exc)
                        others.append(message)
                        continue
                    waiting.discard(request_id)
                    report.results[request_id] = received
                    mine.append(message)
                    if on_result is not None:
                        on_result(received)
                elif request_id is not None and request_id in report.results:
                    report.duplicates += 1
                    mine.append(message)
                else:
                    others.append(message)
            self._delete(mine)
            report.released += self._release(others)
            if last:
                break
            if others and not mine:
                # Only others' results are visible: give their owners a moment instead of
                # receiving the same messages again at once.
                idle = min(IDLE_BACKOFF[1], idle * 2 or IDLE_BACKOFF[0])
                self.sleep(max(0.0, min(idle, deadline - self.clock())))
            else:
                idle = 0.0
        report.missing = [request_id for request_id in order if request_id in waiting]
        return report

    def _receive(self, wait: int, report: PollReport) -> list[dict[str, Any]]:
        """One receive, tried again after a short pause while it fails with a transient error
        (at most :data:`RECEIVE_TRIES` times in a row); otherwise :class:`ReceiveFailed`."""
        failures = 0
        while True:
            report.receives += 1
            try:
                answer = self.sqs.receive_message(
                    QueueUrl=self.queue_url,
                    MaxNumberOfMessages=MAX_MESSAGES,
                    WaitTimeSeconds=wait,
                    MessageAttributeNames=["All"],
                )
            except Exception as exc:
                failures += 1
                if not transient(exc) or failures >= RECEIVE_TRIES:
                    tries = f" ({failures} tries in a row)" if failures > 1 else ""
                    raise ReceiveFailed(
                        f"cannot receive results from {self.queue_url}: {exc}{tries}"
                    ) from exc
                pause = min(RECEIVE_BACKOFF[1], RECEIVE_BACKOFF[0] * 2 ** (failures - 1))
                logger.warning("receiving results failed (%s); again in %.1f s", exc, pause)
                self.sleep(pause)
            else:
                messages: list[dict[str, Any]] = answer.get("Messages", [])
                return messages

    def _delete(self, messages: list[dict[str, Any]]) -> None:
        if not messages:
            return
        try:
            answer = self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                    for i, m in enumerate(messages)
                ],
            )
        except Exception as exc:
            if not transient(exc):
                raise
            # they come back after the visibility timeout, and count as duplicates then
            logger.warning("could not delete %d result messages: %s", len(messages), exc)
            return
        for failure in answer.get("Failed", []):  # it comes back later and counts as a duplicate
            logger.warning("could not delete a result message: %s", failure.get("Message", ""))

    def _release(self, messages: list[dict[str, Any]]) -> int:
        """Make others' messages visible again at once, for their owners."""
        if not messages:
            return 0
        try:
            self.sqs.change_message_visibility_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
                    for i, m in enumerate(messages)
                ],
            )
        except Exception as exc:
            if not transient(exc):
                raise
            # their owners get them after the visibility timeout instead of at once
            logger.warning("could not release %d others' messages: %s", len(messages), exc)
            return 0
        return len(messages)

"""SQS: sending tasks (with an S3 claim check when too large) and results."""

from __future__ import annotations

import uuid
from typing import Any

from facepipe.aws.s3 import S3PayloadStore
from facepipe.messages import FacePayload, FaceTask, Result
from facepipe.stages.ledger import ResultSink

MAX_WAIT_SECONDS = 20  # SQS's longest long poll


def longest_wait(sqs: Any) -> int:
    """The longest long poll (whole seconds) for ``sqs``: :data:`MAX_WAIT_SECONDS`, or half the
    client's read timeout when that is shorter (facepipe's bounded clients wait 10 s)."""
    read_timeout = getattr(
        getattr(getattr(sqs, "meta", None), "config", None), "read_timeout", None
    )
    if not isinstance(read_timeout, int | float):
        return MAX_WAIT_SECONDS
    return max(1, min(MAX_WAIT_SECONDS, int(read_timeout / 2)))


# SQS counts message attributes toward its size limit: the request_id attribute (its name, type
# and a value of at most 128 characters) stays well inside this allowance.
ATTRIBUTES_ALLOWANCE = 1024


def _attributes(request_id: str) -> dict[str, Any]:
    return {"request_id": {"DataType": "String", "StringValue": request_id}}


def fits(body: str, max_message_bytes: int) -> bool:
    """Whether a message body and its attributes fit the queue's size limit."""
    return len(body.encode()) + ATTRIBUTES_ALLOWANCE <= max_message_bytes


class SqsResultSink:
    """Posts final results (one per request_id) to the response queue, except those whose
    request asked for them by request_id only (``reply`` ``by_id``): those are only made ready
    for the ledger, which keeps the form returned (:class:`~facepipe.stages.ledger.OncePerRequest`).

    A result over ``max_message_bytes`` (hundreds of faces with many matches each) is final all
    the same: the whole result goes to S3 under the request's claim-check prefix, and the
    message carries it without ``faces``/``result``/``album``, naming the object in
    ``payload_uri`` (``facepipe poll`` reads it back). Without a payload store it would fail
    every retry: such a sink refuses it with a clear error instead.
    """

    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        payloads: S3PayloadStore | None = None,
        max_message_bytes: int = 262_144,
    ) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.payloads = payloads
        self.max_message_bytes = max_message_bytes
        self.claim_checked = 0

    def send_result(self, result: Result) -> Result:
        """Post ``result`` (unless it is wanted by request_id only); returns it as posted (the
        claim-checked form when too large)."""
        posted, body = result, result.to_json()
        if not fits(body, self.max_message_bytes):
            posted = self._claim_check(result, body)
            body = posted.to_json()
        if result.reply == "by_id":
            return posted
        self.sqs.send_message(
            QueueUrl=self.queue_url,
            MessageBody=body,
            MessageAttributes=_attributes(result.request_id),
        )
        return posted

    def _claim_check(self, result: Result, body: str) -> Result:
        if self.payloads is None:
            raise RuntimeError(
                f"result {result.request_id} is {len(body.encode())} bytes, over the response "
                "queue's limit, and no bucket is configured for its claim check"
            )
        key = self.payloads.key_for(result.request_id, f"result-{uuid.uuid4().hex}.json")
        self.payloads.put(key, body.encode())
        self.claim_checked += 1
        return result.model_copy(
            update={"faces": [], "result": [], "album": None, "payload_uri": self.payloads.uri(key)}
        )


class SqsDispatcher:
    """Sends detection output: tasks to the request queue, final results to the response queue.

    A task whose JSON is over ``max_message_bytes`` keeps its metadata in the message and moves
    its faces to S3 (claim check); recognition deletes the object after use.
    """

    def __init__(
        self,
        sqs: Any,
        request_queue_url: str,
        results: ResultSink,
        payloads: S3PayloadStore | None,
        max_message_bytes: int,
    ) -> None:
        self.sqs = sqs
        self.request_queue_url = request_queue_url
        self.results = results
        self.payloads = payloads
        self.max_message_bytes = max_message_bytes

    def send_task(self, task: FaceTask) -> None:
        body = task.model_dump_json()
        if not fits(body, self.max_message_bytes):
            if self.payloads is None:
                raise RuntimeError("message over the size limit and no bucket configured")
            key = self.payloads.key_for(task.request_id, f"{uuid.uuid4().hex}.json")
            payload = FacePayload(request_id=task.request_id, faces=task.faces)
            self.payloads.put(key, payload.model_dump_json().encode())
            body = task.model_copy(update={"faces": [], "payload_key": key}).model_dump_json()
        self.sqs.send_message(
            QueueUrl=self.request_queue_url,
            MessageBody=body,
            MessageAttributes=_attributes(task.request_id),
        )

    def send_result(self, result: Result) -> None:
        self.results.send_result(result)

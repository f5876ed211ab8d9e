"""SQS: sending tasks (with an S3 claim check when too large) and results."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from facepipe.aws.s3 import S3PayloadStore
from facepipe.ledger import ResultSink
from facepipe.messages import FacePayload, FaceTask, Result


def _attributes(request_id: str) -> dict[str, Any]:
    return {"request_id": {"DataType": "String", "StringValue": request_id}}


class SqsResultSink:
    """Posts final results (one per request_id) to the response queue."""

    def __init__(self, sqs: Any, queue_url: str) -> None:
        self.sqs = sqs
        self.queue_url = queue_url

    def send_result(self, result: Result) -> None:
        self.sqs.send_message(
            QueueUrl=self.queue_url,
            MessageBody=result.to_json(),
            MessageAttributes=_attributes(result.request_id),
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
        if len(body.encode()) > self.max_message_bytes:
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


def attribute_request_id(record: Mapping[str, Any]) -> str | None:
    """The ``request_id`` message attribute of an SQS record as Lambda delivers it
    (``messageAttributes.request_id.stringValue``), ``None`` when absent or not a string."""
    attributes = record.get("messageAttributes")
    attribute = attributes.get("request_id") if isinstance(attributes, Mapping) else None
    value = attribute.get("stringValue") if isinstance(attribute, Mapping) else None
    return value if isinstance(value, str) else None

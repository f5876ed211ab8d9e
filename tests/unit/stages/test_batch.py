"""One SQS message read once, whichever shape delivered it, and parsed once on the recognition
path into its task or its refusal with the request_id."""

from __future__ import annotations

import json

import pytest

from facepipe.errors import InvalidMessage
from facepipe.stages.batch import Message
from facepipe.stages.recognize import parse_message

TASK = {"request_id": "cam1-0001", "width": 10, "height": 10, "faces": [], "sent_at": 0.0}


def _record(body: str, attribute: object) -> dict[str, object]:
    """A record of a Lambda SQS event, as the event source mapping delivers it."""
    return {
        "messageId": "m-1",
        "receiptHandle": "rh-1",
        "body": body,
        "attributes": {"ApproximateReceiveCount": "2"},
        "messageAttributes": {"request_id": {"stringValue": attribute, "dataType": "String"}},
    }


def _received(body: str, attribute: object) -> dict[str, object]:
    """An entry of SQS ReceiveMessage, as a worker gets it."""
    return {
        "MessageId": "m-1",
        "ReceiptHandle": "rh-1",
        "Body": body,
        "Attributes": {"ApproximateReceiveCount": "2"},
        "MessageAttributes": {"request_id": {"StringValue": attribute, "DataType": "String"}},
    }


@pytest.mark.parametrize("attribute", ["cam1-0001", None, 7])
def test_both_shapes_give_the_same_message(attribute: object) -> None:
    body = json.dumps(TASK)
    from_lambda, from_worker = (
        Message.from_record(_record(body, attribute)),
        Message.from_receive(_received(body, attribute)),
    )
    assert from_lambda == from_worker
    assert from_lambda.request_id == (attribute if isinstance(attribute, str) else None)
    assert (from_lambda.message_id, from_lambda.receipt_handle) == ("m-1", "rh-1")
    assert from_lambda.attributes == {"ApproximateReceiveCount": "2"}


def test_a_task_is_parsed_once_into_its_task_and_request_id() -> None:
    outcome = parse_message(Message("m-1", "", json.dumps(TASK)))
    assert outcome.task is not None and outcome.error is None
    assert outcome.request_id == outcome.task.request_id == "cam1-0001"


@pytest.mark.parametrize(
    ("body", "attribute", "request_id"),
    [
        ('{"request_id": "cam1-0002", "width": "wide"}', None, "cam1-0002"),  # from the body
        ("not json at all", "cam1-0003", "cam1-0003"),  # from the message attribute
        ("not json at all", None, None),  # nothing readable: the message will fail
    ],
)
def test_a_malformed_message_is_refused_with_what_request_id_it_shows(
    body: str, attribute: str | None, request_id: str | None
) -> None:
    outcome = parse_message(Message("m-1", "", body, request_id=attribute))
    assert outcome.task is None and isinstance(outcome.error, InvalidMessage)
    assert outcome.request_id == request_id

"""The local SQS event source mapping against real SQS semantics (moto), with a fake function.

No models: the invoker records each event and answers what the test wants, so these check only
what the mapping does: batch size, batching window, payload limit, the event's records, and
which messages are deleted for each kind of answer.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from facepipe.local.emulator import LocalAws
from facepipe.local.event_source import (
    SqsEventSource,
    lambda_message_attributes,
    reported_failures,
)

Answer = Callable[[dict[str, Any]], Any]


class FakeInvoker:
    """Records every event (and when it came); answers with ``answer(event)``."""

    name = "FakeFunction"

    def __init__(self, answer: Answer | None = None) -> None:
        self.answer: Answer = answer or (lambda event: {"batchItemFailures": []})
        self.events: list[dict[str, Any]] = []
        self.times: list[float] = []

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def invoke(self, event: dict[str, Any]) -> Any:
        self.events.append(event)
        self.times.append(time.monotonic())
        return self.answer(event)

    def bodies(self) -> list[list[str]]:
        return [[r["body"] for r in e["Records"]] for e in self.events]


@pytest.fixture(scope="module")
def aws() -> Iterator[LocalAws]:
    with LocalAws(stack="facepipe-esm-unit") as local:
        yield local


@pytest.fixture
def queue(aws: LocalAws) -> Iterator[tuple[str, str]]:
    """A fresh queue (30 s visibility timeout: failed messages stay in flight during a test)."""
    url = aws.sqs.create_queue(
        QueueName=f"esm-{uuid.uuid4().hex[:12]}", Attributes={"VisibilityTimeout": "30"}
    )["QueueUrl"]
    arn = aws.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    yield url, arn["Attributes"]["QueueArn"]
    aws.sqs.delete_queue(QueueUrl=url)


def send(aws: LocalAws, url: str, bodies: list[str]) -> list[str]:
    ids = []
    for start in range(0, len(bodies), 10):
        chunk = bodies[start : start + 10]
        response = aws.sqs.send_message_batch(
            QueueUrl=url,
            Entries=[{"Id": str(i), "MessageBody": body} for i, body in enumerate(chunk)],
        )
        ids += [e["MessageId"] for e in sorted(response["Successful"], key=lambda e: int(e["Id"]))]
    return ids


def counts(aws: LocalAws, url: str) -> tuple[int, int]:
    """(visible, in flight) messages of the queue."""
    attributes = aws.sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return (
        int(attributes["ApproximateNumberOfMessages"]),
        int(attributes["ApproximateNumberOfMessagesNotVisible"]),
    )


def receive_all(aws: LocalAws, url: str, n: int) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    while len(messages) < n:
        messages += aws.sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
    return messages


def run_until(source: SqsEventSource, done: Callable[[], bool], timeout: float = 20.0) -> None:
    source.start()
    try:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, "the event source did not get there in time"
            time.sleep(0.05)
    finally:
        source.stop()


# --- batching -------------------------------------------------------------------------------
def test_batches_hold_at_most_batch_size_and_every_message_once(
    aws: LocalAws, queue: tuple[str, str]
) -> None:
    url, arn = queue
    sent = send(aws, url, [f"m-{i}" for i in range(25)])
    fake = FakeInvoker()
    source = SqsEventSource(aws.sqs, url, arn, fake, batch_size=10, window_seconds=0.5)

    run_until(source, lambda: source.records_ok == 25)

    sizes = [len(e["Records"]) for e in fake.events]
    assert max(sizes) <= 10
    assert len(sizes) >= 3
    delivered = [r["messageId"] for e in fake.events for r in e["Records"]]
    assert sorted(delivered) == sorted(sent)  # each exactly once
    assert (source.batches, source.records_failed) == (len(sizes), 0)
    assert counts(aws, url) == (0, 0)  # all deleted


def test_batch_size_above_ten_takes_several_receives(aws: LocalAws, queue: tuple[str, str]) -> None:
    url, arn = queue
    send(aws, url, [f"m-{i}" for i in range(25)])
    fake = FakeInvoker()
    source = SqsEventSource(aws.sqs, url, arn, fake, batch_size=25, window_seconds=2)

    run_until(source, lambda: source.records_ok == 25)

    assert [len(e["Records"]) for e in fake.events] == [25]


def test_window_gathers_messages_sent_one_at_a_time_into_one_batch(
    aws: LocalAws, queue: tuple[str, str]
) -> None:
    url, arn = queue
    fake = FakeInvoker()
    window = 2.0
    source = SqsEventSource(aws.sqs, url, arn, fake, batch_size=10, window_seconds=window)
    source.start()
    try:
        time.sleep(0.3)  # the poller is long-polling the empty queue
        first_sent = time.monotonic()
        for i in range(3):
            send(aws, url, [f"w-{i}"])
            time.sleep(0.3)
        deadline = time.monotonic() + 10
        while source.records_ok < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        source.stop()

    assert fake.bodies() == [["w-0", "w-1", "w-2"]]
    # Not full: the batch waited for the window after its first message, and not much longer.
    waited = fake.times[0] - first_sent
    assert window - 0.3 <= waited <= window + 1.5


def test_a_message_back_within_the_window_is_in_its_batch_once(aws: LocalAws) -> None:
    """A visibility timeout shorter than the window: the message is received again while its
    batch gathers; the batch keeps one record, the latest receive (its receipt handle)."""
    url = aws.sqs.create_queue(
        QueueName=f"esm-{uuid.uuid4().hex[:12]}", Attributes={"VisibilityTimeout": "1"}
    )["QueueUrl"]
    arn = aws.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    try:
        (sent,) = send(aws, url, ["again"])
        fake = FakeInvoker()
        source = SqsEventSource(
            aws.sqs, url, arn["Attributes"]["QueueArn"], fake, batch_size=10, window_seconds=2.5
        )
        run_until(source, lambda: source.batches >= 1)
    finally:
        aws.sqs.delete_queue(QueueUrl=url)

    (record,) = fake.events[0]["Records"]
    assert record["messageId"] == sent
    assert int(record["attributes"]["ApproximateReceiveCount"]) >= 2


def test_payload_limit_splits_batches(aws: LocalAws, queue: tuple[str, str]) -> None:
    url, arn = queue
    sent = send(aws, url, ["x" * 2000 + str(i) for i in range(6)])
    fake = FakeInvoker()
    source = SqsEventSource(
        aws.sqs, url, arn, fake, batch_size=10, window_seconds=1, max_payload_bytes=5000
    )

    run_until(source, lambda: source.records_ok == 6)

    sizes = [len(e["Records"]) for e in fake.events]
    assert max(sizes) <= 2  # 2 KB bodies, 5 KB per invocation
    assert sorted(r["messageId"] for e in fake.events for r in e["Records"]) == sorted(sent)


def test_stop_is_prompt(aws: LocalAws, queue: tuple[str, str]) -> None:
    url, arn = queue
    source = SqsEventSource(aws.sqs, url, arn, FakeInvoker(), batch_size=10, window_seconds=1)
    source.start()
    time.sleep(0.5)
    start = time.monotonic()
    source.stop()
    assert time.monotonic() - start < 2.0
    assert not source.running


# --- the event ------------------------------------------------------------------------------
def test_records_carry_the_real_message_data(aws: LocalAws, queue: tuple[str, str]) -> None:
    url, arn = queue
    aws.sqs.send_message(
        QueueUrl=url,
        MessageBody='{"request_id": "r-1"}',
        MessageAttributes={
            "request_id": {"DataType": "String", "StringValue": "r-1"},
            "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01"},
        },
    )
    (message,) = receive_all(aws, url, 1)
    fake = FakeInvoker()
    SqsEventSource(aws.sqs, url, arn, fake).process([message])

    (record,) = fake.events[0]["Records"]
    assert record["messageId"] == message["MessageId"]
    assert record["receiptHandle"] == message["ReceiptHandle"]
    assert record["md5OfBody"] == message["MD5OfBody"]
    assert record["eventSourceARN"] == arn
    assert record["eventSource"] == "aws:sqs"
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    assert record["attributes"]["SentTimestamp"] == message["Attributes"]["SentTimestamp"]
    assert record["messageAttributes"] == {
        "request_id": {
            "stringValue": "r-1",
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "String",
        },
        "blob": {
            "binaryValue": base64.b64encode(b"\x00\x01").decode(),
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "Binary",
        },
    }


def test_lambda_message_attributes_shape() -> None:
    shaped = lambda_message_attributes({"n": {"DataType": "Number", "StringValue": "3"}})
    assert shaped == {
        "n": {
            "stringValue": "3",
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "Number",
        }
    }


# --- what gets deleted ----------------------------------------------------------------------
def _fail_bodies_starting_with_fail(event: dict[str, Any]) -> dict[str, Any]:
    return {
        "batchItemFailures": [
            {"itemIdentifier": r["messageId"]}
            for r in event["Records"]
            if r["body"].startswith("fail")
        ]
    }


def test_only_successful_records_are_deleted(aws: LocalAws, queue: tuple[str, str]) -> None:
    url, arn = queue
    sent = send(aws, url, ["ok-0", "fail-1", "ok-2", "fail-3", "ok-4"])
    source = SqsEventSource(aws.sqs, url, arn, FakeInvoker(_fail_bodies_starting_with_fail))

    outcome = source.process(receive_all(aws, url, 5))

    assert sorted(outcome.failed) == sorted([sent[1], sent[3]])
    assert sorted(outcome.deleted) == sorted([sent[0], sent[2], sent[4]])
    assert outcome.error is None
    assert (source.records_ok, source.records_failed) == (3, 2)
    assert counts(aws, url) == (0, 2)  # the failed two are in flight, untouched


def _raise(event: dict[str, Any]) -> Any:
    raise RuntimeError("the invoker itself broke")


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (lambda e: {"errorType": "RuntimeError", "errorMessage": "boom"}, "RuntimeError: boom"),
        (_raise, "RuntimeError: the invoker itself broke"),
        (lambda e: {"batchItemFailures": [{"itemIdentifier": "not-in-batch"}]}, "malformed"),
        (lambda e: {"batchItemFailures": [{"itemIdentifier": ""}]}, "malformed"),
        (lambda e: {"batchItemFailures": [{"id": "x"}]}, "malformed"),
        (lambda e: {"batchItemFailures": "all"}, "malformed"),
        (lambda e: "not an object", "malformed"),
    ],
    ids=[
        "function-error",
        "invoker-raises",
        "unknown-id",
        "empty-id",
        "bad-key",
        "not-a-list",
        "not-an-object",
    ],
)
def test_function_error_or_malformed_answer_deletes_nothing(
    aws: LocalAws, queue: tuple[str, str], answer: Answer, error: str
) -> None:
    url, arn = queue
    sent = send(aws, url, ["a", "b", "c"])
    source = SqsEventSource(aws.sqs, url, arn, FakeInvoker(answer))

    outcome = source.process(receive_all(aws, url, 3))

    assert outcome.deleted == []
    assert sorted(outcome.failed) == sorted(sent)
    assert outcome.error is not None and error in outcome.error
    assert (source.records_ok, source.records_failed) == (0, 3)
    assert counts(aws, url) == (0, 3)


@pytest.mark.parametrize(
    "answer",
    [None, {}, {"batchItemFailures": []}, {"batchItemFailures": None}],
    ids=["null", "empty", "empty-list", "null-list"],
)
def test_empty_answers_are_full_successes(
    aws: LocalAws, queue: tuple[str, str], answer: Any
) -> None:
    url, arn = queue
    send(aws, url, ["a", "b"])
    source = SqsEventSource(aws.sqs, url, arn, FakeInvoker(lambda e: answer))

    outcome = source.process(receive_all(aws, url, 2))

    assert (len(outcome.deleted), outcome.failed, outcome.error) == (2, [], None)
    assert counts(aws, url) == (0, 0)


def test_without_report_batch_item_failures_success_deletes_all(
    aws: LocalAws, queue: tuple[str, str]
) -> None:
    url, arn = queue
    send(aws, url, ["ok", "fail"])
    source = SqsEventSource(
        aws.sqs,
        url,
        arn,
        FakeInvoker(_fail_bodies_starting_with_fail),
        report_batch_item_failures=False,
    )

    outcome = source.process(receive_all(aws, url, 2))

    assert (len(outcome.deleted), outcome.failed) == (2, [])


def test_reported_failures_rules() -> None:
    ids = ["a", "b"]
    assert reported_failures({"batchItemFailures": [{"itemIdentifier": "b"}]}, ids) == ["b"]
    assert reported_failures(None, ids) == []
    assert reported_failures({"batchItemFailures": [{"itemIdentifier": None}]}, ids) is None
    assert reported_failures([], ids) is None

"""The worker's queue semantics against real SQS semantics (moto), with stand-in stages.

No models: each stage records what it was given and fails or dawdles as told, so these check
only what the consumer and the worker process do: batching, deleting only finished messages,
visibility renewal, release at shutdown, the health endpoint and the heartbeat line.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from facepipe.config import Settings
from facepipe.local.emulator import LocalAws
from facepipe.stages.batch import Message, RecognitionSummary
from facepipe.worker.consumer import ConsumerOptions, QueueConsumer
from facepipe.worker.runner import Worker


class FakeWork:
    def __init__(self, stage: FakeStage, messages: Sequence[Message]) -> None:
        self.stage, self.bodies = stage, {m.message_id: m.body for m in messages}
        self.failed = 0

    def finish(self, message_id: str) -> None:
        body = self.bodies[message_id]
        if body.startswith("bad"):
            self.failed += 1
            raise ValueError(f"cannot do {body}")
        self.stage.finished.append(body)

    def log_keys(self, message_id: str) -> dict[str, object]:
        return {"request_id": None}

    def summary(self) -> RecognitionSummary:  # recorded as a recognition batch (RecordsFailed)
        self.stage.recorded.append((len(self.bodies), self.failed))
        return RecognitionSummary()


class FakeStage:
    """Records batches (bodies) and finished bodies; ``prepare`` takes ``delay`` seconds."""

    name = "recognition"
    metrics_service = "recognition"

    def __init__(self, queue_url: str, delay: float = 0.0) -> None:
        self.queue_url, self.delay = queue_url, delay
        self.batches: list[list[str]] = []
        self.finished: list[str] = []
        self.recorded: list[tuple[int, int]] = []

    def prepare(self, messages: Sequence[Message]) -> FakeWork:
        self.batches.append([m.body for m in messages])
        time.sleep(self.delay)
        return FakeWork(self, messages)


@pytest.fixture(scope="module")
def aws() -> Iterator[LocalAws]:
    with LocalAws(stack="facepipe-worker-unit") as local:
        yield local


@pytest.fixture
def queue(aws: LocalAws) -> Iterator[str]:
    url = aws.sqs.create_queue(
        QueueName=f"worker-{uuid.uuid4().hex[:8]}", Attributes={"VisibilityTimeout": "60"}
    )["QueueUrl"]
    yield url
    aws.sqs.delete_queue(QueueUrl=url)


def send(aws: LocalAws, queue: str, *bodies: str) -> None:
    for body in bodies:
        aws.sqs.send_message(QueueUrl=queue, MessageBody=body)


def counts(aws: LocalAws, queue: str) -> tuple[int, int]:
    attributes = aws.sqs.get_queue_attributes(
        QueueUrl=queue,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return (
        int(attributes["ApproximateNumberOfMessages"]),
        int(attributes["ApproximateNumberOfMessagesNotVisible"]),
    )


def wait_for(condition: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def settings(**worker: Any) -> Settings:
    values = {
        "worker_wait_seconds": 1,
        "worker_visibility_timeout": 60,
        "worker_health_port": 0,
        "worker_heartbeat_seconds": 60,
        "region": "us-east-1",
    }
    values.update(worker)
    return Settings.from_env({}, **values)


def test_finished_messages_are_deleted_and_failed_ones_come_back(aws: LocalAws, queue: str) -> None:
    stage = FakeStage(queue)
    options = ConsumerOptions(wait_seconds=1, batch_size=10, visibility_timeout=2)
    consumer = QueueConsumer(aws.sqs, stage, options)
    send(aws, queue, "good-1", "bad-1", "good-2")
    batch = consumer._gather()
    assert consumer._begin(batch)
    consumer._process(batch)
    assert sorted(stage.finished) == ["good-1", "good-2"]
    assert (consumer.records_ok, consumer.records_failed) == (2, 1)
    assert stage.recorded == [(3, 1)]
    assert counts(aws, queue) == (0, 1)  # the failed one, invisible until its timeout
    time.sleep(2.2)
    (back,) = aws.sqs.receive_message(
        QueueUrl=queue, WaitTimeSeconds=1, MessageSystemAttributeNames=["All"]
    )["Messages"]
    assert back["Body"] == "bad-1" and back["Attributes"]["ApproximateReceiveCount"] == "2"


def test_a_window_gathers_several_receives_up_to_the_batch_size(aws: LocalAws, queue: str) -> None:
    send(aws, queue, *[f"m{i}" for i in range(15)])
    consumer = QueueConsumer(
        aws.sqs, FakeStage(queue), ConsumerOptions(wait_seconds=1, batch_size=12, window_seconds=2)
    )
    assert len(consumer._gather()) == 12  # two or more receives of at most 10
    alone = QueueConsumer(aws.sqs, FakeStage(queue), ConsumerOptions(wait_seconds=1, batch_size=12))
    assert 1 <= len(alone._gather()) <= 10  # no window: one receive is the batch
    consumer.abandon()
    alone.abandon()


def test_a_long_batch_keeps_its_messages_and_the_health_endpoint_reports_it(
    aws: LocalAws, queue: str, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    stage = FakeStage(queue, delay=5)
    worker = Worker(
        settings(worker_visibility_timeout=3, worker_heartbeat_seconds=1),
        [stage],
        sqs=aws.sqs,
    )
    send(aws, queue, "slow-1", "slow-2")
    worker.start()
    try:
        wait_for(lambda: stage.batches)
        status, body = get_health(worker)
        assert status == 200 and body["status"] == "ok" and body["stage"] == "recognition"
        assert body["stages"]["recognition"]["state"] == "processing"
        # the 3 s timeout passes during the 5 s batch: renewed, nobody else gets them
        time.sleep(3.5)
        other = aws.sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=0, VisibilityTimeout=30)
        assert other.get("Messages", []) == []
        wait_for(lambda: len(stage.finished) == 2)
        wait_for(lambda: counts(aws, queue) == (0, 0))
        status, body = get_health(worker)
        snapshot = body["stages"]["recognition"]
        assert (snapshot["batches"], snapshot["records_ok"]) == (1, 2)
        assert snapshot["visibility_extended"] >= 2 and snapshot["last_batch_at"] > 0
    finally:
        worker.shutdown()
    beats = [r for r in caplog.records if r.getMessage() == "worker heartbeat"]
    assert len(beats) >= 3  # every second here (FACEPIPE_WORKER_HEARTBEAT_SECONDS=1)
    assert beats[0].stages["recognition"]["state"] == "processing"  # type: ignore[attr-defined]
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    emf = [x for x in lines if "_aws" in x]
    assert emf and emf[0]["service"] == "recognition"  # one EMF line per batch


def get_health(worker: Worker) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(worker.health.url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_shutdown_past_the_grace_releases_the_batch_and_finishes_nothing(
    aws: LocalAws, queue: str
) -> None:
    stage = FakeStage(queue, delay=3)
    worker = Worker(settings(worker_grace_seconds=0.5), [stage], sqs=aws.sqs)
    send(aws, queue, "a", "b", "c")
    worker.start()
    wait_for(lambda: stage.batches)
    worker.shutdown()
    assert counts(aws, queue) == (3, 0)  # visible again at once, for another worker
    time.sleep(3)  # the batch's prepare ends now: it must not post anything
    assert stage.finished == []
    assert worker.consumers[0].released == 3


def test_shutdown_within_the_grace_finishes_the_batch(aws: LocalAws, queue: str) -> None:
    stage = FakeStage(queue, delay=1.5)
    worker = Worker(settings(worker_grace_seconds=20), [stage], sqs=aws.sqs)
    send(aws, queue, "x", "y")
    worker.start()
    wait_for(lambda: stage.batches)
    assert get_health(worker)[1]["stages"]["recognition"]["state"] == "processing"
    worker.shutdown()
    assert sorted(stage.finished) == sorted(stage.batches[0])
    assert counts(aws, queue)[1] == 0
    assert worker.consumers[0].state == "stopped"


def test_health_is_503_when_stuck_or_stopping(aws: LocalAws, queue: str) -> None:
    stage = FakeStage(queue, delay=3)
    worker = Worker(settings(worker_stuck_seconds=1, worker_grace_seconds=0), [stage], sqs=aws.sqs)
    send(aws, queue, "wedged")
    worker.start()
    try:
        wait_for(lambda: stage.batches)
        time.sleep(1.5)
        status, body = get_health(worker)
        assert (status, body["status"], body["stuck"]) == (503, "stuck", ["recognition"])
        worker.stopping = True
        assert worker.report()[0] == 503 and worker.report()[1]["status"] == "stopping"
    finally:
        worker.shutdown()


def test_an_idle_long_poll_never_outlasts_the_clients_read_timeout(
    aws: LocalAws, queue: str
) -> None:
    """The worker's 20 s long polls on facepipe's clients (read timeout 10 s) ended every idle
    receive in ReadTimeoutError: polls are cut to half the client's read timeout."""
    import boto3
    from botocore.config import Config

    sqs = boto3.session.Session().client(
        "sqs",
        endpoint_url=aws.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(read_timeout=2, retries={"max_attempts": 1}),
    )
    consumer = QueueConsumer(sqs, FakeStage(queue), ConsumerOptions(wait_seconds=20))
    started = time.monotonic()
    assert consumer._receive(10, 20) == []  # the empty queue: a 1 s poll, no ReadTimeoutError
    assert time.monotonic() - started < 2
    send(aws, queue, "late")
    assert [m.body for m in consumer._receive(10, 20)] == ["late"]

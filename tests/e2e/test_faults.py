"""Faults on the local stack lose nothing: every accepted request_id ends in exactly one final
result or in the dead-letter queue, counted and asserted.

In-process stack: duplicates, a batch that runs out of memory, a throttled then failing response
queue. RIE stacks (real processes): the recognition process killed mid-batch, and a gallery that
cannot be loaded.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse

from facepipe.config import Settings
from facepipe.local.stack import LocalStack
from facepipe.messages import Result
from tests.conftest import ROOT
from tests.e2e.conftest import (
    collect,
    frame,
    new_id,
    post_json,
    queue_counts,
    skip_without_images,
)
from tests.fakes import LimitedMemoryEmbedder

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    """One in-process stack for this module (conftest's ``local`` empties its queues)."""
    settings = Settings.from_env({}, weights="random:0")
    with LocalStack(settings, runtime="inprocess", stack="facepipe-faults") as local:
        yield local


def service(local: LocalStack) -> Any:
    """The recognition function's service object, as its init built it."""
    module = local.invokers["RecognitionFunction"].module  # type: ignore[attr-defined]
    return module.SERVICE


@contextlib.contextmanager
def short_visibility(local: LocalStack, seconds: int) -> Iterator[None]:
    """A request-queue visibility timeout of ``seconds``, so failed records come back quickly
    (as an operator could set it); the template's value again afterwards."""
    sqs, queue = local.aws.sqs, local.info()["request_queue_url"]
    template = local.aws.template["Resources"]["RequestQueue"]["Properties"]["VisibilityTimeout"]
    sqs.set_queue_attributes(QueueUrl=queue, Attributes={"VisibilityTimeout": str(seconds)})
    # moto takes the queue's timeout when a long poll starts: let the poller's current one end.
    time.sleep(local.event_sources[0].poll_wait_seconds + 0.5)
    try:
        yield
    finally:
        sqs.set_queue_attributes(QueueUrl=queue, Attributes={"VisibilityTimeout": str(template)})


def exactly_one_each(
    local: LocalStack, ids: list[str], deadline_s: float = 90
) -> dict[str, Result]:
    got, extra = collect(
        local.aws.sqs, local.info()["response_queue_url"], ids, deadline_s=deadline_s
    )
    assert extra == []
    assert {rid: len(results) for rid, results in got.items()} == dict.fromkeys(ids, 1)
    return {rid: results[0] for rid, results in got.items()}


def settled(local: LocalStack) -> None:
    """Nothing left in the request queue or the DLQ."""
    info = local.info()
    assert queue_counts(local.aws.sqs, info["request_queue_url"]) == (0, 0)
    assert local.aws.drain(info["dead_letter_queue_url"], wait_seconds=0) == []


# --- at-least-once delivery -------------------------------------------------------------------
def test_a_duplicate_post_gets_no_second_result(local: LocalStack) -> None:
    url = local.info()["function_url"]
    rid, empty = new_id("dup"), new_id("dup-empty")
    for _ in range(2):  # a client that timed out and sent the same request_ids again
        status, _ = post_json(
            url, {"frames": [frame("astronaut.jpg", rid), frame("rocket.jpg", empty)]}
        )
        assert status == 202
    results = exactly_one_each(local, [rid, empty])
    assert (results[rid].status, results[empty].status) == ("ok", "no_face")
    assert service(local).sink.skipped >= 1
    settled(local)


def test_a_redelivered_task_gets_no_second_result(local: LocalStack) -> None:
    """The same queue message delivered twice (SQS is at-least-once), in one batch or in two:
    one result each time, and both copies leave the queue."""
    sqs, info = local.aws.sqs, local.info()
    (record,) = json.loads((ROOT / "events" / "recognition-sqs.json").read_text())["Records"]
    ids = [new_id("twice-together"), new_id("twice-apart")]
    for rid in ids:
        body = json.loads(record["body"]) | {"request_id": rid}
        attributes = {"request_id": {"DataType": "String", "StringValue": rid}}
        for _ in range(2):
            sqs.send_message(
                QueueUrl=info["request_queue_url"],
                MessageBody=json.dumps(body),
                MessageAttributes=attributes,
            )
        if rid == ids[0]:
            exactly_one_each(local, [rid])
    assert [r.status for r in exactly_one_each(local, ids[1:]).values()] == ["ok"]
    settled(local)


# --- resources -------------------------------------------------------------------------------
def test_a_batch_that_runs_out_of_memory_is_split_and_completes(local: LocalStack) -> None:
    recognition = service(local).recognition
    real = recognition.embedder
    recognition.embedder = LimitedMemoryEmbedder(real, max_batch=1)
    splits = recognition.splits
    try:
        ids = [new_id("oom") for _ in range(3)]
        frames = [frame("frames/obama-and-biden.jpg", ids[0])] + [
            frame("astronaut.jpg", rid) for rid in ids[1:]
        ]
        status, _ = post_json(local.info()["function_url"], {"frames": frames})
        assert status == 202
        results = exactly_one_each(local, ids)
    finally:
        recognition.embedder = real
    assert [len(results[rid].faces) for rid in ids] == [2, 1, 1]
    assert all(r.status == "ok" for r in results.values())
    assert recognition.splits > splits  # at least one batch of > 1 crop was split
    settled(local)


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.body


class Throttle:
    """Answers the response queue's SendMessage with SQS throttling, ``times`` times (``None``:
    until told to stop), before the request reaches the emulator; botocore retries it."""

    def __init__(self, sqs: Any, queue_url: str, times: int | None) -> None:
        self.sqs, self.queue_url, self.times = sqs, queue_url, times
        self.throttled = 0

    def __call__(self, request: Any, **_: Any) -> AWSResponse | None:
        body = request.body.decode() if isinstance(request.body, bytes) else str(request.body)
        if self.queue_url not in body or (self.times is not None and self.throttled >= self.times):
            return None
        self.throttled += 1
        error = json.dumps(
            {"__type": "com.amazonaws.sqs#ThrottlingException", "message": "Rate exceeded"}
        )
        headers = {
            "x-amzn-RequestId": str(uuid.uuid4()),
            "Content-Type": "application/x-amz-json-1.0",
        }
        return AWSResponse(request.url, 400, headers, _Raw(error.encode()))

    def __enter__(self) -> Throttle:
        self.sqs.meta.events.register_first("before-send.sqs.SendMessage", self)
        return self

    def __exit__(self, *_: object) -> None:
        self.sqs.meta.events.unregister("before-send.sqs.SendMessage", self)


def response_sqs(local: LocalStack) -> Any:
    """The SQS client behind the recognition service's result sink (the ledger's sink wraps the
    S3-ingress output writer, which wraps the response queue's sink)."""
    sink: Any = service(local).sink
    while not hasattr(sink, "sqs"):
        sink = sink.sink
    return sink.sqs


def test_a_throttled_result_send_is_retried_with_backoff(local: LocalStack) -> None:
    sqs = response_sqs(local)
    rid = new_id("throttled")
    with Throttle(sqs, local.info()["response_queue_url"], times=3) as throttle:
        status, _ = post_json(local.info()["function_url"], frame("astronaut.jpg", rid))
        assert status == 202
        results = exactly_one_each(local, [rid])
    assert throttle.throttled == 3  # three throttled attempts, then the fourth went through
    assert results[rid].status == "ok"
    settled(local)


def test_a_failing_result_send_fails_the_record_and_the_retry_posts_once(local: LocalStack) -> None:
    sqs = response_sqs(local)
    source = local.event_sources[0]
    rid = new_id("send-fails")
    with short_visibility(local, 4):
        with Throttle(sqs, local.info()["response_queue_url"], times=None) as throttle:
            before = len(source.outcomes)
            status, _ = post_json(local.info()["function_url"], frame("astronaut.jpg", rid))
            assert status == 202
            deadline = time.monotonic() + 60
            while not any(o.failed for o in list(source.outcomes)[before:]):
                assert time.monotonic() < deadline, "the record never failed"
                time.sleep(0.2)
        assert throttle.throttled >= 5  # botocore's standard mode: 5 attempts, then surfaced
        results = exactly_one_each(local, [rid])  # the redelivered record posts it, once
    assert results[rid].status == "ok"
    settled(local)


# --- real processes (RIE) ----------------------------------------------------------------------
@pytest.mark.parametrize("runtime", ["rie", "image"])
def test_recognition_killed_mid_batch_loses_nothing(runtime: str) -> None:
    """The runtime process SIGKILLed while it holds a batch (an out-of-memory kill, a crash):
    under the RIE from this checkout, and inside the recognition image's container."""
    if runtime == "image":
        skip_without_images()
    settings = Settings.from_env({}, weights="random:0")
    with LocalStack(settings, runtime=runtime, stack=f"facepipe-kill-{runtime}") as local:
        info = local.info()
        invoker = local.invokers["RecognitionFunction"]
        log = invoker.function  # type: ignore[attr-defined]
        ids = [new_id("killed") for _ in range(4)]
        with short_visibility(local, 5):
            status, _ = post_json(
                info["function_url"], {"frames": [frame("astronaut.jpg", r) for r in ids]}
            )
            assert status == 202
            # A batch is in the handler once the RIE has printed START and its runtime child
            # exists: the RIE prints START before it forks and execs the runtime, so the pid
            # can be missing for a moment after START (a CI run once looked in that moment).
            deadline = time.monotonic() + 120
            if runtime == "image":  # the runtime lives in the container: killed from inside
                while "START RequestId" not in log.log_text():
                    assert time.monotonic() < deadline, log.log_text()
                    time.sleep(0.02)
                log.kill_runtime()
            else:
                pid = None
                while pid is None or "START RequestId" not in log.log_text():
                    assert time.monotonic() < deadline, log.log_text()
                    time.sleep(0.02)
                    pid = log.runtime_pid()
                os.kill(pid, signal.SIGKILL)
            results = exactly_one_each(local, ids, deadline_s=180)
        assert all(r.status == "ok" for r in results.values())
        assert any(o.error for o in local.event_sources[0].outcomes), "no batch was killed"
        settled(local)


def test_a_gallery_that_cannot_load_sends_every_request_to_the_dlq() -> None:
    settings = Settings.from_env({}, weights="random:0")
    with LocalStack(
        settings, runtime="rie", stack="facepipe-badgallery", parameters={"MaxReceiveCount": "2"}
    ) as local:
        info = local.info()
        key = local.aws.template["Parameters"]["GalleryKey"]["Default"]
        local.aws.s3.put_object(Bucket=info["bucket"], Key=key, Body=b"not a gallery")
        ids = [new_id("nogallery") for _ in range(2)]
        with short_visibility(local, 3):
            status, _ = post_json(
                info["function_url"], {"frames": [frame("astronaut.jpg", r) for r in ids]}
            )
            assert status == 202
            dead: list[dict[str, Any]] = []
            deadline = time.monotonic() + 150
            while len(dead) < len(ids) and time.monotonic() < deadline:
                dead += local.aws.drain(info["dead_letter_queue_url"])
        assert sorted(m["MessageAttributes"]["request_id"]["StringValue"] for m in dead) == sorted(
            ids
        )
        got, extra = collect(local.aws.sqs, info["response_queue_url"], ids, deadline_s=2)
        assert got == {rid: [] for rid in ids} and extra == []  # no result: the DLQ has them
        assert "gallery" in local.invokers["RecognitionFunction"].function.log_text()  # type: ignore[attr-defined]

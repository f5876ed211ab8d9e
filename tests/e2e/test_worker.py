"""`facepipe worker` on the local stack's queues: real moto SQS, real MTCNN and embedder
(FACEPIPE_WEIGHTS=random:0), the recognition function's own service.

The stack runs with ``EnableWorkers=true``, as a deployment with workers would: the recognition
function's SQS event is disabled, so the worker is the request queue's only consumer. Frames
are POSTed to the Function URL and every request_id is counted to exactly one result.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from facepipe.app.wiring import recognition_stage
from facepipe.config import Settings
from facepipe.local.event_source import SqsEventSource
from facepipe.local.invokers import InProcessInvoker
from facepipe.local.stack import LocalStack
from facepipe.messages import Result
from facepipe.worker.runner import Worker
from tests.conftest import FACEPIPE, ROOT
from tests.e2e.conftest import collect, frame, new_id, post_json, queue_counts
from tests.fakes import LimitedMemoryEmbedder

pytestmark = pytest.mark.slow
SAMPLES = ["frames/obama-and-biden.jpg", "astronaut.jpg", "rocket.jpg"]


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    settings = Settings.from_env({}, weights="random:0")
    with LocalStack(
        settings, runtime="inprocess", parameters={"EnableWorkers": "true"}, stack="facepipe-worker"
    ) as local:
        # nobody consumes the request queue but the worker
        assert all(s.queue_url != local.info()["request_queue_url"] for s in local.event_sources)
        yield local


def worker_env(local: LocalStack, **worker: str) -> dict[str, str]:
    """The recognition function's environment (queues, bucket, ledger, gallery, weights), as
    the ECS task definition gives it, plus ``FACEPIPE_WORKER_*`` settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FACEPIPE_", "AWS_"))}
    env.update(
        {
            k: v
            for k, v in local.function_env("RecognitionFunction").items()
            if not k.startswith("AWS_LAMBDA_")
        }
    )
    env.update(FACEPIPE_WORKER_WAIT_SECONDS="1", FACEPIPE_WORKER_HEARTBEAT_SECONDS="1")
    env.update({f"FACEPIPE_WORKER_{k.upper()}": v for k, v in worker.items()})
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class WorkerProcess:
    """`facepipe worker --stage recognition` as a process, its stdout lines collected."""

    def __init__(self, local: LocalStack, stage: str = "recognition", **worker: str) -> None:
        self.port = free_port()
        env = worker_env(local, health_port=str(self.port), **worker)
        env["FACEPIPE_INGEST_QUEUE_URL"] = local.info()["ingest_queue_url"]
        self.proc = subprocess.Popen(
            [*FACEPIPE, "worker", "--stage", stage],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[dict[str, Any]] = []
        self.stderr = ""
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()
        self.wait_for(lambda: self.logged("worker started"), 120)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                self.lines.append(json.loads(line))

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        self.stderr = self.proc.stderr.read()

    def logged(self, message: str) -> list[dict[str, Any]]:
        return [x for x in list(self.lines) if x.get("message") == message]

    def wait_for(self, condition: Any, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.proc.poll() is None or condition(), self.stderr
            assert time.monotonic() < deadline, (self.lines[-3:], self.stderr)
            time.sleep(0.05)

    def health(self) -> tuple[int, dict[str, Any]]:
        url = f"http://127.0.0.1:{self.port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def terminate(self, timeout: float = 60) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


@contextlib.contextmanager
def lambda_consumer(local: LocalStack) -> Iterator[None]:
    """The recognition function behind its SQS event source mapping, as the stack runs it
    without workers: the reference the worker must match."""
    invoker = InProcessInvoker(
        local.aws.function_dir("RecognitionFunction"),
        local.function_env("RecognitionFunction"),
        name="RecognitionFunction",
        lock=local._inprocess_lock,
    )
    invoker.start()
    queue = local.aws.intrinsics.resources["RequestQueue"]
    source = SqsEventSource(local.aws.sqs, queue["QueueUrl"], queue["Arn"], invoker, 10, 1)
    source.start()
    try:
        yield
    finally:
        source.stop()
        invoker.stop()


def post_frames(local: LocalStack, prefix: str, samples: list[str]) -> list[str]:
    ids = [new_id(prefix) for _ in samples]
    frames = [frame(sample, rid) for sample, rid in zip(samples, ids, strict=True)]
    status, _ = post_json(local.info()["function_url"], {"frames": frames})
    assert status == 202
    return ids


def exactly_one_each(local: LocalStack, ids: list[str], deadline_s: float = 120) -> list[Result]:
    got, extra = collect(
        local.aws.sqs, local.info()["response_queue_url"], ids, deadline_s=deadline_s
    )
    assert extra == []
    assert {rid: len(results) for rid, results in got.items()} == dict.fromkeys(ids, 1)
    return [got[rid][0] for rid in ids]


def comparable(result: Result) -> dict[str, Any]:
    """A result without what differs between two runs of one frame: its id and timings."""
    return result.model_dump(exclude={"request_id", "timings_ms"})


def settled(local: LocalStack) -> None:
    info = local.info()
    assert queue_counts(local.aws.sqs, info["request_queue_url"]) == (0, 0)
    assert local.aws.drain(info["dead_letter_queue_url"], wait_seconds=0) == []


def test_the_worker_answers_as_the_lambda_does(local: LocalStack) -> None:
    with lambda_consumer(local):
        by_lambda = exactly_one_each(local, post_frames(local, "lambda", SAMPLES))
    worker = WorkerProcess(local)
    try:
        by_worker = exactly_one_each(local, post_frames(local, "worker", SAMPLES))
        status, health = worker.health()
        worker.wait_for(lambda: worker.logged("worker heartbeat"))
    finally:
        code = worker.terminate()
    assert [comparable(r) for r in by_worker] == [comparable(r) for r in by_lambda]
    assert [r.status for r in by_worker] == ["ok", "ok", "no_face"]
    assert len(by_worker[0].faces) == 2
    # health: 200 with the stage, the last batch and the counts
    assert status == 200 and health["status"] == "ok" and health["stage"] == "recognition"
    stage = health["stages"]["recognition"]
    assert stage["records_ok"] == 2 and stage["batches"] >= 1 and stage["last_batch_at"]
    beat = worker.logged("worker heartbeat")[0]
    assert beat["service"] == "recognition" and "recognition" in beat["stages"]
    emf = [x for x in worker.lines if "_aws" in x]
    assert emf and emf[0]["service"] == "recognition" and "FramesRecognized" in emf[0]
    assert code == 0, worker.stderr
    assert worker.logged("worker stopped")
    settled(local)


def test_sigterm_mid_batch_loses_nothing_and_answers_once(local: LocalStack) -> None:
    # 1: SIGTERM while a batch is being recognized: it finishes within the grace period.
    first = WorkerProcess(local, batch_window_seconds="1")
    ids = post_frames(local, "sigterm", ["astronaut.jpg"] * 6)
    first.wait_for(lambda: first.health()[1]["stages"]["recognition"]["state"] == "processing")
    assert first.terminate() == 0, first.stderr
    (stopped,) = first.logged("worker stopped")
    assert stopped["unfinished_at_grace"] == []
    # 2: SIGTERM while gathering a batch (30 s window): its messages are released at once.
    second = WorkerProcess(local, batch_window_seconds="30", grace_seconds="0")
    ids += post_frames(local, "released", ["astronaut.jpg"] * 3)
    second.wait_for(lambda: second.health()[1]["stages"]["recognition"]["in_flight"] == 3)
    assert second.terminate() == 0, second.stderr
    (stopped,) = second.logged("worker stopped")
    assert stopped["stages"]["recognition"]["released"] == 3
    assert stopped["stages"]["recognition"]["records_ok"] == 0
    # 3: whatever is left goes to the next worker; every request_id gets exactly one result.
    third = WorkerProcess(local)
    try:
        results = exactly_one_each(local, ids)
    finally:
        assert third.terminate() == 0, third.stderr
    assert all(r.status == "ok" for r in results)
    settled(local)


def test_a_batch_that_runs_out_of_memory_is_split_and_completes(local: LocalStack) -> None:
    env = local.function_env("RecognitionFunction")
    settings = Settings.from_env(
        env, worker_wait_seconds=1, worker_health_port=0, worker_batch_window_seconds=1
    )
    stage = recognition_stage(settings)
    recognition = stage.service.recognition
    recognition.embedder = LimitedMemoryEmbedder(recognition.embedder, max_batch=1)
    worker = Worker(settings, [stage])
    worker.start()
    try:
        ids = post_frames(local, "oom", [*SAMPLES[:2], "astronaut.jpg"])
        results = exactly_one_each(local, ids)
    finally:
        worker.shutdown()
    assert [len(r.faces) for r in results] == [2, 1, 1]
    assert all(r.status == "ok" for r in results)
    assert recognition.splits > 0  # a batch of more than one crop was split
    assert max(recognition.embedder.batches) > 1  # and it had been tried whole first
    settled(local)


def test_a_both_stages_worker_takes_s3_uploads_to_their_output(local: LocalStack) -> None:
    """``--stage both``: the ingest queue (S3 uploads) and the request queue in one process,
    with the stack's own ingest poller stopped; each upload's result lands in output/."""
    info = local.info()
    for source in local.event_sources:
        if source.queue_url == info["ingest_queue_url"]:
            source.stop()  # the worker is the ingest queue's only consumer from here on
    bucket, s3 = info["bucket"], local.aws.s3
    keys = {"astronaut.jpg": "ok", "rocket.jpg": "no_face"}
    worker = WorkerProcess(local, stage="both")
    try:
        for name in keys:
            s3.put_object(
                Bucket=bucket,
                Key=f"input/worker/{name}",
                Body=(ROOT / "samples" / name).read_bytes(),
            )
        results: dict[str, Result] = {}
        deadline = time.monotonic() + 120
        while len(results) < len(keys):
            assert time.monotonic() < deadline, (results, worker.lines[-3:], worker.stderr)
            for name in keys:
                with contextlib.suppress(s3.exceptions.NoSuchKey):
                    body = s3.get_object(Bucket=bucket, Key=f"output/worker/{name}.json")["Body"]
                    results[name] = Result.model_validate_json(body.read())
            time.sleep(0.2)
        status, health = worker.health()
    finally:
        code = worker.terminate()
    assert {name: r.status for name, r in results.items()} == keys
    assert len(results["astronaut.jpg"].faces) == 1
    assert results["astronaut.jpg"].filename == "input/worker/astronaut.jpg"
    assert status == 200 and set(health["stages"]) == {"detection", "recognition"}
    assert health["stages"]["detection"]["batches"] >= 1
    assert code == 0, worker.stderr
    settled(local)

"""The client's results by request_id, against the local Function URL server on 127.0.0.1 in
front of the detection function's real /results routes (a ledger in memory): exactly its own
results, pacing without a busy loop, missing ids on timeout, chunks of 100, failures, and the
fall back to the response queue (moto) where the stack offers no results by id."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from facepipe.aws.function_url import answer
from facepipe.aws.sqs import SqsResultSink
from facepipe.client.http import NoStack, RetryPolicy
from facepipe.client.results import ResultPoller
from facepipe.client.stack import Endpoints
from facepipe.client.url_results import (
    WAIT,
    ResultsUnavailable,
    UrlResultPoller,
    reply_for,
    result_poller,
)
from facepipe.config import Settings
from facepipe.errors import ConfigError
from facepipe.local.url_server import FunctionUrlServer
from facepipe.messages import FaceResult, Result
from facepipe.stages.ledger import MemoryLedger, OncePerRequest
from facepipe.stages.results import ResultReader

FAST = RetryPolicy(retries=2, base_delay=0.01, max_delay=0.05)


class ResultsFunction:
    """The detection function's answer to every request (``/results`` read from ``ledger``;
    anything else would detect, and fails the test); ``status`` forces an answer instead."""

    name = "DetectionFunction"

    def __init__(self, ledger: MemoryLedger | None) -> None:
        self.reader = ResultReader(ledger) if ledger is not None else None
        self.events: list[dict[str, Any]] = []
        self.status: int | None = None

    def handle_body(self, body: bytes) -> Any:
        raise AssertionError("detection was called")

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def invoke(self, event: dict[str, Any]) -> Any:
        self.events.append(event)
        if self.status is not None:
            return {"statusCode": self.status, "body": '{"error": "x", "message": "forced"}'}
        return answer(self, event, self.reader)  # type: ignore[arg-type]


@pytest.fixture
def ledger() -> MemoryLedger:
    return MemoryLedger()


@pytest.fixture
def function(ledger: MemoryLedger) -> ResultsFunction:
    return ResultsFunction(ledger)


@pytest.fixture
def url(function: ResultsFunction) -> Iterator[str]:
    with FunctionUrlServer(function) as server:
        yield server.url


class Sink:
    def send_result(self, result: Result) -> None: ...


def finish(ledger: MemoryLedger, *request_ids: str, keep: bool = True) -> None:
    """Post ``request_ids``' results as the stack does (kept in the ledger, or not)."""
    for request_id in request_ids:
        face = FaceResult(box=[1.0, 2.0, 3.0, 4.0], probability=0.99, name=request_id)
        result = Result(request_id=request_id, status="ok", faces=[face])
        if keep:
            OncePerRequest(Sink(), ledger).send_result(result)
        else:  # completed before the stack kept results
            ledger.claim(request_id, "old")
            ledger.complete(request_id, "old", "ok")


def test_it_gets_exactly_its_own_results_in_one_request(url: str, ledger: MemoryLedger) -> None:
    finish(ledger, "me.a", "other.x", "me.b", "other.y")
    arrived: list[str] = []

    report = UrlResultPoller(url).poll(
        ["me.b", "me.a"], timeout=10, on_result=lambda r: arrived.append(r.result.request_id)
    )

    assert list(report.results) == arrived == ["me.b", "me.a"]
    assert report.results["me.a"].result.faces[0].name == "me.a"
    assert Result.model_validate_json(report.results["me.a"].body) == report.results["me.a"].result
    assert (report.missing, report.duplicates, report.released) == ([], 0, 0)
    assert (report.receives, report.via) == (1, "url")
    assert report.line().endswith("; 1 requests to the Function URL")
    assert ledger.finished(["other.x", "other.y"]) == {"other.x", "other.y"}  # theirs still there


def test_results_that_come_later_are_asked_for_at_a_pace_not_in_a_busy_loop(
    url: str, ledger: MemoryLedger
) -> None:
    ids = [f"late.{i}" for i in range(6)]
    for request_id in ids:
        ledger.admit(request_id, "digest")
    timers = [
        threading.Timer(0.3 * (i + 1), finish, (ledger, request_id))
        for i, request_id in enumerate(ids)
    ]
    for timer in timers:
        timer.start()
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        time.sleep(seconds)

    report = UrlResultPoller(url, sleep=sleep).poll(ids, timeout=20)

    assert sorted(report.results) == ids and report.missing == []
    assert report.receives <= len(ids) + 2  # never many asks per result
    assert len(waits) == report.receives - 1
    assert all(WAIT[0] <= w <= WAIT[1] for w in waits)


def test_a_timeout_reports_the_missing_ids_in_the_order_asked(
    url: str, ledger: MemoryLedger
) -> None:
    finish(ledger, "t.done")
    ledger.admit("t.pending", "digest")
    start = time.monotonic()

    report = UrlResultPoller(url).poll(["t.never", "t.done", "t.pending"], timeout=1.5)

    elapsed = time.monotonic() - start
    assert 1.5 <= elapsed < 3.0
    assert list(report.results) == ["t.done"]
    assert report.missing == ["t.never", "t.pending"]
    assert 3 <= report.receives <= 5  # 0.25 s, 0.5 s, then the last ask at the deadline


def test_more_than_100_ids_are_asked_for_100_at_a_time(
    url: str, ledger: MemoryLedger, function: ResultsFunction
) -> None:
    ids = [f"many.{i:03d}" for i in range(250)]
    finish(ledger, *ids)

    report = UrlResultPoller(url).poll(ids, timeout=10)

    assert list(report.results) == ids and report.receives == 3
    assert [e["requestContext"]["http"]["method"] for e in function.events] == ["POST"] * 3


def test_results_over_one_answers_size_are_asked_for_again_at_once(
    url: str, ledger: MemoryLedger, function: ResultsFunction
) -> None:
    function.reader = ResultReader(ledger, max_answer_bytes=1)  # one result per answer
    ids = [f"big.{i}" for i in range(5)]
    finish(ledger, *ids)
    waits: list[float] = []

    report = UrlResultPoller(url, sleep=waits.append).poll(ids, timeout=10)

    assert list(report.results) == ids and report.missing == []
    assert report.receives == 5 and waits == []


def test_results_only_on_the_queue_are_taken_from_it(url: str, ledger: MemoryLedger) -> None:
    """A result completed before the stack kept results (``on_queue``) is on the response
    queue only: the poller takes it from there, and the rest from the URL."""
    finish(ledger, "q.kept")
    finish(ledger, "q.old", keep=False)
    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        queue = sqs.create_queue(QueueName="responses")["QueueUrl"]
        SqsResultSink(sqs, queue).send_result(Result(request_id="q.old", status="no_face"))

        report = UrlResultPoller(url, queue=ResultPoller(sqs, queue)).poll(
            ["q.old", "q.kept"], timeout=10
        )
        alone = UrlResultPoller(url).poll(["q.old"], timeout=10)

    assert sorted(report.results) == ["q.kept", "q.old"] and report.missing == []
    assert report.results["q.old"].result.status == "no_face"
    assert report.receives == 2  # one ask, one receive
    assert alone.missing == ["q.old"]  # no queue to take it from: missing, at once


def test_an_answer_it_cannot_use_is_an_error_not_a_hang(
    url: str, function: ResultsFunction
) -> None:
    function.status = 503
    with pytest.raises(ResultsUnavailable, match=r"HTTP 503 x: forced"):
        UrlResultPoller(url, retry=FAST).poll(["a"], timeout=30)
    assert len(function.events) == 3  # the first try and two retries

    function.status = 403  # not transient: at once
    with pytest.raises(ResultsUnavailable, match="HTTP 403"):
        UrlResultPoller(url, retry=FAST).poll(["a"], timeout=30)
    assert len(function.events) == 4


def test_no_stack_on_the_loopback_url_is_said_at_once() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(NoStack, match="no stack at"):
        UrlResultPoller(f"http://127.0.0.1:{port}/").poll(["a"], timeout=5)


def test_requests_are_signed_when_the_url_is(url: str, function: ResultsFunction) -> None:
    from botocore.credentials import Credentials

    poller = UrlResultPoller(
        url, sign="always", region="eu-west-1", credentials=Credentials("AKID", "SECRET")
    )
    assert poller.offered() is None
    poller.poll(["s.a"], timeout=0.1)

    for event in function.events:
        authorization = event["headers"]["authorization"]
        assert authorization.startswith("AWS4-HMAC-SHA256 Credential=AKID/")
        assert "/eu-west-1/lambda/aws4_request" in authorization
    assert [e["requestContext"]["http"]["method"] for e in function.events][:2] == ["GET", "POST"]


# --- which poller ------------------------------------------------------------------------------
def endpoints(url: str, queue: str = "") -> Endpoints:
    return Endpoints(function_url=url, response_queue_url=queue, region="us-east-1")


def test_auto_takes_the_url_when_the_stack_offers_it(url: str) -> None:
    poller = result_poller(endpoints(url), Settings.from_env({}))
    assert isinstance(poller, UrlResultPoller)


def test_an_older_stack_is_polled_on_the_queue_unless_url_is_asked_for(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with FunctionUrlServer(ResultsFunction(None)) as server, mock_aws():
        queue = boto3.client("sqs", region_name="us-east-1").create_queue(QueueName="r")
        older = endpoints(server.url, queue["QueueUrl"])
        with caplog.at_level(logging.WARNING, logger="facepipe.client"):
            auto = result_poller(older, Settings.from_env({}))
        forced = result_poller(older, Settings.from_env({}, results_via="queue"))
        with pytest.raises(ConfigError, match=r"does not offer results by request_id.*405"):
            result_poller(older, Settings.from_env({}, results_via="url"))

    assert isinstance(auto, ResultPoller) and isinstance(forced, ResultPoller)
    assert "polling the response queue" in caplog.text
    with pytest.raises(ConfigError, match="no function url"):
        result_poller(endpoints(""), Settings.from_env({}, results_via="url"))
    with pytest.raises(ConfigError, match="no response queue url"):
        result_poller(endpoints(""), Settings.from_env({}))


def test_results_read_by_id_are_wanted_by_id_only_where_the_stack_takes_it(
    url: str, function: ResultsFunction
) -> None:
    """A client that reads by request_id asks for its results by request_id only (none left
    on the response queue); one that polls the queue, or a stack whose ``GET /results`` lists
    no ``reply`` (it would refuse the field), gets the queue's default."""
    by_url = result_poller(endpoints(url), Settings.from_env({}))
    assert reply_for(by_url) == "by_id"

    older = {"results": "by request_id", "max_ids": 100, "states": ["done"]}  # no "reply" yet
    function.reader.about = lambda: older  # type: ignore[method-assign,union-attr]
    assert reply_for(result_poller(endpoints(url), Settings.from_env({}))) == "queue"
    assert reply_for(UrlResultPoller(url)) == "queue"  # not asked yet: the default
    with mock_aws():
        queue = boto3.client("sqs", region_name="us-east-1").create_queue(QueueName="r")
        on_queue = result_poller(
            endpoints(url, queue["QueueUrl"]), Settings.from_env({}, results_via="queue")
        )
        assert reply_for(on_queue) == "queue"

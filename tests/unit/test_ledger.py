"""The result ledger: one final result per request_id, in memory and in DynamoDB (moto)."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from facepipe.ledger import (
    Claim,
    DynamoLedger,
    MemoryLedger,
    OncePerRequest,
    ResultInFlight,
    ResultLedger,
)
from facepipe.messages import Result


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["memory", "dynamodb"])
def ledger(request: pytest.FixtureRequest, clock: Clock) -> Iterator[ResultLedger]:
    if request.param == "memory":
        yield MemoryLedger(lease_s=60, retention_s=3600, clock=clock)
        return
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name="us-east-1")
        dynamodb.create_table(
            TableName="ledger",
            AttributeDefinitions=[{"AttributeName": "request_id", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "request_id", "KeyType": "HASH"}],
            BillingMode="PAY_PER_REQUEST",
        )
        yield DynamoLedger(dynamodb, "ledger", lease_s=60, retention_s=3600, clock=clock)


def test_claim_complete_and_duplicates(ledger: ResultLedger, clock: Clock) -> None:
    assert ledger.claim("a") is Claim.NEW
    assert ledger.claim("a") is Claim.BUSY  # another worker is posting it
    assert ledger.finished(["a", "b"]) == set()
    ledger.complete("a", "ok")
    assert ledger.claim("a") is Claim.DONE
    assert ledger.finished(["a", "b"]) == {"a"}
    clock.now += 3601  # past retention: forgotten (before DynamoDB's TTL sweep, too)
    assert ledger.finished(["a"]) == set()
    assert ledger.claim("a") is Claim.NEW


def test_a_released_or_expired_claim_can_be_taken_again(ledger: ResultLedger, clock: Clock) -> None:
    assert ledger.claim("a") is Claim.NEW
    ledger.release("a")
    assert ledger.claim("a") is Claim.NEW
    clock.now += 61  # the claimer died: its lease ran out
    assert ledger.claim("a") is Claim.NEW
    ledger.complete("a", "ok")
    ledger.release("a")  # a release never undoes a completed result
    assert ledger.claim("a") is Claim.DONE


def test_finished_reads_more_keys_than_one_batch_get(ledger: ResultLedger) -> None:
    ids = [f"r{i}" for i in range(250)]
    for request_id in ids[::2]:
        ledger.claim(request_id)
        ledger.complete(request_id, "ok")
    assert ledger.finished(ids) == set(ids[::2])


class Sink:
    def __init__(self, fail: int = 0) -> None:
        self.sent: list[str] = []
        self.fail = fail

    def send_result(self, result: Result) -> None:
        if self.fail:
            self.fail -= 1
            raise ConnectionError("queue unavailable")
        self.sent.append(result.request_id)


def test_once_per_request_posts_one_result_per_request_id(ledger: ResultLedger) -> None:
    sink = Sink()
    once = OncePerRequest(sink, ledger)
    for request_id in ["a", "b", "a", "a"]:
        once.send_result(Result(request_id=request_id, status="ok"))
    assert sink.sent == ["a", "b"]
    assert (once.posted, once.skipped) == (2, 2)
    assert once.finished(["a", "b", "c"]) == {"a", "b"}


def test_a_failed_send_releases_the_claim_for_the_retry(ledger: ResultLedger) -> None:
    sink = Sink(fail=1)
    once = OncePerRequest(sink, ledger)
    with pytest.raises(ConnectionError):
        once.send_result(Result(request_id="a", status="ok"))
    once.send_result(Result(request_id="a", status="ok"))  # the retry posts it
    assert sink.sent == ["a"]


def test_a_claim_held_elsewhere_fails_the_record_for_later(ledger: ResultLedger) -> None:
    assert ledger.claim("a") is Claim.NEW  # another worker, mid-send
    sink = Sink()
    with pytest.raises(ResultInFlight, match="another worker"):
        OncePerRequest(sink, ledger).send_result(Result(request_id="a", status="ok"))
    assert sink.sent == []

"""The result ledger: one final result per request_id, in memory and in DynamoDB (moto)."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from facepipe.aws.dynamo_ledger import DynamoLedger
from facepipe.messages import FaceResult, Result
from facepipe.stages.ledger import (
    DEFAULT_LEASE_S,
    Admission,
    Claim,
    MemoryLedger,
    OncePerRequest,
    ResultInFlight,
    ResultLedger,
)


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
    assert ledger.claim("a", "w1") is Claim.NEW
    assert ledger.claim("a", "w2") is Claim.BUSY  # another worker is posting it
    assert ledger.finished(["a", "b"]) == set()
    assert ledger.complete("a", "w1", "ok")
    assert ledger.claim("a", "w2") is Claim.DONE
    assert ledger.finished(["a", "b"]) == {"a"}
    clock.now += 3601  # past retention: forgotten (before DynamoDB's TTL sweep, too)
    assert ledger.finished(["a"]) == set()
    assert ledger.claim("a", "w3") is Claim.NEW


def test_a_released_or_expired_claim_can_be_taken_again(ledger: ResultLedger, clock: Clock) -> None:
    assert ledger.claim("a", "w1") is Claim.NEW
    ledger.release("a", "w1")
    assert ledger.claim("a", "w2") is Claim.NEW
    clock.now += 61  # the claimer died: its lease ran out
    assert ledger.claim("a", "w3") is Claim.NEW
    assert ledger.complete("a", "w3", "ok")
    ledger.release("a", "w3")  # a release never undoes a completed result
    assert ledger.claim("a", "w4") is Claim.DONE


def test_only_the_owner_releases_or_completes_a_claim(ledger: ResultLedger, clock: Clock) -> None:
    """A send that outlived its lease (A) cannot release or complete the claim B took over:
    before owner tokens, A's release deleted B's claim and a third worker posted again."""
    assert ledger.claim("a", "A") is Claim.NEW
    clock.now += 61  # A's send is still running, its lease is over
    assert ledger.claim("a", "B") is Claim.NEW
    ledger.release("a", "A")  # A's send failed at last: it releases... nothing of B's
    assert ledger.claim("a", "C") is Claim.BUSY
    assert not ledger.complete("a", "A", "ok")  # A's late completion is refused too
    assert ledger.claim("a", "C") is Claim.BUSY
    assert ledger.complete("a", "B", "ok")
    assert ledger.claim("a", "C") is Claim.DONE


def test_admission_tells_a_retry_from_another_frame(ledger: ResultLedger) -> None:
    assert ledger.check({"a": "f1", "b": "f2"}) == {"a": Admission.NEW, "b": Admission.NEW}
    assert ledger.admit("a", "f1") is Admission.NEW
    assert ledger.admit("a", "f1") is Admission.RETRY  # the client sent the same frame again
    assert ledger.admit("a", "f9") is Admission.CONFLICT  # another frame under its request_id
    assert ledger.check({"a": "f9"}) == {"a": Admission.CONFLICT}
    assert ledger.claim("a", "w1") is Claim.NEW  # an admitted request_id is claimed as usual
    assert ledger.admit("a", "f1") is Admission.RETRY
    ledger.release("a", "w1")  # back to admitted: the frame is still known
    assert ledger.admit("a", "f9") is Admission.CONFLICT
    assert ledger.claim("a", "w2") is Claim.NEW
    assert ledger.complete("a", "w2", "ok")
    assert ledger.admit("a", "f1") is Admission.ANSWERED
    assert ledger.admit("a", "f9") is Admission.CONFLICT  # answered, and another frame
    assert ledger.check({"a": "f1"}) == {"a": Admission.ANSWERED}


def test_a_withdrawn_admission_frees_the_request_id(ledger: ResultLedger) -> None:
    assert ledger.admit("a", "f1") is Admission.NEW
    ledger.withdraw("a", "f9")  # not this caller's frame: nothing happens
    assert ledger.admit("a", "f9") is Admission.CONFLICT
    ledger.withdraw("a", "f1")
    assert ledger.admit("a", "f9") is Admission.NEW
    assert ledger.claim("a", "w") is Claim.NEW
    ledger.withdraw("a", "f9")  # claimed: a withdrawal never undoes a result on its way
    assert ledger.admit("a", "f9") is Admission.RETRY


def test_an_expired_entry_is_new_again(ledger: ResultLedger, clock: Clock) -> None:
    assert ledger.admit("a", "f1") is Admission.NEW
    clock.now += 3601
    assert ledger.admit("a", "f2") is Admission.NEW


def test_finished_reads_more_keys_than_one_batch_get(ledger: ResultLedger) -> None:
    ids = [f"r{i}" for i in range(250)]
    for request_id in ids[::2]:
        ledger.claim(request_id, "w")
        ledger.complete(request_id, "w", "ok")
    assert ledger.finished(ids) == set(ids[::2])
    assert len(ledger.check(dict.fromkeys(ids, "f"))) == 250


def test_the_lease_outlasts_the_worst_case_send() -> None:
    """A claim covers its send: the S3 result copy, the result's claim check and the SQS send,
    each bounded by the clients' timeouts and retries."""
    from facepipe.aws.clients import worst_case_call_s
    from facepipe.config import Settings
    from facepipe.local.emulator import find_template, load_template

    assert 3 * worst_case_call_s() <= DEFAULT_LEASE_S
    # A redelivery after a crash mid-send must find the lease over, or it fails as busy and
    # spends a receive on the way to the DLQ: the consumers' visibility timeouts are longer.
    queue = load_template(find_template())["Resources"]["RequestQueue"]["Properties"]
    assert queue["VisibilityTimeout"] > DEFAULT_LEASE_S
    assert Settings().worker_visibility_timeout > DEFAULT_LEASE_S


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
    assert ledger.claim("a", "other") is Claim.NEW  # another worker, mid-send
    sink = Sink()
    with pytest.raises(ResultInFlight, match="another worker"):
        OncePerRequest(sink, ledger).send_result(Result(request_id="a", status="ok"))
    assert sink.sent == []


# --- results kept by request_id (the Function URL's /results) --------------------------------
def test_a_completed_result_is_kept_and_read_back(ledger: ResultLedger) -> None:
    body = Result(request_id="a", status="ok", filename="a.jpg").to_json()
    assert ledger.admit("a", "f1") is Admission.NEW
    assert ledger.admit("b", "f2") is Admission.NEW
    assert ledger.claim("a", "w") is Claim.NEW
    assert ledger.complete("a", "w", "ok", body)

    found = ledger.lookup(["a", "b", "c"])

    assert set(found) == {"a", "b"}  # c: never seen
    assert (found["a"].state, found["a"].result) == ("done", body)
    assert (found["b"].state, found["b"].result) == ("admitted", None)
    assert ledger.finished(["a", "b"]) == {"a"}  # the state machine reads as before


def test_a_result_too_large_for_an_item_is_not_kept(ledger: ResultLedger) -> None:
    """DynamoDB items hold 400 KB: a larger result would fail the completion (and the lease's
    end would post it again), so it is completed without it."""
    from facepipe.stages.ledger import MAX_KEPT_RESULT_BYTES

    big = '{"request_id": "a", "pad": "' + "x" * MAX_KEPT_RESULT_BYTES + '"}'
    fits = '{"request_id": "b", "pad": "' + "x" * (MAX_KEPT_RESULT_BYTES - 100) + '"}'
    for request_id, body in (("a", big), ("b", fits)):
        assert ledger.claim(request_id, "w") is Claim.NEW
        assert ledger.complete(request_id, "w", "ok", body)

    found = ledger.lookup(["a", "b"])

    assert (found["a"].state, found["a"].result) == ("done", None)
    assert found["b"].result == fits


def test_an_expired_result_is_not_taken_for_a_new_requests(
    ledger: ResultLedger, clock: Clock
) -> None:
    assert ledger.claim("a", "w1") is Claim.NEW
    assert ledger.complete("a", "w1", "ok", '{"request_id": "a", "old": true}')
    clock.now += 3601  # past retention, not yet swept: the id is used again
    assert ledger.lookup(["a"]) == {}
    assert ledger.claim("a", "w2") is Claim.NEW
    assert ledger.lookup(["a"])["a"].result is None  # claimed: the old result is not its
    assert ledger.complete("a", "w2", "ok")  # posted without a result kept
    assert ledger.lookup(["a"])["a"].result is None


class ClaimChecking(Sink):
    """Posts a short form naming an S3 copy, as the response queue's sink does for a result too
    large for a message."""

    def send_result(self, result: Result) -> Result:
        super().send_result(result)
        return result.model_copy(update={"faces": [], "payload_uri": "s3://b/payloads/a/r.json"})


def test_once_per_request_keeps_the_result_as_posted(ledger: ResultLedger) -> None:
    face = FaceResult(box=[1.0, 2.0, 3.0, 4.0], probability=0.99, name="alice")
    OncePerRequest(Sink(), ledger).send_result(Result(request_id="a", status="ok", faces=[face]))
    OncePerRequest(ClaimChecking(), ledger).send_result(
        Result(request_id="b", status="ok", faces=[face])
    )

    found = ledger.lookup(["a", "b"])

    assert Result.model_validate_json(found["a"].result or "").faces == [face]
    kept = Result.model_validate_json(found["b"].result or "")
    assert (kept.faces, kept.payload_uri) == ([], "s3://b/payloads/a/r.json")


# --- results wanted by request_id only ("reply": "by_id") -------------------------------------
class ResponseQueue:
    """The response queue's real sink (SqsResultSink, on moto SQS, claim-checking into moto S3)
    and what reached the queue."""

    def __init__(self, max_message_bytes: int = 262_144) -> None:
        from facepipe.aws.s3 import S3PayloadStore
        from facepipe.aws.sqs import SqsResultSink

        self.sqs = boto3.client("sqs", region_name="us-east-1")
        self.s3 = boto3.client("s3", region_name="us-east-1")
        self.s3.create_bucket(Bucket="data")
        self.url = self.sqs.create_queue(QueueName="responses")["QueueUrl"]
        payloads = S3PayloadStore(self.s3, "data", "payloads/")
        self.sink = SqsResultSink(self.sqs, self.url, payloads, max_message_bytes)

    def posted(self) -> list[str]:
        """The request_ids of the messages on the queue (received once, then deleted)."""
        ids = []
        while messages := self.sqs.receive_message(
            QueueUrl=self.url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
        ).get("Messages", []):
            for message in messages:
                ids.append(message["MessageAttributes"]["request_id"]["StringValue"])
                self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"])
        return sorted(ids)


@pytest.fixture
def queue() -> Iterator[ResponseQueue]:
    with mock_aws():
        yield ResponseQueue()


def test_a_by_id_result_is_kept_once_and_never_posted(
    ledger: ResultLedger, queue: ResponseQueue
) -> None:
    """Before: every result went to the response queue, where a client reading by request_id
    left it unread for the queue's retention, in every queue consumer's way."""
    once = OncePerRequest(queue.sink, ledger)
    by_id = Result(request_id="a", status="ok", filename="a.jpg", reply="by_id")

    assert once.send_result(by_id)
    assert once.send_result(Result(request_id="b", status="no_face"))  # the default: the queue
    assert not once.send_result(by_id)  # a redelivery: already out, nothing again

    assert queue.posted() == ["b"]
    found = ledger.lookup(["a", "b"])
    assert found["a"].result == by_id.to_json() and '"reply"' not in (found["a"].result or "")
    assert found["b"].result == Result(request_id="b", status="no_face").to_json()
    assert ledger.finished(["a", "b"]) == {"a", "b"}
    assert (once.posted, once.skipped) == (2, 1)


def test_a_by_id_result_too_large_for_a_message_is_kept_claim_checked(
    ledger: ResultLedger,
) -> None:
    with mock_aws():
        queue = ResponseQueue(max_message_bytes=2048)
        face = FaceResult(box=[1.0, 2.0, 3.0, 4.0], probability=0.99, name="x" * 1500)
        result = Result(request_id="big", status="ok", faces=[face, face], reply="by_id")

        assert OncePerRequest(queue.sink, ledger).send_result(result)

        assert queue.posted() == []
        kept = Result.model_validate_json(ledger.lookup(["big"])["big"].result or "")
        assert kept.faces == [] and (kept.payload_uri or "").startswith("s3://data/payloads/big/")
        key = (kept.payload_uri or "").removeprefix("s3://data/")
        whole = queue.s3.get_object(Bucket="data", Key=key)["Body"].read()
        assert Result.model_validate_json(whole).faces == [face, face]


class FailingCompletion:
    """``ledger`` whose next ``fail`` completions raise (DynamoDB unavailable)."""

    def __init__(self, ledger: ResultLedger, fail: int = 1) -> None:
        self.ledger = ledger
        self.fail = fail

    def __getattr__(self, name: str) -> object:
        return getattr(self.ledger, name)

    def complete(self, request_id: str, owner: str, status: str, result: str | None = None) -> bool:
        if self.fail:
            self.fail -= 1
            raise ConnectionError("ledger unavailable")
        return self.ledger.complete(request_id, owner, status, result)


def test_a_by_id_completion_that_fails_fails_the_send_and_the_retry_keeps_it(
    ledger: ResultLedger, queue: ResponseQueue
) -> None:
    """A by-id result's completion is its only delivery: swallowed as for a posted one, the
    record would count as done and the request end with no result anywhere."""
    flaky = FailingCompletion(ledger)
    once = OncePerRequest(queue.sink, flaky)  # type: ignore[arg-type]
    result = Result(request_id="a", status="ok", reply="by_id")

    with pytest.raises(ConnectionError):
        once.send_result(result)
    assert ledger.lookup(["a"])["a"].state == "admitted"  # released: the retry may claim it
    assert once.send_result(result)  # the record's retry

    assert ledger.lookup(["a"])["a"].result == result.to_json()
    assert queue.posted() == []
    assert once.posted == 1


def test_a_posted_result_whose_completion_fails_still_counts_as_out(
    ledger: ResultLedger, queue: ResponseQueue
) -> None:
    """On the queue the result is out: a lost completion only risks a duplicate (as before)."""
    once = OncePerRequest(queue.sink, FailingCompletion(ledger))  # type: ignore[arg-type]
    assert once.send_result(Result(request_id="a", status="ok"))
    assert queue.posted() == ["a"]


class SlowSend:
    """A send that outlives its claim's lease, while another worker claims the request_id."""

    def __init__(self, sink: object, ledger: ResultLedger, clock: Clock) -> None:
        self.sink, self.ledger, self.clock = sink, ledger, clock

    def send_result(self, result: Result) -> object:
        answer = self.sink.send_result(result)  # type: ignore[attr-defined]
        self.clock.now += 61
        assert self.ledger.claim(result.request_id, "B") is Claim.NEW
        return answer


def test_a_by_id_result_whose_claim_was_lost_fails_the_send(
    ledger: ResultLedger, queue: ResponseQueue, clock: Clock
) -> None:
    """Its result was kept nowhere: the record must come back (and find it out by then, from
    the worker that took the claim over), not be deleted as done."""
    once = OncePerRequest(SlowSend(queue.sink, ledger, clock), ledger)
    with pytest.raises(ResultInFlight, match="lease ran out"):
        once.send_result(Result(request_id="a", status="ok", reply="by_id"))
    assert (once.posted, once.lease_lost) == (0, 1)
    assert ledger.lookup(["a"])["a"].state == "claimed"  # B's, to complete
    assert ledger.complete("a", "B", "ok", '{"request_id": "a"}')
    assert not once.send_result(Result(request_id="a", status="ok", reply="by_id"))
    assert queue.posted() == []


def test_a_by_id_result_the_ledger_cannot_keep_is_never_completed(ledger: ResultLedger) -> None:
    """Completed without its result, it would be done with nothing to read: refused, released."""
    from facepipe.stages.ledger import MAX_KEPT_RESULT_BYTES

    face = FaceResult(box=[1.0, 2.0, 3.0, 4.0], probability=0.99, name="x" * MAX_KEPT_RESULT_BYTES)
    result = Result(request_id="a", status="ok", faces=[face], reply="by_id")
    with pytest.raises(RuntimeError, match="cannot be kept"):
        OncePerRequest(Sink(), ledger).send_result(result)  # a sink that claim-checks nothing
    assert ledger.lookup(["a"])["a"].state == "admitted"

"""One final result per request_id, although SQS delivers at least once.

A message can reach the recognition function twice (a visibility timeout that ran out, a retried
batch, a client that POSTed the same request_id again). The ledger remembers which request_ids
already have their final result on the response queue, so a duplicate gives no second result:

1. before a batch is embedded, :meth:`ResultLedger.finished` drops the tasks whose result is
   already out (their records count as done and are deleted);
2. every post goes through :class:`OncePerRequest`: ``claim`` the request_id (a short lease), send,
   then ``complete`` it (kept ``retention_s``, longer than any message can live in the queues).
   A claim held by another worker makes the record fail and come back later, when the ledger says
   it is finished; a send that fails releases the claim, so the retry can post.

The one window left is a worker dying between its send and ``complete``: the lease runs out and
the redelivered message posts the same result again, which the client drops (it keeps the first
result per request_id). In AWS the ledger is a DynamoDB table (:class:`DynamoLedger`, conditional
writes, TTL); in-process it is :class:`MemoryLedger`.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from facepipe.errors import FacepipeError
from facepipe.messages import Result

_log = logging.getLogger(__name__)

DEFAULT_LEASE_S = 60.0  # a claim covers one send (with its retries), not a whole batch
DEFAULT_RETENTION_S = 5 * 24 * 3600.0  # > the request queue's 4-day retention
_BATCH_GET_MAX = 100  # DynamoDB BatchGetItem keys per call


class Claim(enum.Enum):
    NEW = "new"  # claimed by this caller: post, then complete (or release)
    DONE = "done"  # the final result is already out: post nothing
    BUSY = "busy"  # another worker is posting it right now: try again later


class ResultInFlight(FacepipeError):
    """Another worker holds the claim: fail the record so that it comes back later."""

    code = "result_in_flight"
    status = 409


class ResultLedger(Protocol):
    def finished(self, request_ids: Iterable[str]) -> set[str]: ...

    def claim(self, request_id: str) -> Claim: ...

    def complete(self, request_id: str, status: str) -> None: ...

    def release(self, request_id: str) -> None: ...


class MemoryLedger:
    """The ledger of one process (the in-process pipeline, tests)."""

    def __init__(
        self,
        lease_s: float = DEFAULT_LEASE_S,
        retention_s: float = DEFAULT_RETENTION_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.lease_s = lease_s
        self.retention_s = retention_s
        self.clock = clock
        self._lock = threading.Lock()
        self._items: dict[str, tuple[str, float]] = {}  # request_id → (state, until)

    def _live(self, request_id: str) -> tuple[str, float] | None:
        item = self._items.get(request_id)
        return item if item is not None and item[1] > self.clock() else None

    def finished(self, request_ids: Iterable[str]) -> set[str]:
        with self._lock:
            return {r for r in request_ids if (self._live(r) or ("", 0))[0] == "done"}

    def claim(self, request_id: str) -> Claim:
        with self._lock:
            item = self._live(request_id)
            if item is not None:
                return Claim.DONE if item[0] == "done" else Claim.BUSY
            self._items[request_id] = ("claimed", self.clock() + self.lease_s)
            return Claim.NEW

    def complete(self, request_id: str, status: str) -> None:
        with self._lock:
            self._items[request_id] = ("done", self.clock() + self.retention_s)

    def release(self, request_id: str) -> None:
        with self._lock:
            item = self._items.get(request_id)
            if item is not None and item[0] == "claimed":
                del self._items[request_id]


class DynamoLedger:
    """The ledger in a DynamoDB table keyed by ``request_id`` (string), with TTL on
    ``expires_at`` (epoch seconds). Items: ``state`` (``claimed`` | ``done``), ``expires_at``
    (lease end, then retention end), ``status`` of the posted result. Expired items count as
    absent even before DynamoDB's TTL sweep removes them."""

    def __init__(
        self,
        dynamodb: Any,
        table: str,
        lease_s: float = DEFAULT_LEASE_S,
        retention_s: float = DEFAULT_RETENTION_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.dynamodb = dynamodb
        self.table = table
        self.lease_s = lease_s
        self.retention_s = retention_s
        self.clock = clock

    def finished(self, request_ids: Iterable[str]) -> set[str]:
        ids = list(dict.fromkeys(request_ids))
        now = self.clock()
        done: set[str] = set()
        for start in range(0, len(ids), _BATCH_GET_MAX):
            keys: list[dict[str, Any]] = [
                {"request_id": {"S": r}} for r in ids[start : start + _BATCH_GET_MAX]
            ]
            request: dict[str, Any] = {
                self.table: {
                    "Keys": keys,
                    "ConsistentRead": True,
                    "ProjectionExpression": "request_id, #s, expires_at",
                    "ExpressionAttributeNames": {"#s": "state"},
                }
            }
            while request:
                answer = self.dynamodb.batch_get_item(RequestItems=request)
                for item in answer.get("Responses", {}).get(self.table, []):
                    if item["state"]["S"] == "done" and float(item["expires_at"]["N"]) > now:
                        done.add(item["request_id"]["S"])
                request = answer.get("UnprocessedKeys") or {}
        return done

    def claim(self, request_id: str) -> Claim:
        now = self.clock()
        try:
            self.dynamodb.put_item(
                TableName=self.table,
                Item={
                    "request_id": {"S": request_id},
                    "state": {"S": "claimed"},
                    "expires_at": {"N": str(int(now + self.lease_s))},
                },
                ConditionExpression="attribute_not_exists(request_id) OR expires_at < :now",
                ExpressionAttributeValues={":now": {"N": str(int(now))}},
            )
            return Claim.NEW
        except self.dynamodb.exceptions.ConditionalCheckFailedException:
            pass
        item = self.dynamodb.get_item(
            TableName=self.table, Key={"request_id": {"S": request_id}}, ConsistentRead=True
        ).get("Item")
        if item is None:  # released or expired between the two calls: let the retry claim it
            return Claim.BUSY
        return Claim.DONE if item["state"]["S"] == "done" else Claim.BUSY

    def complete(self, request_id: str, status: str) -> None:
        self.dynamodb.put_item(
            TableName=self.table,
            Item={
                "request_id": {"S": request_id},
                "state": {"S": "done"},
                "status": {"S": status},
                "expires_at": {"N": str(int(self.clock() + self.retention_s))},
            },
        )

    def release(self, request_id: str) -> None:
        with contextlib.suppress(self.dynamodb.exceptions.ConditionalCheckFailedException):
            self.dynamodb.delete_item(  # only a claim: a completed result stays recorded
                TableName=self.table,
                Key={"request_id": {"S": request_id}},
                ConditionExpression="#s = :claimed",
                ExpressionAttributeNames={"#s": "state"},
                ExpressionAttributeValues={":claimed": {"S": "claimed"}},
            )


class ResultSink(Protocol):
    """Where final results go (the response queue). ``send_result`` returns ``False`` when it
    posted nothing because the request already had its result; anything else means posted."""

    def send_result(self, result: Result) -> bool | None: ...


class OncePerRequest:
    """A result sink that posts at most one final result per request_id (see the module doc).

    ``posted`` and ``skipped`` count what it did; :meth:`send_result` returns whether it posted,
    and raises :class:`ResultInFlight` when another worker holds the request_id's claim.
    """

    def __init__(self, sink: ResultSink, ledger: ResultLedger) -> None:
        self.sink = sink
        self.ledger = ledger
        self.posted = 0
        self.skipped = 0

    def finished(self, request_ids: Iterable[str]) -> set[str]:
        return self.ledger.finished(request_ids)

    def send_result(self, result: Result) -> bool:
        claim = self.ledger.claim(result.request_id)
        if claim is Claim.DONE:
            self.skipped += 1
            _log.info("duplicate: the result of this request_id is already out")
            return False
        if claim is Claim.BUSY:
            raise ResultInFlight(
                f"request {result.request_id}: another worker is posting its result"
            )
        try:
            self.sink.send_result(result)
        except BaseException:
            self.ledger.release(result.request_id)
            raise
        self.posted += 1
        try:
            self.ledger.complete(result.request_id, result.status)
        except Exception:  # posted: a lost completion only risks a duplicate the client drops
            _log.warning("result posted but not recorded in the ledger", exc_info=True)
        return True

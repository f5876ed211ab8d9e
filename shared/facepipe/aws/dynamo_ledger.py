"""The result ledger (:mod:`facepipe.stages.ledger`'s state machine) in a DynamoDB table."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from facepipe.stages.ledger import (
    ADMITTED,
    CLAIMED,
    DEFAULT_LEASE_S,
    DEFAULT_RETENTION_S,
    DONE,
    Admission,
    Claim,
    Entry,
    admission_of,
    keepable,
)

_BATCH_GET_MAX = 100  # DynamoDB BatchGetItem keys per call
# What the state machine reads: everything but the kept result, which only lookup() needs (a
# result may be hundreds of KB: not sent back for nothing, although reads bill the whole item).
# Every name aliased: DynamoDB reserves many words (state, owner, status...).
_STATE_ATTRIBUTES = {
    "#k": "request_id",
    "#s": "state",
    "#f": "frame",
    "#o": "owner",
    "#l": "lease_until",
    "#e": "expires_at",
}


class DynamoLedger:
    """The ledger in a DynamoDB table keyed by ``request_id`` (string), with TTL on
    ``expires_at`` (epoch seconds). Items: ``state`` (``admitted`` | ``claimed`` | ``done``),
    ``frame`` (the admitted frame's digest), ``owner`` and ``lease_until`` (a claim's),
    ``status`` of the posted result, ``result`` (its JSON as posted, when it fits
    :data:`~facepipe.stages.ledger.MAX_KEPT_RESULT_BYTES`), ``expires_at`` (retention end).
    Expired items count as
    absent even before DynamoDB's TTL sweep removes them. Every transition is one conditional
    write; a failed condition returns the item as it is (``ReturnValuesOnConditionCheckFailure``),
    so no second read is needed."""

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

    # --- reading ------------------------------------------------------------------------------
    def _entry(self, item: Mapping[str, Any] | None, now: float) -> Entry | None:
        if not item or "state" not in item or float(item["expires_at"]["N"]) <= now:
            return None
        return Entry(
            state=item["state"]["S"],
            frame=item["frame"]["S"] if "frame" in item else None,
            owner=item["owner"]["S"] if "owner" in item else None,
            until=float(item["lease_until"]["N"]) if "lease_until" in item else 0.0,
            result=item["result"]["S"] if "result" in item else None,
        )

    def _entries(self, request_ids: Iterable[str], *, results: bool = False) -> dict[str, Entry]:
        """The live entries of ``request_ids`` (consistent reads), with the kept results only
        when ``results``."""
        ids = list(dict.fromkeys(request_ids))
        now = self.clock()
        found: dict[str, Entry] = {}
        for start in range(0, len(ids), _BATCH_GET_MAX):
            keys: list[dict[str, Any]] = [
                {"request_id": {"S": r}} for r in ids[start : start + _BATCH_GET_MAX]
            ]
            read: dict[str, Any] = {"Keys": keys, "ConsistentRead": True}
            if not results:
                read["ProjectionExpression"] = ", ".join(_STATE_ATTRIBUTES)
                read["ExpressionAttributeNames"] = _STATE_ATTRIBUTES
            request: dict[str, Any] = {self.table: read}
            while request:
                answer = self.dynamodb.batch_get_item(RequestItems=request)
                for item in answer.get("Responses", {}).get(self.table, []):
                    entry = self._entry(item, now)
                    if entry is not None:
                        found[item["request_id"]["S"]] = entry
                request = answer.get("UnprocessedKeys") or {}
        return found

    def finished(self, request_ids: Iterable[str]) -> set[str]:
        return {r for r, e in self._entries(request_ids).items() if e.state == DONE}

    def check(self, frames: Mapping[str, str]) -> dict[str, Admission]:
        entries = self._entries(frames)
        return {r: admission_of(entries.get(r), d) for r, d in frames.items()}

    def lookup(self, request_ids: Iterable[str]) -> dict[str, Entry]:
        return self._entries(request_ids, results=True)

    # --- transitions --------------------------------------------------------------------------
    def _write(self, method: str, now: float, **kwargs: Any) -> Entry | bool | None:
        """One conditional write; ``True`` when it applied, else the item's live entry."""
        try:
            getattr(self.dynamodb, method)(
                TableName=self.table, ReturnValuesOnConditionCheckFailure="ALL_OLD", **kwargs
            )
            return True
        except self.dynamodb.exceptions.ConditionalCheckFailedException as exc:
            return self._entry(exc.response.get("Item"), now)

    def _key(self, request_id: str) -> dict[str, Any]:
        return {"request_id": {"S": request_id}}

    def admit(self, request_id: str, digest: str) -> Admission:
        now = self.clock()
        answer = self._write(
            "put_item",
            now,
            Item={
                "request_id": {"S": request_id},
                "state": {"S": ADMITTED},
                "frame": {"S": digest},
                "expires_at": {"N": str(int(now + self.retention_s))},
            },
            ConditionExpression="attribute_not_exists(request_id) OR expires_at <= :now",
            ExpressionAttributeValues={":now": {"N": str(int(now))}},
        )
        if answer is True:
            return Admission.NEW
        # Expired between the check and the read (None): another admit just won; it is in use.
        return admission_of(answer, digest) if isinstance(answer, Entry) else Admission.CONFLICT

    def withdraw(self, request_id: str, digest: str) -> None:
        with contextlib.suppress(self.dynamodb.exceptions.ConditionalCheckFailedException):
            self.dynamodb.delete_item(
                TableName=self.table,
                Key=self._key(request_id),
                ConditionExpression="#s = :admitted AND #f = :frame",
                ExpressionAttributeNames={"#s": "state", "#f": "frame"},
                ExpressionAttributeValues={":admitted": {"S": ADMITTED}, ":frame": {"S": digest}},
            )

    def claim(self, request_id: str, owner: str) -> Claim:
        now = self.clock()
        answer = self._write(
            "update_item",
            now,
            Key=self._key(request_id),
            # REMOVE: the result of an expired item under the same request_id is not this one's
            UpdateExpression="SET #s = :claimed, #o = :owner, lease_until = :until, "
            "expires_at = :expires REMOVE #r",
            ConditionExpression="attribute_not_exists(request_id) OR expires_at <= :now "
            "OR #s = :admitted OR (#s = :claimed AND lease_until <= :now)",
            ExpressionAttributeNames={"#s": "state", "#o": "owner", "#r": "result"},
            ExpressionAttributeValues={
                ":claimed": {"S": CLAIMED},
                ":admitted": {"S": ADMITTED},
                ":owner": {"S": owner},
                ":until": {"N": repr(now + self.lease_s)},
                ":expires": {"N": str(int(now + self.retention_s))},
                ":now": {"N": repr(now)},
            },
        )
        if answer is True:
            return Claim.NEW
        # None: the item expired or was released between the condition and the read: retry.
        return Claim.DONE if isinstance(answer, Entry) and answer.state == DONE else Claim.BUSY

    def complete(self, request_id: str, owner: str, status: str, result: str | None = None) -> bool:
        values: dict[str, Any] = {
            ":done": {"S": DONE},
            ":claimed": {"S": CLAIMED},
            ":status": {"S": status},
            ":owner": {"S": owner},
            ":expires": {"N": str(int(self.clock() + self.retention_s))},
        }
        assign = "SET #s = :done, #st = :status, expires_at = :expires"
        kept = keepable(result)
        if kept is None:  # any older result goes too (an expired item's, under the same id)
            expression = f"{assign} REMOVE #o, lease_until, #r"
        else:
            expression = f"{assign}, #r = :result REMOVE #o, lease_until"
            values[":result"] = {"S": kept}
        answer = self._write(
            "update_item",
            self.clock(),
            Key=self._key(request_id),
            UpdateExpression=expression,
            ConditionExpression="#s = :claimed AND #o = :owner",
            ExpressionAttributeNames={
                "#s": "state",
                "#st": "status",
                "#o": "owner",
                "#r": "result",
            },
            ExpressionAttributeValues=values,
        )
        return answer is True

    def release(self, request_id: str, owner: str) -> None:
        self._write(
            "update_item",
            self.clock(),
            Key=self._key(request_id),
            UpdateExpression="SET #s = :admitted REMOVE #o, lease_until",
            ConditionExpression="#s = :claimed AND #o = :owner",
            ExpressionAttributeNames={"#s": "state", "#o": "owner"},
            ExpressionAttributeValues={
                ":admitted": {"S": ADMITTED},
                ":claimed": {"S": CLAIMED},
                ":owner": {"S": owner},
            },
        )

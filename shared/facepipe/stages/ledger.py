"""One final result per request_id, although SQS delivers at least once and clients retry.

Every request_id has one ledger item with a small state machine::

    (absent) ──admit(frame digest)──▶ admitted ──claim(owner)──▶ claimed ──complete(owner)──▶ done
                                         ▲                          │
                                         └──────release(owner)──────┘   (a send that failed)

1. **Admission** (detection, :meth:`ResultLedger.admit`): a POSTed frame's request_id is
   recorded with a digest of the frame. The same frame again (a client's retry) is let through
   (:attr:`Admission.RETRY`) or, when its result is already out, answered as a duplicate
   (:attr:`Admission.ANSWERED`); another frame under a request_id in use is refused
   (:attr:`Admission.CONFLICT`, HTTP 409 ``duplicate_request_id``), so a camera whose counter
   restarted is told instead of silently losing frames.
2. **Before a batch is embedded**, :meth:`ResultLedger.finished` drops the tasks whose result is
   already out (their records count as done and are deleted).
3. **Every post** goes through :class:`OncePerRequest`: ``claim`` the request_id with an owner
   token and a lease, send, then ``complete`` it (kept ``retention_s``, longer than any message
   can live in the queues and their dead-letter queue), keeping the result as posted (see 4.).
   ``complete`` and ``release`` only act on
   the caller's own claim: a send that outlived its lease cannot release or complete the claim
   another worker took over since. A claim held by another worker makes the record fail and
   come back later, when the ledger says it is finished; a send that fails releases the claim.
4. **Results by request_id** (:mod:`facepipe.stages.results`, the Function URL's ``/results``):
   ``complete`` keeps the final result's JSON as it was posted (a claim-checked result's short
   form, which names its S3 copy) in the item, up to :data:`MAX_KEPT_RESULT_BYTES`, and
   :meth:`ResultLedger.lookup` reads it back, so a client gets its own results without sifting
   the shared response queue. The result is posted to the queue as well, unless its request
   asked for it by request_id only (``"reply": "by_id"``, :data:`facepipe.messages.Reply`):
   then the completion is its only delivery, so one that fails, or finds the claim lost,
   fails the send (the record comes back, or the client's POST is retried) instead of
   counting it posted, and a result the item could not keep is never completed.

The one window left is a worker dying between its send and ``complete`` (one DynamoDB write):
the lease runs out and the redelivered message posts the same result again, which the client
drops (it keeps the first result per request_id); a result wanted by request_id only was not
out at all, and the redelivered message keeps it. The lease covers the worst-case send (see
:func:`facepipe.aws.clients.worst_case_call_s`), so a slow send is not overtaken either. In AWS
the ledger is a DynamoDB table (:class:`facepipe.aws.dynamo_ledger.DynamoLedger`, conditional
writes, TTL); in-process it is :class:`MemoryLedger`.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from facepipe.errors import FacepipeError
from facepipe.messages import Result

_log = logging.getLogger(__name__)

DAY_S = 24 * 3600.0
DEFAULT_LEASE_S = 260.0  # three calls' worst case (aws.clients.worst_case_call_s) and a margin
# Longer than any message can live: the request queue keeps one 4 days, its dead-letter queue
# 14 days from the first enqueue, and a redrive may start on the DLQ's last day.
DEFAULT_RETENTION_S = 19 * DAY_S

ADMITTED, CLAIMED, DONE = "admitted", "claimed", "done"
# The most UTF-8 bytes of a result's JSON a ledger item keeps: DynamoDB's items hold 400 KB,
# attribute names and the other attributes included. The response queue's sink claim-checks
# anything larger (facepipe.app.wiring.result_sink), so every posted result fits.
MAX_KEPT_RESULT_BYTES = 350_000


class Claim(enum.Enum):
    NEW = "new"  # claimed by this caller: post, then complete (or release)
    DONE = "done"  # the final result is already out: post nothing
    BUSY = "busy"  # another worker is posting it right now: try again later


class Admission(enum.Enum):
    NEW = "new"  # a request_id never seen: process the frame
    RETRY = "retry"  # the same frame again, its result not out yet: process it again
    ANSWERED = "answered"  # the same frame again, its final result already out: nothing to do
    CONFLICT = "conflict"  # another frame under a request_id in use (in flight or answered)


class ResultInFlight(FacepipeError):
    """Another worker holds the claim: fail the record so that it comes back later."""

    code = "result_in_flight"
    status = 409


def new_owner() -> str:
    """A claim's owner token: unique per claim, so only its holder completes or releases it."""
    return uuid.uuid4().hex


@dataclass(frozen=True)
class Entry:
    """A ledger item as read: ``frame`` is the admitted frame's digest (``None`` for a task
    that was never admitted, as S3-ingress tasks), ``until`` the lease end of a claim,
    ``result`` a done item's result JSON as posted (``None`` when it was not kept: completed
    before results were kept, or read without it)."""

    state: str
    frame: str | None = None
    owner: str | None = None
    until: float = 0.0
    result: str | None = None


def keepable(result: str | None) -> str | None:
    """``result`` when a ledger item can keep it (at most :data:`MAX_KEPT_RESULT_BYTES`)."""
    if result is None or len(result.encode()) > MAX_KEPT_RESULT_BYTES:
        return None
    return result


def admission_of(entry: Entry | None, digest: str) -> Admission:
    """What admitting ``digest`` means, given the request_id's live ledger entry."""
    if entry is None:
        return Admission.NEW
    if entry.frame != digest:
        return Admission.CONFLICT
    return Admission.ANSWERED if entry.state == DONE else Admission.RETRY


class ResultLedger(Protocol):
    """The ledger's operations (see the module doc); ``lease_s`` is how long a claim lasts."""

    lease_s: float

    def finished(self, request_ids: Iterable[str]) -> set[str]: ...

    def check(self, frames: Mapping[str, str]) -> dict[str, Admission]:
        """Read-only: what :meth:`admit` would answer for each request_id → frame digest."""
        ...

    def admit(self, request_id: str, digest: str) -> Admission: ...

    def withdraw(self, request_id: str, digest: str) -> None:
        """Undo an admission this caller made (its request was refused after all)."""
        ...

    def claim(self, request_id: str, owner: str) -> Claim: ...

    def complete(self, request_id: str, owner: str, status: str, result: str | None = None) -> bool:
        """Mark the result posted, keeping its JSON ``result`` when it fits (:func:`keepable`);
        ``False`` when ``owner``'s claim was lost (its lease ran out and another worker claimed
        the request_id since)."""
        ...

    def release(self, request_id: str, owner: str) -> None: ...

    def lookup(self, request_ids: Iterable[str]) -> dict[str, Entry]:
        """Read-only: the live entry of each request_id the ledger knows, done ones with their
        kept ``result``."""
        ...


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
        self._items: dict[str, tuple[Entry, float]] = {}  # request_id → (entry, expires_at)

    def _live(self, request_id: str) -> Entry | None:
        item = self._items.get(request_id)
        return item[0] if item is not None and item[1] > self.clock() else None

    def _put(self, request_id: str, entry: Entry) -> None:
        self._items[request_id] = (entry, self.clock() + self.retention_s)

    def finished(self, request_ids: Iterable[str]) -> set[str]:
        with self._lock:
            return {r for r in request_ids if (e := self._live(r)) is not None and e.state == DONE}

    def check(self, frames: Mapping[str, str]) -> dict[str, Admission]:
        with self._lock:
            return {r: admission_of(self._live(r), d) for r, d in frames.items()}

    def admit(self, request_id: str, digest: str) -> Admission:
        with self._lock:
            entry = self._live(request_id)
            if entry is None:
                self._put(request_id, Entry(ADMITTED, digest))
            return admission_of(entry, digest)

    def withdraw(self, request_id: str, digest: str) -> None:
        with self._lock:
            entry = self._live(request_id)
            if entry is not None and entry.state == ADMITTED and entry.frame == digest:
                del self._items[request_id]

    def claim(self, request_id: str, owner: str) -> Claim:
        with self._lock:
            entry = self._live(request_id)
            if entry is not None and entry.state == DONE:
                return Claim.DONE
            if entry is not None and entry.state == CLAIMED and entry.until > self.clock():
                return Claim.BUSY
            frame = entry.frame if entry is not None else None
            self._put(request_id, Entry(CLAIMED, frame, owner, self.clock() + self.lease_s))
            return Claim.NEW

    def complete(self, request_id: str, owner: str, status: str, result: str | None = None) -> bool:
        with self._lock:
            entry = self._live(request_id)
            if entry is None or entry.state != CLAIMED or entry.owner != owner:
                return False
            self._put(request_id, Entry(DONE, entry.frame, result=keepable(result)))
            return True

    def release(self, request_id: str, owner: str) -> None:
        with self._lock:
            entry = self._live(request_id)
            if entry is not None and entry.state == CLAIMED and entry.owner == owner:
                self._put(request_id, Entry(ADMITTED, entry.frame))

    def lookup(self, request_ids: Iterable[str]) -> dict[str, Entry]:
        with self._lock:
            return {r: e for r in request_ids if (e := self._live(r)) is not None}


class ResultSink(Protocol):
    """Where final results go (the response queue). ``send_result`` returns ``False`` when it
    posted nothing because the request already had its result, the :class:`Result` it posted
    when that is another form of it (a claim-checked result: the short message naming its S3
    copy); anything else means posted as it is."""

    def send_result(self, result: Result) -> bool | Result | None: ...


class FinalResults(Protocol):
    """A sink that knows which requests already have their final result
    (:class:`OncePerRequest`); ``send_result`` returns whether it posted."""

    def finished(self, request_ids: Iterable[str]) -> set[str]: ...

    def send_result(self, result: Result) -> bool: ...


class OncePerRequest:
    """A result sink that posts at most one final result per request_id (see the module doc).

    ``posted``, ``skipped`` and ``lease_lost`` count what it did; :meth:`send_result` returns
    whether it posted, and raises :class:`ResultInFlight` when another worker holds the claim.
    """

    def __init__(self, sink: ResultSink, ledger: ResultLedger) -> None:
        self.sink = sink
        self.ledger = ledger
        self.posted = 0
        self.skipped = 0
        self.lease_lost = 0

    def finished(self, request_ids: Iterable[str]) -> set[str]:
        return self.ledger.finished(request_ids)

    def send_result(self, result: Result) -> bool:
        owner = new_owner()
        claim = self.ledger.claim(result.request_id, owner)
        if claim is Claim.DONE:
            self.skipped += 1
            _log.info("duplicate: the result of this request_id is already out")
            return False
        if claim is Claim.BUSY:
            raise ResultInFlight(
                f"request {result.request_id}: another worker is posting its result"
            )
        try:
            posted = self.sink.send_result(result)
        except BaseException:
            self.ledger.release(result.request_id, owner)
            raise
        kept = (posted if isinstance(posted, Result) else result).to_json()
        if result.reply == "by_id":
            self._keep(result, owner, kept)
            self.posted += 1
            return True
        self.posted += 1
        try:
            if not self.ledger.complete(result.request_id, owner, result.status, kept):
                self.lease_lost += 1
                _log.warning(
                    "result posted after its claim's lease ran out: another worker may post it "
                    "too (the client keeps the first)"
                )
        except Exception:  # posted: a lost completion only risks a duplicate the client drops
            _log.warning("result posted but not recorded in the ledger", exc_info=True)
        return True

    def _keep(self, result: Result, owner: str, kept: str) -> None:
        """Complete a result wanted by request_id only: the ledger is where it goes, so a
        completion that fails or finds the claim lost raises (the send failed: retried) rather
        than let the request end without a result."""
        request_id = result.request_id
        if keepable(kept) is None:  # the response queue's sink claim-checks anything larger
            self.ledger.release(request_id, owner)
            raise RuntimeError(
                f"result {request_id} is {len(kept.encode())} bytes, more than the ledger keeps "
                f"({MAX_KEPT_RESULT_BYTES}), and was not claim-checked: it cannot be kept"
            )
        try:
            completed = self.ledger.complete(request_id, owner, result.status, kept)
        except BaseException:
            with contextlib.suppress(Exception):  # a completion that did apply is not undone
                self.ledger.release(request_id, owner)
            raise
        if not completed:
            self.lease_lost += 1
            raise ResultInFlight(
                f"request {request_id}: its claim's lease ran out before its result was kept; "
                "another worker is posting it"
            )

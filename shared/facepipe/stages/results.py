"""Final results by request_id: what the detection Function URL's ``/results`` answers.

A client asks for its own request_ids and gets, for each, its state and, once done, its result as
the stack posted it to the response queue, kept in the result ledger
(:mod:`facepipe.stages.ledger`), so it never receives, nor sifts past, another client's results.
The response queue gets every result too, unless its request asked for it by request_id only
(``"reply": "by_id"``, which the client sends when it reads here): the ledger then holds the
only copy, and nothing is left on the queue for no one.

States (:data:`facepipe.messages.ResultStateName`):

* ``done``: the final result is out, and ``result`` is it.
* ``pending``: the request was admitted and its result is not out yet: ask again later.
* ``unknown``: the ledger has no such request_id: never sent, refused, not in the ledger yet
  (an S3-ingress request appears when its result is being posted), or answered longer ago than
  the ledger keeps items (19 days). A client that sent it keeps asking until its timeout.
* ``on_queue``: done, but the ledger did not keep the result (it was completed before results
  were kept): only the response queue has it.
* ``deferred``: done, but its result did not fit in this answer (:data:`MAX_ANSWER_BYTES`):
  ask again.

Example:
    >>> from facepipe.stages.ledger import MemoryLedger
    >>> ledger = MemoryLedger()
    >>> ledger.claim("cam1-7", "me")
    <Claim.NEW: 'new'>
    >>> ledger.complete("cam1-7", "me", "no_face", '{"request_id": "cam1-7", "status": "no_face"}')
    True
    >>> [(s.request_id, s.state) for s in ResultReader(ledger).read(["cam1-7", "cam1-8"])]
    [('cam1-7', 'done'), ('cam1-8', 'unknown')]
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any, get_args

from facepipe.messages import MAX_RESULT_IDS, Reply, ResultState, ResultStateName
from facepipe.stages.ledger import DONE, ResultLedger

# A Function URL answers at most 6 MB (Lambda's synchronous response payload): the results of
# one answer stop short of that, the rest are ``deferred``.
MAX_ANSWER_BYTES = 5_000_000
ADVICE: dict[ResultStateName, str] = {
    "pending": "the request is in the pipeline and its result is not out yet: ask again later",
    "unknown": "no request with this request_id is known: not sent (or refused), not admitted "
    "yet, or answered more than 19 days ago",
    "on_queue": "the result is out but was not kept here (posted before results were kept): "
    "take it from the response queue",
    "deferred": "the result is out but did not fit in this answer: ask for it again",
}
_log = logging.getLogger(__name__)


class ResultReader:
    """Reads request_ids' states and results from ``ledger`` (see the module doc)."""

    def __init__(self, ledger: ResultLedger, max_answer_bytes: int = MAX_ANSWER_BYTES) -> None:
        self.ledger = ledger
        self.max_answer_bytes = max_answer_bytes

    def about(self) -> dict[str, Any]:
        """What ``GET /results`` answers: that results are offered by request_id, and how."""
        return {
            "results": "by request_id",
            "get": "/results/<request_id>",
            "post": '/results {"request_ids": [...]}',
            "max_ids": MAX_RESULT_IDS,
            "states": ["done", *ADVICE],
            # what a POSTed frame's "reply" may say: "by_id" keeps its result here only
            "reply": list(get_args(Reply)),
        }

    def read(self, request_ids: Sequence[str]) -> list[ResultState]:
        """The state of each of ``request_ids`` (at most :data:`MAX_RESULT_IDS`, each once), in
        their order; the results of done ones until the answer holds ``max_answer_bytes``."""
        ids = list(dict.fromkeys(request_ids))
        if len(ids) > MAX_RESULT_IDS:
            raise ValueError(f"{len(ids)} request_ids: at most {MAX_RESULT_IDS} at a time")
        entries = self.ledger.lookup(ids)
        room = self.max_answer_bytes
        states: list[ResultState] = []
        for request_id in ids:
            entry = entries.get(request_id)
            if entry is None:
                states.append(ResultState(request_id=request_id, state="unknown"))
            elif entry.state != DONE:
                states.append(ResultState(request_id=request_id, state="pending"))
            elif entry.result is None:
                states.append(ResultState(request_id=request_id, state="on_queue"))
            elif len(entry.result) > room and room < self.max_answer_bytes:  # one always fits
                states.append(ResultState(request_id=request_id, state="deferred"))
            else:
                room -= len(entry.result)
                states.append(self._done(request_id, entry.result))
        return states

    def one(self, request_id: str) -> ResultState:
        """The state of ``request_id``, with what to do about it unless it is done."""
        [state] = self.read([request_id])
        if state.state != "done":
            state.message = ADVICE[state.state]
        return state

    @staticmethod
    def _done(request_id: str, kept: str) -> ResultState:
        try:
            result = json.loads(kept)
        except ValueError:  # never written so; the client makes an error result of it
            _log.warning("the kept result of %s is not JSON", request_id)
            result = {"request_id": request_id}
        return ResultState(request_id=request_id, state="done", result=result)

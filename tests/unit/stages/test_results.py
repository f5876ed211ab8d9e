"""Results by request_id (what the Function URL's /results answers), read from the ledger."""

from __future__ import annotations

import json

import pytest

from facepipe.messages import MAX_RESULT_IDS, Result
from facepipe.stages.ledger import MemoryLedger
from facepipe.stages.results import ADVICE, ResultReader


def done(ledger: MemoryLedger, request_id: str, body: str | None = None) -> str:
    body = body if body is not None else Result(request_id=request_id, status="no_face").to_json()
    ledger.claim(request_id, "w")
    ledger.complete(request_id, "w", "no_face", body)
    return body


def test_every_state_in_the_order_asked_each_id_once() -> None:
    ledger = MemoryLedger()
    done(ledger, "a")
    ledger.admit("b", "f")  # sent, not out yet
    ledger.claim("c", "w")  # being posted
    ledger.claim("d", "w")
    ledger.complete("d", "w", "ok")  # completed before results were kept

    states = ResultReader(ledger).read(["e", "a", "b", "a", "c", "d"])

    assert [(s.request_id, s.state) for s in states] == [
        ("e", "unknown"),
        ("a", "done"),
        ("b", "pending"),
        ("c", "pending"),
        ("d", "on_queue"),
    ]
    assert states[1].result == json.loads(Result(request_id="a", status="no_face").to_json())
    assert [s.result for s in states if s.state != "done"] == [None] * 4
    assert all(s.message is None for s in states)  # a batch answer stays small


def test_results_past_the_answer_budget_are_deferred_but_one_always_comes() -> None:
    ledger = MemoryLedger()
    bodies = {r: done(ledger, r, json.dumps({"request_id": r, "pad": "x" * 400})) for r in "abc"}

    first = ResultReader(ledger, max_answer_bytes=900).read(["a", "b", "c"])
    alone = ResultReader(ledger, max_answer_bytes=10).read(["c", "a"])

    assert [s.state for s in first] == ["done", "done", "deferred"]
    assert len(bodies["a"]) + len(bodies["b"]) <= 900
    assert [s.state for s in alone] == ["done", "deferred"]  # over the budget alone: still sent


def test_one_lookup_says_what_to_do_about_its_state() -> None:
    ledger = MemoryLedger()
    ledger.admit("p", "f")
    reader = ResultReader(ledger)

    assert reader.one("p").message == ADVICE["pending"]
    assert "19 days" in (reader.one("nobody").message or "")
    assert reader.one("nobody").answer() == {
        "request_id": "nobody",
        "state": "unknown",
        "message": ADVICE["unknown"],
    }


def test_more_ids_than_one_lookup_reads_are_refused() -> None:
    reader = ResultReader(MemoryLedger())
    assert len(reader.read([f"r{i}" for i in range(MAX_RESULT_IDS)])) == MAX_RESULT_IDS
    with pytest.raises(ValueError, match="at most 100"):
        reader.read([f"r{i}" for i in range(MAX_RESULT_IDS + 1)])
    assert reader.about()["max_ids"] == MAX_RESULT_IDS

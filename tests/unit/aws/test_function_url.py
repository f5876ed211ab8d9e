"""The detection Function URL's /results routes: results by request_id, read from the ledger."""

from __future__ import annotations

import json
from typing import Any

import pytest

from facepipe.aws.function_url import answer
from facepipe.local.events import function_url_event
from facepipe.messages import MAX_RESULT_IDS, Result
from facepipe.stages.ledger import MemoryLedger
from facepipe.stages.results import ResultReader


class NoDetection:
    """A detection service that must not be called: /results never detects."""

    def handle_body(self, body: bytes) -> Any:
        raise AssertionError(f"detection called with {body[:40]!r}")


@pytest.fixture
def ledger() -> MemoryLedger:
    ledger = MemoryLedger()
    ledger.claim("cam#1", "w")
    ledger.complete("cam#1", "w", "no_face", Result(request_id="cam#1", status="no_face").to_json())
    ledger.admit("cam#2", "digest")
    return ledger


def call(
    ledger: MemoryLedger | None, method: str, path: str, body: Any = ""
) -> tuple[int, dict[str, Any]]:
    raw = body if isinstance(body, str) else json.dumps(body)
    event = function_url_event(raw, method=method, path=path)
    reader = ResultReader(ledger) if ledger is not None else None
    response = answer(NoDetection(), event, reader)  # type: ignore[arg-type]
    assert response["headers"]["content-type"] == "application/json"
    return response["statusCode"], json.loads(response["body"])


def test_one_result_by_id_with_the_state_as_http_status(ledger: MemoryLedger) -> None:
    status, done = call(ledger, "GET", "/results/cam%231")  # '#' percent-encoded, as it must be
    assert status == 200
    assert done["state"] == "done" and "message" not in done
    assert Result.model_validate(done["result"]) == Result(request_id="cam#1", status="no_face")

    status, pending = call(ledger, "GET", "/results/cam%232/")
    assert (status, pending["request_id"], pending["state"]) == (202, "cam#2", "pending")
    assert "not out yet" in pending["message"]

    status, unknown = call(ledger, "GET", "/results/nobody")
    assert (status, unknown["state"]) == (404, "unknown")
    assert "19 days" in unknown["message"]


def test_many_results_in_one_post_in_the_order_asked(ledger: MemoryLedger) -> None:
    status, body = call(ledger, "POST", "/results", {"request_ids": ["nobody", "cam#2", "cam#1"]})

    assert status == 200
    assert [(s["request_id"], s["state"]) for s in body["results"]] == [
        ("nobody", "unknown"),
        ("cam#2", "pending"),
        ("cam#1", "done"),
    ]
    assert body["results"][2]["result"]["status"] == "no_face"


def test_get_results_says_they_are_offered(ledger: MemoryLedger) -> None:
    status, body = call(ledger, "GET", "/results")
    assert status == 200
    assert body["max_ids"] == MAX_RESULT_IDS and "done" in body["states"]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code", "says"),
    [
        ("GET", "/results/bad%20id", "", 400, "invalid_request", "request_id must be"),
        ("GET", "/results/" + "r" * 129, "", 400, "invalid_request", "1-128 characters"),
        ("GET", "/results/a/b", "", 400, "invalid_request", "request_id"),
        ("POST", "/results", "{not json", 400, "invalid_request", "JSON"),
        ("POST", "/results", "", 400, "invalid_request", "empty"),
        ("POST", "/results", {"ids": ["a"]}, 400, "invalid_request", "request_ids"),
        ("POST", "/results", {"request_ids": []}, 400, "invalid_request", "1 to 100"),
        ("POST", "/results", {"request_ids": ["a b"]}, 400, "invalid_request", "request_ids.0"),
        (
            "POST",
            "/results",
            {"request_ids": [f"r{i}" for i in range(MAX_RESULT_IDS + 1)]},
            400,
            "invalid_request",
            "at most 100",
        ),
        ("DELETE", "/results/cam%231", "", 405, "method_not_allowed", "GET /results/"),
        ("POST", "/results/cam%231", "{}", 405, "method_not_allowed", "POST /results"),
        ("GET", "/", "", 405, "method_not_allowed", "GET /results/<request_id>"),
    ],
)
def test_bad_lookups_are_clear_4xx(
    ledger: MemoryLedger, method: str, path: str, body: Any, status: int, code: str, says: str
) -> None:
    got_status, got = call(ledger, method, path, body)
    assert (got_status, got["error"]) == (status, code)
    assert says in got["message"], got["message"]
    assert set(got) == {"error", "message"}


def test_a_function_that_offers_no_results_answers_405_there() -> None:
    """As before results were kept, and on a public URL (FACEPIPE_RESULTS_BY_ID=false): the
    client then takes the response queue."""
    status, body = call(None, "GET", "/results")
    assert (status, body["error"]) == (405, "method_not_allowed")


def test_results_by_id_are_offered_unless_turned_off() -> None:
    from facepipe.app.wiring import result_reader
    from facepipe.config import Settings
    from facepipe.stages.detect import DetectionService

    service = DetectionService(None, None, MemoryLedger())  # type: ignore[arg-type]
    assert isinstance(result_reader(Settings.from_env({}), service), ResultReader)
    off = Settings.from_env({"FACEPIPE_RESULTS_BY_ID": "false"})
    assert result_reader(off, service) is None

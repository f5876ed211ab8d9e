"""The detection function behind its Function URL (payload format 2.0): the event parsed, the
one call, the answer. JSON bodies; errors as
``{"error": <code>, "message": <what is wrong and how to fix it>}``.

Routes: ``POST`` (any path but ``/results``) detects the frames of the body; under
``/results`` the final results are read by request_id (:mod:`facepipe.stages.results`):
``GET /results`` says they are offered, ``GET /results/<request_id>`` answers one (200 ``done``
or ``on_queue``, 202 ``pending``, 404 ``unknown``), ``POST /results`` with
``{"request_ids": [...]}`` up to 100 at once (200, one state each).
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from facepipe.aws.powertools import logger, metrics, record_detection, record_results_read
from facepipe.errors import FacepipeError, InvalidRequest
from facepipe.messages import ResultsRequest, ResultState, check_request_id
from facepipe.stages.detect import DetectionService
from facepipe.stages.results import ResultReader

RESULTS_PATH = "/results"
# The HTTP status of a single lookup, by state (a batch is always 200, one state per id).
_STATE_STATUS = {"done": 200, "on_queue": 200, "pending": 202, "unknown": 404, "deferred": 200}


class _Http(BaseModel):
    method: str


class _RequestContext(BaseModel):
    http: _Http


class FunctionUrlEvent(BaseModel):
    """The parts of a Function URL event (payload format 2.0) detection reads."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    body: str | None = None
    is_base64_encoded: bool = Field(False, alias="isBase64Encoded")
    raw_path: str = Field("/", alias="rawPath")
    request_context: _RequestContext = Field(alias="requestContext")

    @property
    def method(self) -> str:
        return self.request_context.http.method.upper()

    def results_route(self) -> str | None:
        """What follows ``/results`` in the path (``""`` for ``/results`` itself), or None for
        every other path."""
        path = self.raw_path.rstrip("/") or "/"
        if path == RESULTS_PATH:
            return ""
        if path.startswith(RESULTS_PATH + "/"):
            return path[len(RESULTS_PATH) + 1 :]
        return None


def parse_event(event: Mapping[str, Any]) -> FunctionUrlEvent:
    """``event`` as a Function URL event; :class:`InvalidRequest` when it is not one."""
    try:
        return FunctionUrlEvent.model_validate(event)
    except ValidationError as exc:
        raise InvalidRequest(
            "the event is not a Function URL request (payload format 2.0); invoke the function "
            "through its Function URL"
        ) from exc


def request_body(event: Mapping[str, Any] | FunctionUrlEvent) -> bytes:
    """The body of a Function URL POST, as the bytes the client sent (Lambda base64-encodes
    binary bodies). Raises :class:`InvalidRequest`: 405 for another method, 400 for no body."""
    parsed = event if isinstance(event, FunctionUrlEvent) else parse_event(event)
    if parsed.method != "POST":
        raise InvalidRequest(
            'only POST is supported here: POST a JSON frame or {"frames": [...]}, or read '
            "results with GET /results/<request_id>",
            code="method_not_allowed",
            status=405,
        )
    if not parsed.body:
        raise InvalidRequest('the body is empty; POST a JSON frame or {"frames": [...]}')
    if not parsed.is_base64_encoded:
        return parsed.body.encode("utf-8", "surrogatepass")
    try:
        return base64.b64decode(parsed.body, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest("the event body is flagged base64 but is not base64") from exc


def json_response(status: int, body: Any) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"content-type": "application/json"},
        "body": json.dumps(body),
    }


def error_response(error: FacepipeError) -> dict[str, Any]:
    return json_response(error.status, error.to_dict())


def internal_error() -> dict[str, Any]:
    return json_response(
        500,
        {"error": "internal_error", "message": "the request failed on our side; retry later"},
    )


def results_answer(reader: ResultReader, event: FunctionUrlEvent, route: str) -> dict[str, Any]:
    """A request under ``/results`` → the reader → its answer (see the module doc)."""
    if event.method == "GET" and not route:  # a client asking whether results are offered
        record_results_read([])
        return json_response(200, reader.about())
    if event.method == "GET":
        try:
            request_id = check_request_id(unquote(route))
        except ValueError as exc:
            raise InvalidRequest(f"GET /results/<request_id>: {exc}") from exc
        state = reader.one(request_id)
        record_results_read([state])
        return json_response(_STATE_STATUS[state.state], state.answer())
    if event.method == "POST" and not route:
        states: list[ResultState] = reader.read(
            ResultsRequest.parse(request_body(event)).request_ids
        )
        record_results_read(states)
        return json_response(200, {"results": [s.answer() for s in states]})
    raise InvalidRequest(
        'read results with GET /results/<request_id> or POST /results {"request_ids": [...]}',
        code="method_not_allowed",
        status=405,
    )


def answer(
    service: DetectionService, event: Mapping[str, Any], results: ResultReader | None = None
) -> dict[str, Any]:
    """A Function URL event → the service → the HTTP answer: 202 with the report, 4xx naming
    what is wrong with the request, 500 when it failed on our side; metrics for each. Under
    ``/results``, the results by request_id from ``results`` instead (without it none are
    offered: 405 there, as to any GET)."""
    start = time.perf_counter()
    try:
        parsed = parse_event(event)
        route = parsed.results_route()
        if route is not None and results is not None:
            return results_answer(results, parsed, route)
        report = service.handle_body(request_body(parsed))
    except FacepipeError as exc:
        logger.warning(
            "request rejected",
            extra={"error": exc.code, "status": exc.status, "detail": exc.message},
        )
        metrics.add_metric(name="RequestsRejected", unit="Count", value=1)
        return error_response(exc)
    except Exception:
        logger.exception("detection failed")
        # A 500 is an answer, not a Lambda error: AWS/Lambda Errors never sees it, so it gets
        # its own metric and alarm (<stack>-detection-failures).
        metrics.add_metric(name="RequestsFailed", unit="Count", value=1)
        return internal_error()
    record_detection(report, round((time.perf_counter() - start) * 1000, 3))
    return json_response(202, report.body())

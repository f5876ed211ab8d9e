"""The detection function behind its Function URL (payload format 2.0): the event parsed, the
one call, the answer. JSON bodies; errors as
``{"error": <code>, "message": <what is wrong and how to fix it>}``."""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from facepipe.aws.powertools import logger, metrics, record_detection
from facepipe.errors import FacepipeError, InvalidRequest
from facepipe.stages.detect import DetectionService


class _Http(BaseModel):
    method: str


class _RequestContext(BaseModel):
    http: _Http


class FunctionUrlEvent(BaseModel):
    """The parts of a Function URL event (payload format 2.0) detection reads."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    body: str | None = None
    is_base64_encoded: bool = Field(False, alias="isBase64Encoded")
    request_context: _RequestContext = Field(alias="requestContext")


def request_body(event: Mapping[str, Any]) -> bytes:
    """The body of a Function URL POST, as the bytes the client sent (Lambda base64-encodes
    binary bodies). Raises :class:`InvalidRequest`: 405 for another method, 400 for no body."""
    try:
        parsed = FunctionUrlEvent.model_validate(event)
    except ValidationError as exc:
        raise InvalidRequest(
            "the event is not a Function URL request (payload format 2.0); invoke the function "
            "through its Function URL"
        ) from exc
    if parsed.request_context.http.method.upper() != "POST":
        raise InvalidRequest(
            'only POST is supported: POST a JSON frame or {"frames": [...]}',
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


def answer(service: DetectionService, event: Mapping[str, Any]) -> dict[str, Any]:
    """A Function URL event → the service → the HTTP answer: 202 with the report, 4xx naming
    what is wrong with the request, 500 when it failed on our side; metrics for each."""
    start = time.perf_counter()
    try:
        report = service.handle_body(request_body(event))
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

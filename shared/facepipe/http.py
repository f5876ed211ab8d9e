"""HTTP responses of the Function URL (payload format 2.0): JSON bodies, errors as
``{"error": <code>, "message": <what is wrong and how to fix it>}``."""

from __future__ import annotations

import json
from typing import Any

from facepipe.errors import FacepipeError


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

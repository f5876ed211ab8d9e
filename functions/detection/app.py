"""Detection Lambda: Function URL POST → MTCNN → one task per frame on the request queue.

The same image serves S3 ingress from its own module, ``ingest_app.py`` (the ``IngestFunction``'s
ImageConfig Command ``ingest_app.handler``), so that this function's cold start imports neither
Powertools' batch utilities nor the worker's per-record code.

Thin shell: parse the event, one call into ``facepipe``, record metrics, respond.
"""

from __future__ import annotations

import gc

# The init below (torch, boto3, the model) allocates about a million objects that live as long
# as the execution environment, and CPython's full collections would walk them again and again
# while it runs: 0.2 s of a 1.5 s detection init. Collection stays off until the init is done,
# and then its objects are frozen out of every later collection (see the README, Performance).
gc.disable()

import time
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from facepipe.config import Settings
from facepipe.errors import FacepipeError
from facepipe.http import error_response, internal_error, json_response, request_body
from facepipe.observability import logger, metrics, record_detection, tracer
from facepipe.services import detection_service

# Cold start: MTCNN weights and boto3 clients are loaded once per execution environment.
SERVICE = detection_service(Settings.from_env())
gc.freeze()  # the init's objects: out of every later collection
gc.enable()


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        report = SERVICE.handle_body(request_body(event))
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

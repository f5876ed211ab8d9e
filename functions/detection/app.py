"""Detection Lambda: Function URL POST → MTCNN → one task per frame on the request queue.

The same image serves S3 ingress: ``s3_handler`` (the ``IngestFunction``'s ImageConfig
Command) takes the ingest queue's batches of ``Object Created`` events for photos uploaded under
``input/`` and runs the same detection on each object.

Thin shells: parse the event, one call into ``facepipe``, record metrics, respond.
"""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

from facepipe.config import Settings
from facepipe.errors import FacepipeError
from facepipe.http import error_response, internal_error, json_response, request_body
from facepipe.observability import logger, metrics, record_detection, tracer
from facepipe.services import detection_service, ingest_service
from facepipe.worker.stages import IngestWork, Message, finish_lambda_batch

# Cold start: MTCNN weights and boto3 clients are loaded once per execution environment.
SETTINGS = Settings.from_env()
SERVICE = detection_service(SETTINGS)
INGEST = ingest_service(SETTINGS, SERVICE)  # the same detector, limits and queues
# A batch whose every record failed is reported as such, not raised: the same retries.
ingest_processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


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
        return internal_error()
    record_detection(report, round((time.perf_counter() - start) * 1000, 3))
    return json_response(202, report.body())


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def s3_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Ingest queue batch → each announced object detected → tasks / results; a record fails
    (retried, then dead-lettered) only when S3 or SQS did, or its body is no S3 event. The same
    per-message code as ``facepipe worker --stage detection`` (``IngestWork``)."""
    start = time.perf_counter()
    records = event.get("Records", [])
    work = IngestWork(
        INGEST, [Message(r["messageId"], r.get("receiptHandle", ""), r["body"]) for r in records]
    )

    return finish_lambda_batch(event, context, work, ingest_processor, start)

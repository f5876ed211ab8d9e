"""S3 ingress Lambda (the ``IngestFunction``, the detection image with ImageConfig Command
``ingest_app.handler``): the ingest queue's batches of ``Object Created`` events for photos
uploaded under ``input/`` → the same detection on each object → tasks / results.

Its own module, so that the Function URL function (``app.py``) does not import Powertools' batch
utilities nor build this service at its cold start.

Thin shell: one call into ``facepipe`` per batch, Powertools' BatchProcessor reports only the
failed records.
"""

from __future__ import annotations

import gc

# No garbage collection during the init; its objects frozen after it (as in detection's app.py).
gc.disable()

import time
from typing import Any

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

from facepipe.config import Settings
from facepipe.observability import logger, metrics, tracer
from facepipe.services import detection_service, ingest_service
from facepipe.worker.stages import IngestWork, Message, finish_lambda_batch

# Cold start: MTCNN weights and boto3 clients are loaded once per execution environment.
SETTINGS = Settings.from_env()
INGEST = ingest_service(SETTINGS, detection_service(SETTINGS))  # the detector, limits, queues
# A batch whose every record failed is reported as such, not raised: the same retries.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
gc.freeze()  # the init's objects: out of every later collection
gc.enable()


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Ingest queue batch → each announced object detected → tasks / results; a record fails
    (retried, then dead-lettered) only when S3 or SQS did, or its body is no S3 event. The same
    per-message code as ``facepipe worker --stage detection`` (``IngestWork``)."""
    start = time.perf_counter()
    records = event.get("Records", [])
    work = IngestWork(
        INGEST, [Message(r["messageId"], r.get("receiptHandle", ""), r["body"]) for r in records]
    )

    return finish_lambda_batch(event, context, work, processor, start)

"""Recognition Lambda: SQS batch of face tasks → one forward pass → results on the response queue.

Thin shell: the batch is prepared in one call into ``facepipe`` (all crops embedded together),
then Powertools' BatchProcessor posts each record's result and reports only the failed records.
``facepipe worker --stage recognition`` runs the same service and per-record code off Lambda.
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

from facepipe.aws.sqs import attribute_request_id
from facepipe.config import Settings
from facepipe.observability import logger, metrics, tracer
from facepipe.services import recognition_service
from facepipe.worker.stages import RecognitionWork, finish_lambda_batch

# Cold start: InceptionResnetV1 weights, the gallery and boto3 clients, once per environment.
SERVICE = recognition_service(Settings.from_env())
# A batch whose every record failed is reported as such, not raised: the same retries.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
gc.freeze()  # the init's objects: out of every later collection
gc.enable()


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    start = time.perf_counter()
    records = event.get("Records", [])
    # The same per-record code as `facepipe worker` (facepipe.worker.stages.RecognitionWork).
    work = RecognitionWork(
        SERVICE.prepare(
            {r["messageId"]: r["body"] for r in records},
            {r["messageId"]: attribute_request_id(r) for r in records},
        )
    )

    return finish_lambda_batch(event, context, work, processor, start)

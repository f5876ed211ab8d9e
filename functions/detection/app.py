"""Detection Lambda: Function URL POST → MTCNN → one task per frame on the request queue; and
``/results``: each request's final result by request_id, read from the ledger.

The same image serves S3 ingress from ``ingest_app.py`` (the IngestFunction's ImageConfig
Command), so that this function's cold start builds no ingest service.
"""

from facepipe.runtime import process_init

with process_init():  # once per execution environment: MTCNN weights, boto3 clients
    from typing import Any

    from aws_lambda_powertools.utilities.typing import LambdaContext

    from facepipe.app.wiring import detection_service, result_reader
    from facepipe.aws.function_url import answer
    from facepipe.aws.powertools import logger, metrics, tracer
    from facepipe.config import Settings

    SETTINGS = Settings.from_env()
    SERVICE = detection_service(SETTINGS)
    RESULTS = result_reader(SETTINGS, SERVICE)  # GET /results/<request_id>; None: not offered


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return answer(SERVICE, event, RESULTS)  # a Function URL event; 202, 200 (/results), 4xx, 500

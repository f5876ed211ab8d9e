"""S3 ingress Lambda (the IngestFunction: the detection image, ImageConfig Command
``ingest_app.handler``): ingest-queue batches of uploaded photos → the same detection →
tasks / results; ``facepipe worker --stage detection`` drives the same batch off Lambda."""

from facepipe.runtime import process_init

with process_init():  # once per execution environment: MTCNN weights, boto3 clients
    from typing import Any

    from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from facepipe.app.wiring import ingest_service
    from facepipe.aws.powertools import finish_lambda_batch, logger, metrics, tracer
    from facepipe.config import Settings

    SERVICE = ingest_service(Settings.from_env())
    # A batch whose every record failed is reported as such, not raised: the same retries.
    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return finish_lambda_batch(event, context, SERVICE, processor)  # only failed records back

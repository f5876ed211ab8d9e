"""The one place Logger, Metrics and Tracer live; handlers and workers import them from here,
and the Lambda's batch driver (:func:`finish_lambda_batch`).

Logs carry request_ids, counts and timings, never image bytes, crops or embeddings.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, get_args

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from facepipe.messages import Result, ResultState
from facepipe.stages.batch import (
    Batch,
    BatchService,
    Ingested,
    IngestStatus,
    IngestSummary,
    Message,
)
from facepipe.stages.detect import DetectionReport

# The template sets POWERTOOLS_SERVICE_NAME per function (detection, recognition) and
# POWERTOOLS_METRICS_NAMESPACE; outside Lambda both default to "facepipe".
SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "facepipe")
logger = Logger(service=SERVICE)
NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "facepipe")
metrics = Metrics(namespace=NAMESPACE)

F = TypeVar("F", bound=Callable[..., Any])
# Powertools keeps one metric set per process, whatever the Metrics instance: a worker running
# both stages adds and flushes a batch's metrics under this lock, so batches never mix.
METRICS_LOCK = threading.RLock()


class NoTracer:
    """Stands in for Powertools' ``Tracer`` when tracing is off: its decorators return the
    function unchanged. Powertools' own ``Tracer`` imports the X-Ray SDK even when disabled,
    ~0.36 s of every cold start, so it is only built when tracing is on."""

    def capture_lambda_handler(self, fn: F) -> F:
        return fn

    def capture_method(self, fn: F) -> F:
        return fn


def tracing_enabled(env: dict[str, str] | None = None) -> bool:
    """Tracing is on unless ``POWERTOOLS_TRACE_DISABLED`` is true (the template sets it from
    its ``Tracing`` parameter; local runs set it to true)."""
    value = (env if env is not None else os.environ).get("POWERTOOLS_TRACE_DISABLED", "false")
    return value.strip().lower() not in ("1", "true", "yes", "on")


def make_tracer() -> Any:
    if not tracing_enabled():
        return NoTracer()
    from aws_lambda_powertools import Tracer

    return Tracer(service=SERVICE)


tracer = make_tracer()


def record_detection(report: DetectionReport, elapsed_ms: float) -> None:
    """Metrics and one log line for a detection request."""
    ids = [a.request_id for a in report.accepted]
    logger.append_keys(request_id=ids[0] if len(ids) == 1 else ids)
    metrics.add_metric(name="FramesReceived", unit=MetricUnit.Count, value=len(report.accepted))
    metrics.add_metric(name="FacesDetected", unit=MetricUnit.Count, value=report.faces)
    no_face = sum(1 for a in report.accepted if a.status == "no_face")
    metrics.add_metric(name="FramesWithoutFaces", unit=MetricUnit.Count, value=no_face)
    metrics.add_metric(name="DetectionLatency", unit=MetricUnit.Milliseconds, value=elapsed_ms)
    logger.info(
        "frames accepted",
        extra={
            "frames": [
                {"request_id": a.request_id, "status": a.status, "faces": a.faces}
                for a in report.accepted
            ],
            "faces": report.faces,
            "elapsed_ms": elapsed_ms,
        },
    )


def record_results_read(states: Sequence[ResultState]) -> None:
    """Metrics and one log line for a lookup of results by request_id (``/results``)."""
    done = sum(1 for s in states if s.state == "done")
    metrics.add_metric(name="ResultsAskedFor", unit=MetricUnit.Count, value=len(states))
    metrics.add_metric(name="ResultsRead", unit=MetricUnit.Count, value=done)
    counts: dict[str, int] = {}
    for state in states:
        counts[state.state] = counts.get(state.state, 0) + 1
    logger.info(
        "results read",
        extra={"request_ids": [s.request_id for s in states], "states": counts},
    )


def record_results(
    results: Sequence[Result],
    failed: int,
    elapsed_ms: float,
    *,
    duplicates: int = 0,
    gallery_stale: str | None = None,
) -> None:
    """Metrics and one log line for a recognition batch (``duplicates``: records whose request
    already had its result, so nothing was posted; ``gallery_stale``: why the gallery matched
    against is not the stored one, when a reload failed: ``GalleryStale`` 1, alarmed)."""
    faces = [f for r in results for f in r.faces]
    metrics.add_metric(name="FramesRecognized", unit=MetricUnit.Count, value=len(results))
    metrics.add_metric(name="FacesRecognized", unit=MetricUnit.Count, value=len(faces))
    unknown = sum(1 for f in faces if f.name == "unknown")
    metrics.add_metric(name="UnknownFaces", unit=MetricUnit.Count, value=unknown)
    metrics.add_metric(name="RecordsFailed", unit=MetricUnit.Count, value=failed)
    metrics.add_metric(name="DuplicatesSkipped", unit=MetricUnit.Count, value=duplicates)
    metrics.add_metric(name="RecognitionLatency", unit=MetricUnit.Milliseconds, value=elapsed_ms)
    metrics.add_metric(name="GalleryStale", unit=MetricUnit.Count, value=int(bool(gallery_stale)))
    for result in results:
        wait = result.timings_ms.get("queue_wait")
        if wait is not None:
            metrics.add_metric(name="QueueWait", unit=MetricUnit.Milliseconds, value=wait)
    logger.info(
        "batch recognized",
        extra={
            "request_ids": [r.request_id for r in results],
            "faces": len(faces),
            "failed": failed,
            "duplicates": duplicates,
            "elapsed_ms": elapsed_ms,
        }
        | ({"gallery_stale": gallery_stale} if gallery_stale else {}),
    )


def record_ingest(done: Sequence[Ingested], failed: int, elapsed_ms: float) -> None:
    """Metrics and one log line for an S3-ingress batch (uploaded photos)."""
    counts = {status: sum(1 for d in done if d.status == status) for status in _INGEST_STATUSES}
    metrics.add_metric(name="ObjectsIngested", unit=MetricUnit.Count, value=len(done))
    metrics.add_metric(
        name="FacesDetected", unit=MetricUnit.Count, value=sum(d.faces for d in done)
    )
    metrics.add_metric(name="FramesWithoutFaces", unit=MetricUnit.Count, value=counts["no_face"])
    metrics.add_metric(name="ObjectsRejected", unit=MetricUnit.Count, value=counts["error"])
    metrics.add_metric(name="RecordsFailed", unit=MetricUnit.Count, value=failed)
    metrics.add_metric(name="DuplicatesSkipped", unit=MetricUnit.Count, value=counts["duplicate"])
    metrics.add_metric(name="DetectionLatency", unit=MetricUnit.Milliseconds, value=elapsed_ms)
    logger.info(
        "objects ingested",
        extra={
            "objects": [
                {"request_id": d.request_id, "key": d.key, "status": d.status, "faces": d.faces}
                | ({"error": d.error} if d.error else {})
                for d in done
            ],
            "failed": failed,
            "elapsed_ms": elapsed_ms,
        },
    )


_INGEST_STATUSES: tuple[IngestStatus, ...] = get_args(IngestStatus)


def flush_metrics(service: str) -> None:
    """Write the metrics added so far as one EMF line with the dimension ``service`` (a worker's
    stage: ``detection`` | ``recognition``, the functions' own, so the dashboard counts both).
    Outside Lambda nothing flushes at the end of an invocation: the worker calls this per batch,
    holding :data:`METRICS_LOCK` around adding and flushing."""
    if metrics.metric_set:  # Powertools warns about an empty flush
        Metrics(namespace=NAMESPACE, service=service).flush_metrics()


def finish_message(batch: Batch, message_id: str) -> None:
    """``batch.finish(message_id)``; a failure is logged (with the message's request_id, and
    the object's key for S3 ingress) and raised again: the message fails alone."""
    try:
        batch.finish(message_id)
    except Exception as exc:
        logger.warning(
            "record failed",
            extra=batch.log_keys(message_id) | {"error": type(exc).__name__, "detail": str(exc)},
        )
        raise


def record_batch(batch: Batch, failed: int, elapsed_ms: float) -> None:
    """Metrics and one log line for a finished batch, by its stage."""
    summary = batch.summary()
    if isinstance(summary, IngestSummary):
        record_ingest(summary.done, failed, elapsed_ms)
    else:
        record_results(
            summary.results,
            failed,
            elapsed_ms,
            duplicates=summary.duplicates,
            gallery_stale=summary.gallery_stale,
        )


def finish_lambda_batch(
    event: dict[str, Any], context: Any, service: BatchService, processor: Any
) -> dict[str, Any]:
    """An SQS-triggered function's batch: every record read once into a
    :class:`~facepipe.stages.batch.Message`, the batch prepared in one call, then Powertools'
    batch ``processor`` finishes each record and reports only the failed ones
    (ReportBatchItemFailures); then the batch is recorded."""
    from aws_lambda_powertools.utilities.batch import process_partial_response

    start = time.perf_counter()
    batch = service.prepare([Message.from_record(r) for r in event.get("Records", [])])
    response = process_partial_response(
        event=event,
        record_handler=lambda record: finish_message(batch, record.message_id),
        processor=processor,
        context=context,
    )
    failed = len(response.get("batchItemFailures", []))
    record_batch(batch, failed, round((time.perf_counter() - start) * 1000, 3))
    return dict(response)

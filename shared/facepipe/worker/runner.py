"""A worker process: one :class:`~facepipe.worker.consumer.QueueConsumer` thread per stage, the
health endpoint, and a ticker that renews visibility and writes the heartbeat line.

``facepipe worker`` (:mod:`facepipe.cli.worker_cmd`) builds one from the settings, starts it and
calls :meth:`Worker.shutdown` on SIGTERM/SIGINT: the batch in flight may finish within
``FACEPIPE_WORKER_GRACE_SECONDS``; what is still held then is released for another worker.

Example:
    >>> worker = Worker(settings, [recognition_stage(settings)])  # doctest: +SKIP
    >>> worker.start(); ...; worker.shutdown()
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from facepipe.aws.clients import client
from facepipe.aws.powertools import logger
from facepipe.config import Settings
from facepipe.lifecycle import Service
from facepipe.stages.batch import QueueStage
from facepipe.worker.consumer import ConsumerOptions, QueueConsumer
from facepipe.worker.health import HealthServer

TICK_SECONDS = 1.0


def torch_device(requested: str) -> str:
    """The device ``FACEPIPE_DEVICE`` resolves to here (``auto``: CUDA when present)."""
    if requested != "auto":
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class Worker(Service):
    """Consumes every stage's queue on its own thread until :meth:`shutdown`.

    Args:
        settings: ``FACEPIPE_WORKER_*`` (polling, batching, visibility, grace, health,
            heartbeat) and the AWS endpoint/region for the SQS client.
        stages: what to run (:func:`~facepipe.app.wiring.build_stages`).
        sqs: an SQS client; default: one built from ``settings``.
    """

    def __init__(self, settings: Settings, stages: Sequence[QueueStage], sqs: Any = None) -> None:
        self.settings = settings
        sqs = sqs if sqs is not None else client("sqs", settings)
        options = ConsumerOptions.from_settings(settings)
        self.consumers = [QueueConsumer(sqs, stage, options) for stage in stages]
        self.health = HealthServer(
            self.report, settings.worker_health_host, settings.worker_health_port
        )
        self.device = torch_device(settings.device)
        self.stopping = False
        self._threads: list[threading.Thread] = []
        self._ticker_stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self.started_at = time.time()

    # --- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        self.health.start()
        for consumer in self.consumers:
            thread = threading.Thread(
                target=consumer.run, name=f"worker-{consumer.stage.name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        self._ticker = threading.Thread(target=self._tick, name="worker-ticker", daemon=True)
        self._ticker.start()
        logger.info(
            "worker started",
            extra={
                "stages": [c.stage.name for c in self.consumers],
                "queues": [c.stage.queue_url for c in self.consumers],
                "device": self.device,
                "health_url": self.health.url,
                "batch_size": self.settings.worker_batch_size,
                "wait_seconds": self.settings.worker_wait_seconds,
                "visibility_timeout": self.settings.worker_visibility_timeout,
            },
        )

    def stop(self) -> None:
        self.shutdown()

    def shutdown(self, grace_seconds: float | None = None) -> None:
        """Stop polling, give the batches in flight ``grace_seconds`` (default
        ``FACEPIPE_WORKER_GRACE_SECONDS``) to finish, release whatever is still held, and stop
        the ticker and the health endpoint. Returns when nothing is held any more."""
        if self.stopping and not self._threads:
            return
        grace = self.settings.worker_grace_seconds if grace_seconds is None else grace_seconds
        self.stopping = True
        logger.info("worker stopping", extra={"grace_seconds": grace, **self._stats()})
        for consumer in self.consumers:
            consumer.request_stop()
        deadline = time.monotonic() + grace
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        unfinished = [t.name for t in self._threads if t.is_alive()]
        for consumer in self.consumers:
            consumer.abandon()  # past the grace period: hand the rest to another worker
        self._threads = []
        self._ticker_stop.set()
        if self._ticker is not None:
            self._ticker.join(5)
        self.health.stop()
        logger.info(
            "worker stopped",
            extra={"unfinished_at_grace": unfinished, **self._stats()},
        )

    # --- health and heartbeat ------------------------------------------------------------------
    def report(self) -> tuple[int, dict[str, Any]]:
        """``/healthz``: 503 while stopping, or when a stage failed or made no progress for
        ``FACEPIPE_WORKER_STUCK_SECONDS``."""
        stages = {c.stage.name: c.snapshot() for c in self.consumers}
        stuck = [
            name
            for name, s in stages.items()
            if s["state"] == "failed"
            or (
                s["state"] in ("polling", "processing")
                and s["seconds_since_progress"] > self.settings.worker_stuck_seconds
            )
        ]
        status = "stopping" if self.stopping else "stuck" if stuck else "ok"
        body = {
            "status": status,
            "stage": self.settings.stage,
            "device": self.device,
            "started_at": self.started_at,
            "stuck": stuck,
            "stages": stages,
        }
        return (200 if status == "ok" else 503), body

    def _stats(self) -> dict[str, Any]:
        return {"stages": {c.stage.name: c.snapshot() for c in self.consumers}}

    def _tick(self) -> None:
        """Every second: renew the visibility of long batches; every
        ``FACEPIPE_WORKER_HEARTBEAT_SECONDS``: one heartbeat line."""
        next_beat = time.monotonic() + self.settings.worker_heartbeat_seconds
        while not self._ticker_stop.wait(TICK_SECONDS):
            for consumer in self.consumers:
                try:
                    consumer.extend_visibility()
                except Exception:
                    logger.warning("visibility renewal failed", exc_info=True)
            if time.monotonic() >= next_beat:
                next_beat += self.settings.worker_heartbeat_seconds
                status, body = self.report()
                logger.info(
                    "worker heartbeat",
                    extra={"status": body["status"], "http_status": status, **self._stats()},
                )

"""``facepipe worker --stage recognition|detection|both``: consume the pipeline's queues from a
long-running process (EC2/ECS, GPU or CPU) until SIGTERM/SIGINT, then exit 0.

Logs (Powertools JSON) and metrics (EMF, one line per batch) go to stdout, as a container's log
driver expects; the library's warnings go to stderr. A second signal during the grace period
stops waiting and releases what is still held at once.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from types import FrameType
from typing import Any

from facepipe.cli.options import add_settings_flags, settings_from_args


def register(sub: Any) -> None:
    p = sub.add_parser(
        "worker",
        help="consume the pipeline's queues outside Lambda (EC2/ECS)",
        description="Long-polls the stage's queue, processes batches with the recognition "
        "function's own code (partial failures: failed messages stay for redelivery, then the "
        "DLQ), renews visibility during long batches, serves GET /healthz, writes a heartbeat "
        "line, and on SIGTERM/SIGINT finishes the batch in flight (or releases it after the "
        "grace period) and exits 0. Settings: FACEPIPE_WORKER_* and the queue/bucket/ledger "
        "variables the functions get (docs/uploads-and-workers.md).",
    )
    add_settings_flags(p, "models", "matching", "stack", "aws", "worker")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from facepipe.app.wiring import build_stages
    from facepipe.runtime import process_init
    from facepipe.worker.runner import Worker

    settings = settings_from_args(args)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="facepipe: %(message)s")
    stop = threading.Event()
    signals = {"count": 0}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        signals["count"] += 1
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with process_init():  # the worker's init, as a function's: loads the models
            worker = Worker(settings, build_stages(settings))
        if stop.is_set():  # signalled while loading: nothing was received yet
            return 0
        worker.start()
        while not stop.wait(0.5):
            pass
        grace = threading.Thread(target=worker.shutdown, name="worker-shutdown", daemon=True)
        grace.start()
        while grace.is_alive():
            grace.join(0.2)
            if signals["count"] > 1:  # asked twice: release everything now
                worker.shutdown(grace_seconds=0)
                break
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0

"""End-to-end benchmark: N requests through a stack (the local one by default), measured from the
client: latency from the POST to the result on the response queue, throughput, per-stage time from
the results' own timings, and lost requests (which must be 0)."""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from facepipe.client.http import RetryPolicy, Sender
from facepipe.client.results import Received, ResultPoller
from facepipe.client.sources import Frame, new_run_id
from facepipe.client.stack import Endpoints
from facepipe.config import Settings

if TYPE_CHECKING:
    from facepipe.local.stack import LocalStack

# Per-stage time from each result's timings_ms: what each stage spent on that request.
STAGES = {
    "detection": ("decode", "detect"),
    "queue_wait": ("queue_wait",),
    "recognition": ("embed", "match"),
}


@dataclass
class Trace:
    """One request: when the client started its POST, got the answer, and got its result."""

    request_id: str
    posted: float = 0.0
    answered: float = 0.0
    accepted: bool = False
    received: float | None = None
    timings: dict[str, float] = field(default_factory=dict)
    status: str = ""


def percentiles(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan"), "mean": float("nan")}
    arr = np.asarray(values, dtype=np.float64)
    p50, p95, p99 = np.percentile(arr, [50, 95, 99])
    return {
        "p50": round(float(p50), 2),
        "p95": round(float(p95), 2),
        "p99": round(float(p99), 2),
        "mean": round(float(arr.mean()), 2),
    }


@contextlib.contextmanager
def local_endpoints(settings: Settings) -> Iterator[tuple[Endpoints, LocalStack]]:
    """Start the local stack for the run (its endpoints, and the stack for its memory figures)
    and stop it afterwards."""
    from facepipe.local.stack import LocalStack

    with LocalStack(settings) as stack:
        info = stack.info()
        endpoints = Endpoints(
            function_url=info["function_url"],
            response_queue_url=info["response_queue_url"],
            endpoint_url=info["endpoint_url"],
            region=info["region"],
        )
        yield endpoints, stack


def run_e2e(
    endpoints: Endpoints,
    images: Sequence[Path],
    *,
    n: int,
    concurrency: int,
    timeout: float,
    retries: int = 5,
    sign: Any = "auto",
) -> dict[str, Any]:
    """Send ``n`` requests (the images, cycled) and wait for every result."""
    run = new_run_id()
    payloads = [(p.name, p.read_bytes()) for p in images]
    frames = [
        Frame(f"bench.{run}.{i:05d}", name, data, source=name)
        for i, (name, data) in zip(range(n), itertools.cycle(payloads), strict=False)
    ]
    traces = {f.request_id: Trace(f.request_id) for f in frames}
    poller = ResultPoller(
        endpoints.sqs(), endpoints.response_queue_url, fetch=endpoints.fetch_result
    )

    def on_result(received: Received) -> None:
        trace = traces[received.result.request_id]
        trace.received = time.perf_counter()
        trace.timings = dict(received.result.timings_ms)
        trace.status = received.result.status

    reports: list[Any] = []
    poll_thread = threading.Thread(
        target=lambda: reports.append(
            poller.poll(list(traces), timeout=timeout, on_result=on_result)
        ),
        daemon=True,
    )
    sender = Sender(
        endpoints.function_url,
        concurrency=concurrency,
        retry=RetryPolicy(retries=retries),
        sign=sign,
        region=endpoints.region,
    )

    def post(frame: Frame) -> None:
        trace = traces[frame.request_id]
        trace.posted = time.perf_counter()
        outcome = sender.post([frame])[0]
        trace.answered = time.perf_counter()
        trace.accepted = outcome.accepted

    start = time.perf_counter()
    poll_thread.start()
    with sender, ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(post, frames))
    poll_thread.join(timeout + 30)
    done = [t for t in traces.values() if t.received is not None]
    end = max((t.received for t in done if t.received), default=time.perf_counter())
    report = reports[0] if reports else None
    stage = {
        name: percentiles([sum(t.timings.get(k, 0.0) for k in keys) for t in done if t.timings])
        for name, keys in STAGES.items()
    }
    return {
        "requests": n,
        "concurrency": concurrency,
        "accepted": sum(t.accepted for t in traces.values()),
        "results": len(done),
        "lost": n - len(done),
        "duplicates": report.duplicates if report else 0,
        "statuses": {s: sum(t.status == s for t in done) for s in ("ok", "no_face", "error")},
        "e2e_ms": percentiles([(t.received - t.posted) * 1000 for t in done if t.received]),
        "http_ms": percentiles([(t.answered - t.posted) * 1000 for t in traces.values()]),
        "stage_ms": stage,
        "wall_s": round(end - start, 3),
        "throughput_rps": round(len(done) / max(end - start, 1e-9), 3),
        "images": [p.name for p in images],
    }


def table(summary: dict[str, Any]) -> str:
    lines = [
        f"end-to-end: {summary['requests']} requests, concurrency {summary['concurrency']}: "
        f"{summary['results']} results, lost {summary['lost']}, "
        f"{summary['throughput_rps']} requests/s over {summary['wall_s']} s",
        f"{'measure':<22}{'p50':>10}{'p95':>10}{'p99':>10}{'mean':>10}   (ms)",
    ]
    rows = [("end to end", summary["e2e_ms"]), ("HTTP answer", summary["http_ms"])]
    rows += [(f"stage: {k}", v) for k, v in summary["stage_ms"].items()]
    for name, p in rows:
        lines.append(f"{name:<22}{p['p50']:>10}{p['p95']:>10}{p['p99']:>10}{p['mean']:>10}")
    for name, mb in summary.get("peak_memory_mb", {}).items():
        lines.append(f"peak memory: {name}: {'unknown' if mb is None else f'{mb} MiB'}")
    return "\n".join(lines)

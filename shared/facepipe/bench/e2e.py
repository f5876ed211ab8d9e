"""End-to-end benchmark: N requests through a stack (the local one by default), measured from the
client: latency from the POST to the result (by request_id from the Function URL, or off the
response queue), throughput, per-stage time from the results' own timings, lost requests (which
must be 0) and, with several concurrent clients, results taken by the wrong client (0 too) and
the receives each result took."""

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
from facepipe.client.results import PollReport, Received
from facepipe.client.sources import Frame, new_run_id
from facepipe.client.stack import Endpoints
from facepipe.client.url_results import reply_for, result_poller
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
    clients: int = 1,
    results_via: Any = "auto",
) -> dict[str, Any]:
    """Send ``n`` requests (the images, cycled) from each of ``clients`` concurrent clients and
    wait for every result. Each client polls for its own request_ids only, through the poller
    ``results_via`` picks (:func:`~facepipe.client.url_results.result_poller`), while it sends;
    ``wrong_client`` counts results a client got for another's ids (it must be 0), and
    ``receives_per_result`` what getting them took (response-queue receives, or requests to the
    Function URL's ``/results``)."""
    settings = Settings.from_env(
        {}, retries=retries, sign=sign, region=endpoints.region, results_via=results_via
    )
    payloads = [(p.name, p.read_bytes()) for p in images]
    runs = [_Client(endpoints, settings, payloads, n, concurrency) for _ in range(clients)]
    start = time.perf_counter()
    with ThreadPoolExecutor(clients, thread_name_prefix="bench-client") as pool:
        reports = list(pool.map(lambda run: run.go(timeout), runs))
    traces = [t for run in runs for t in run.traces.values()]
    done = [t for t in traces if t.received is not None]
    end = max((t.received for t in done if t.received), default=time.perf_counter())
    stage = {
        name: percentiles([sum(t.timings.get(k, 0.0) for k in keys) for t in done if t.timings])
        for name, keys in STAGES.items()
    }
    receives = sum(r.receives for r in reports if r is not None)
    return {
        "requests": n * clients,
        "clients": clients,
        "concurrency": concurrency,
        "accepted": sum(t.accepted for t in traces),
        "results": len(done),
        "lost": n * clients - len(done),
        "duplicates": sum(r.duplicates for r in reports if r is not None),
        "wrong_client": sum(run.wrong for run in runs),
        "results_via": next((r.via for r in reports if r is not None), ""),
        "receives": receives,
        "receives_per_result": round(receives / max(len(done), 1), 3),
        "statuses": {s: sum(t.status == s for t in done) for s in ("ok", "no_face", "error")},
        "e2e_ms": percentiles([(t.received - t.posted) * 1000 for t in done if t.received]),
        "http_ms": percentiles([(t.answered - t.posted) * 1000 for t in traces]),
        "stage_ms": stage,
        "wall_s": round(end - start, 3),
        "throughput_rps": round(len(done) / max(end - start, 1e-9), 3),
        "images": [p.name for p in images],
    }


class _Client:
    """One client of :func:`run_e2e`: its own run id, sender and poller."""

    def __init__(
        self,
        endpoints: Endpoints,
        settings: Settings,
        payloads: Sequence[tuple[str, bytes]],
        n: int,
        concurrency: int,
    ) -> None:
        run = new_run_id()
        self.frames = [
            Frame(f"bench.{run}.{i:05d}", name, data, source=name)
            for i, (name, data) in zip(range(n), itertools.cycle(payloads), strict=False)
        ]
        self.traces = {f.request_id: Trace(f.request_id) for f in self.frames}
        self.wrong = 0
        self.poller = result_poller(endpoints, settings)
        self.sender = Sender(
            endpoints.function_url,
            concurrency=concurrency,
            retry=RetryPolicy(retries=settings.retries),
            sign=settings.sign,
            region=endpoints.region,
            reply=reply_for(self.poller),  # read by request_id: wanted by request_id only
        )
        self.concurrency = concurrency

    def on_result(self, received: Received) -> None:
        trace = self.traces.get(received.result.request_id)
        if trace is None:  # another client's result: must never happen
            self.wrong += 1
            return
        trace.received = time.perf_counter()
        trace.timings = dict(received.result.timings_ms)
        trace.status = received.result.status

    def post(self, frame: Frame) -> None:
        trace = self.traces[frame.request_id]
        trace.posted = time.perf_counter()
        outcome = self.sender.post([frame])[0]
        trace.answered = time.perf_counter()
        trace.accepted = outcome.accepted

    def go(self, timeout: float) -> PollReport | None:
        """Send every frame while polling for their results → the poll's report."""
        reports: list[PollReport] = []
        poll_thread = threading.Thread(
            target=lambda: reports.append(
                self.poller.poll(list(self.traces), timeout=timeout, on_result=self.on_result)
            ),
            daemon=True,
        )
        poll_thread.start()
        with self.sender, ThreadPoolExecutor(self.concurrency) as pool:
            list(pool.map(self.post, self.frames))
        poll_thread.join(timeout + 30)
        if reports:
            self.wrong += sum(1 for r in reports[0].results if r not in self.traces)
        return reports[0] if reports else None


def table(summary: dict[str, Any]) -> str:
    lines = [
        f"end-to-end: {summary['requests']} requests from {summary.get('clients', 1)} clients, "
        f"concurrency {summary['concurrency']} each: {summary['results']} results, lost "
        f"{summary['lost']}, wrong client {summary.get('wrong_client', 0)}, "
        f"{summary['throughput_rps']} requests/s over {summary['wall_s']} s",
        f"results via {summary.get('results_via') or '?'}: {summary.get('receives', 0)} "
        f"receives, {summary.get('receives_per_result', 0)} per result",
        f"{'measure':<22}{'p50':>10}{'p95':>10}{'p99':>10}{'mean':>10}   (ms)",
    ]
    rows = [("end to end", summary["e2e_ms"]), ("HTTP answer", summary["http_ms"])]
    rows += [(f"stage: {k}", v) for k, v in summary["stage_ms"].items()]
    for name, p in rows:
        lines.append(f"{name:<22}{p['p50']:>10}{p['p95']:>10}{p['p99']:>10}{p['mean']:>10}")
    for name, mb in summary.get("peak_memory_mb", {}).items():
        lines.append(f"peak memory: {name}: {'unknown' if mb is None else f'{mb} MiB'}")
    return "\n".join(lines)

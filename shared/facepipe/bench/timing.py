"""Timing helpers shared by the benchmarks: medians after warm-up, and the machine's float32
matmul peak that throughput is compared with."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

# InceptionResnetV1 forward pass on one 160×160 face, in GFLOP (multiply-add = 2 FLOP).
FACENET_GFLOP_PER_FACE = 2.84


def median_ms(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn`` in milliseconds over ``repeats`` runs after ``warmup``."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def sgemm_ms(n: int = 2048, repeats: int = 5, device: str = "cpu") -> float:
    """Median milliseconds of a float32 ``torch.matmul`` of two n×n matrices (2n³ FLOP) on
    ``device``: on the CPU with torch's configured threads; on CUDA in strict float32 (TF32
    off for the measurement: the float32 peak, not the tensor cores'), each run synchronised."""
    import torch

    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    if not device.startswith("cuda"):
        return median_ms(lambda: torch.matmul(a, b), repeats, warmup=2)
    allowed = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        return median_ms(synced(lambda: torch.matmul(a, b), device), repeats, warmup=2)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = allowed


def synced(fn: Callable[[], object], device: str) -> Callable[[], object]:
    """``fn`` followed by waiting for ``device`` to finish its queued work (CUDA runs kernels
    asynchronously, so a call returns before its work is done); ``fn`` itself elsewhere."""
    if not device.startswith("cuda"):
        return fn
    import torch

    def run() -> object:
        out = fn()
        torch.cuda.synchronize(device)
        return out

    return run


def gflops(flop: float, ms: float) -> float:
    return flop / (ms / 1000) / 1e9

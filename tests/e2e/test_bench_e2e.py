"""``facepipe bench e2e``: every request answered, figures present and consistent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_facepipe

pytestmark = pytest.mark.slow


def test_bench_e2e_on_the_local_stack(tmp_path: Path) -> None:
    out = tmp_path / "e2e.json"
    proc = run_facepipe(
        "bench",
        "e2e",
        "-n",
        "12",
        "--random-weights",
        "--json-out",
        str(out),
        "--concurrency",
        "3",
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert json.loads(out.read_text()) == summary
    assert (summary["requests"], summary["results"], summary["lost"]) == (12, 12, 0)
    assert summary["duplicates"] == 0
    assert summary["statuses"]["ok"] == 12  # every default frame has a face
    e2e = summary["e2e_ms"]
    assert 0 < e2e["p50"] <= e2e["p95"] <= e2e["p99"]
    # A result cannot come back before its own stages ran.
    stages = summary["stage_ms"]
    assert e2e["p50"] >= stages["detection"]["p50"]
    assert set(stages) == {"detection", "queue_wait", "recognition"}
    assert summary["throughput_rps"] > 0
    assert "lost 0" in proc.stderr
    (peak,) = summary["peak_memory_mb"].values()  # in-process: one process for everything
    assert peak > 100


def test_burst_under_the_rie_reports_each_stages_peak_memory() -> None:
    """What `make bench-burst` runs (with -n 1000): each function in its own process."""
    proc = run_facepipe(
        "bench",
        "e2e",
        "-n",
        "60",
        "--random-weights",
        "--runtime",
        "rie",
        "--concurrency",
        "8",
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert (summary["requests"], summary["results"], summary["lost"]) == (60, 60, 0)
    assert summary["duplicates"] == 0
    memory = summary["peak_memory_mb"]
    # every function of the stack under its own RIE (IngestFunction: idle here, S3 ingress)
    assert set(memory) == {"DetectionFunction", "RecognitionFunction", "IngestFunction"}
    # Each runtime holds torch and a model: hundreds of MiB, within the template's memory sizes.
    busy = [memory["DetectionFunction"], memory["RecognitionFunction"]]
    assert all(100 < mb < 3008 for mb in busy), memory
    assert "peak memory: RecognitionFunction:" in proc.stderr


def test_bench_scale_results_part_measures_both_paths(tmp_path: Path) -> None:
    """What `make bench-scale` runs with 8 clients x 100 frames: here 3 x 4, queue then by id,
    on one local stack."""
    out = tmp_path / "scale.json"
    proc = run_facepipe(
        "bench", "scale", "--parts", "results", "--clients", "3", "--frames", "4",
        "--images", "samples/astronaut.jpg", "--weights", "random:0", "--json-out", str(out),
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(out.read_text())
    assert summary["results_clients"] == 3
    for path in ("results", "results_queue"):
        assert summary[f"{path}_lost"] == 0 and summary[f"{path}_wrong_client"] == 0
        assert summary[f"{path}_p95_ms"] >= summary[f"{path}_p50_ms"] > 0
    assert summary["results_receives_per_result"] <= 1.2
    assert summary["results_receives_ratio"] == pytest.approx(
        summary["results_receives_per_result"] / summary["results_queue_receives_per_result"],
        abs=0.01,
    )

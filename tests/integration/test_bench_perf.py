"""`facepipe bench perf --quick` (issue #7): the harness runs end to end and its JSON has the
headline keys with sane values; same weights and same MTCNN, so parity with plain
facenet-pytorch must hold."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from facepipe.bench.perf import iou, lambda_cost, summary_keys, table
from tests.conftest import run_facepipe

KEYS = (
    "pipeline_vs_reference_ratio",
    "parity_min_iou",
    "parity_min_cosine",
    "embed_gflops",
    "sgemm_gflops",
    "cold_start_overhead_s",
    "e2e_p50_ms",
    "e2e_p95_ms",
    "e2e_lost",
    "cost_per_1000_frames_usd",
)


@pytest.mark.slow
def test_bench_perf_quick(tmp_path: Path) -> None:
    out, png = tmp_path / "latest.json", tmp_path / "latest.png"
    proc = run_facepipe(
        "bench", "perf", "--quick", "--random-weights", "--no-e2e",
        "--json-out", str(out), "--chart", str(png), "--threads", "2",
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(out.read_text())
    assert json.loads(proc.stdout) == summary
    assert set(KEYS) <= set(summary)
    ratios = summary["pipeline_vs_reference_ratio"]
    assert set(ratios) == {"native", "480p", "720p", "1080p", "overall"}
    assert all(r > 0 for r in ratios.values())
    assert summary["parity_faces"] >= 4  # two photos, one with two faces, at 4 resolutions
    assert summary["parity_min_iou"] >= 0.99
    assert summary["parity_min_cosine"] >= 0.999
    assert summary["sgemm_gflops"] > 0 and summary["embed_gflops"] > 0
    assert set(summary["cold_start_overhead_s"]) == {"detection", "recognition"}
    assert summary["cold_start"]["import_torch_s"] > 0
    assert summary["cold_start"]["packages"].startswith("the images'")  # dev tools hidden
    assert summary["cold_start"]["detection_imports_torch"] is True
    assert summary["cold_start"]["recognition_imports_torch"] is False  # the baked ONNX graph
    assert summary["cold_start_overhead_s"]["recognition"] < 0
    assert summary["e2e_p50_ms"] is None and summary["e2e_lost"] is None  # --no-e2e
    assert 0 < summary["cost_per_1000_frames_usd"] < 100
    assert summary["cost"]["prices"]["lambda_gb_second_usd"] == 0.0000166667
    assert summary["cost"]["memory_mb"] == {"detection": 2048, "recognition": 3008}
    assert "parity" in proc.stderr and "ratio" in proc.stderr  # the table
    levers = summary["embed_levers"]["levers"]  # the default and the lossy opt-in, vs eager
    assert set(levers) == {"eager", "onnxruntime", "bfloat16"}
    assert levers["onnxruntime"]["min_cosine_vs_eager"] > 0.99999
    assert levers["bfloat16"]["lossy"] and 0.99 < levers["bfloat16"]["min_cosine_vs_eager"] < 1
    side = summary["max_detect_side"]  # the opt-in lever, with its own parity
    assert side["side"] == 640 and side["frames"] >= 2
    assert side["ratio"]["overall"] > 0 and side["parity_min_iou"] > 0.5
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_iou() -> None:
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0


def test_lambda_cost_by_hand() -> None:
    stage = {
        "frames": 4,
        "frames_with_faces": 2,
        "detection_ms_per_frame": 100.0,
        "recognition_ms_per_frame": 50.0,
        "recognition_batch": 10,
        "task_bytes_mean": 70_000.0,  # two 64 KB chunks
        "result_bytes_mean": 600.0,
    }
    cost = lambda_cost(stage, 2048, 3008)
    gbs = 0.0000166667
    assert cost["detection_compute"] == pytest.approx(1000 * 0.1 * 2 * gbs, abs=1e-6)
    assert cost["recognition_compute"] == pytest.approx(500 * 0.05 * 3008 / 1024 * gbs, abs=1e-6)
    assert cost["lambda_requests"] == pytest.approx((1000 + 50) * 0.2e-6, abs=1e-6)
    sqs = 500 * 2 + 1000 + 2 * 50 + 2 * 100
    assert cost["sqs_requests"] == pytest.approx(sqs * 0.4e-6, abs=1e-6)
    assert cost["total"] == pytest.approx(sum(v for k, v in cost.items() if k != "total"), abs=1e-5)


def test_summary_and_table_without_cold_start() -> None:
    """`--no-cold-start` (bench/gpu-check.sh on a GPU machine without the images' packages):
    the headline key is null and the table says it was not measured."""
    out = {
        "machine": {"cpus": 16, "torch_threads": 16, "device": "cuda", "gpu": "NVIDIA H200"},
        "weights": "random:0",
        "compare": {
            "by_resolution": {
                "480p": {"frames": 2, "reference_ms_per_frame": 20.0,
                         "pipeline_ms_per_frame": 8.0, "ratio": 0.4},
                "overall": {"frames": 2, "reference_ms_per_frame": 20.0,
                            "pipeline_ms_per_frame": 8.0, "ratio": 0.4},
            }
        },
        "parity": [{"iou": [0.9999, 1.0], "cosine": [0.99999, 1.0]}],
        "embed": {"faces_per_s": 1000.0, "batch": 10, "gflops": 2840.0},
        "sgemm": {"gflops": 50000.0},
        "cost": {"per_resolution": {"480p": {"total": 0.004}}, "overall_total": 0.004},
    }  # fmt: skip
    summary = {**summary_keys(out), **out}
    assert summary["cold_start_overhead_s"] is None
    assert summary["parity_min_iou"] == 0.9999 and summary["parity_faces"] == 2
    assert summary["embed_fraction_of_sgemm"] == 0.0568
    text = table(summary)
    assert "cold start: not measured (--no-cold-start)" in text
    assert "device cuda (NVIDIA H200)" in text and "0.400" in text

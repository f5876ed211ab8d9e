"""``facepipe bench e2e``: every request answered, figures present and consistent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def test_bench_e2e_on_the_local_stack(tmp_path: Path) -> None:
    out = tmp_path / "e2e.json"
    proc = subprocess.run(
        [
            str(Path(sys.executable).with_name("facepipe")),
            "bench",
            "e2e",
            "-n",
            "12",
            "--random-weights",
            "--json-out",
            str(out),
            "--concurrency",
            "3",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
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

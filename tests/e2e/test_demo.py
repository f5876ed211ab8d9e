"""``make demo`` as a user runs it: enrol, local stack, client, annotated images, clean stop."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import ROOT

pytestmark = pytest.mark.slow
BIN = str(Path(sys.executable).parent)


def make_demo(args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", "demo", f"BIN={BIN}", f"DEMO_ARGS={args}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, **env},
    )


def table_rows(stdout: str) -> list[list[str]]:
    lines = stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("request_id"))
    return [line.split(maxsplit=3) for line in lines[header + 1 :]]


def test_make_demo_recognises_the_sample_people(tmp_path: Path) -> None:
    """The default `make demo`: with no VGGFace2 file (none can be downloaded here) it falls
    back to the offline dlib embedder, and the names are right."""
    out = tmp_path / "demo"
    proc = make_demo(f"--out {out}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    weights = {r["weights"] for r in results if r["status"] == "ok"}
    if weights == {w for w in weights if w.startswith("dlib:sha256:")}:
        assert (
            "the vggface2 weights are not available: recognising with the offline dlib embedder"
            in proc.stderr
        )
        assert {r["models"]["embedder"] for r in results if r["status"] == "ok"} == {"dlib"}
    else:  # this machine has the real VGGFace2 file in facenet-pytorch's cache
        assert all(w.startswith("vggface2:sha256:") for w in weights), weights
    assert [r["request_id"] for r in results] == [
        "demo.biden-west-wing",
        "demo.obama-and-biden",
        "demo.astronaut",
        "demo.rocket",
    ]
    assert [r["status"] for r in results] == ["ok", "ok", "ok", "no_face"]
    names = [[f["name"] for f in sorted(r["faces"], key=lambda f: f["box"][0])] for r in results]
    assert names == [["joe-biden"], ["barack-obama", "joe-biden"], ["unknown"], []]
    rows = table_rows(proc.stdout)
    assert [r[2] for r in rows] == ["ok", "ok", "ok", "no_face"]
    assert rows[0][3].startswith("joe-biden (")
    assert rows[2][3].startswith("unknown")
    assert sorted(p.name for p in (out / "annotated").iterdir()) == sorted(
        f"{r['request_id']}.jpg" for r in results
    )
    assert "stack stopped (exit 0)" in proc.stderr


def test_make_demo_with_random_weights(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = make_demo(f"--random-weights --out {out}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "NOT recognition" in proc.stderr
    # The printed table: one row per sample frame, in send order.
    lines = proc.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("request_id"))
    rows = [line.split() for line in lines[header + 1 :]]
    assert [r[0] for r in rows] == [
        "demo.biden-west-wing",
        "demo.obama-and-biden",
        "demo.astronaut",
        "demo.rocket",
    ]
    assert [r[2] for r in rows] == ["ok", "ok", "ok", "no_face"]
    results = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert [len(r["faces"]) for r in results] == [1, 2, 1, 0]
    assert all(r.get("weights") == "random:0" for r in results if r["status"] == "ok")
    gallery_names = {"barack-obama", "joe-biden", "unknown"}
    assert {f["name"] for r in results for f in r["faces"]} <= gallery_names
    annotated = sorted(p.name for p in (out / "annotated").iterdir())
    assert annotated == sorted(f"{r['request_id']}.jpg" for r in results)
    with Image.open(out / "annotated" / "demo.obama-and-biden.jpg") as img:
        assert img.size == (800, 470)
    assert "stack stopped (exit 0)" in proc.stderr
    assert "stopped" in (out / "stack.log").read_text()


def test_make_demo_without_weights_says_what_to_do(tmp_path: Path) -> None:
    proc = make_demo(f"--out {tmp_path / 'demo'}", FACEPIPE_WEIGHTS=str(tmp_path / "none.pt"))
    assert proc.returncode != 0
    assert "make demo DEMO_ARGS=--random-weights" in proc.stderr
    assert "does not exist" in proc.stderr
    assert not (tmp_path / "demo" / "results.jsonl").exists()

"""``facepipe bench scale``: the album part at a small size writes the keys the issue asks for
into the JSON file (merging with what is there), finds what exact search finds, and reads two
objects per warm search."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_facepipe


def test_bench_scale_album_part(tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    out.write_text(json.dumps({"results_lost": 0}))  # another part's figure stays
    done = run_facepipe(
        "bench", "scale", "--parts", "album", "--album-faces", "1000,3000", "--dim", "64",
        "--json-out", str(out), "--chart", str(tmp_path / "scale.png"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(out.read_text())
    assert summary["results_lost"] == 0
    assert summary["album_faces"] == 3000
    assert summary["album_find_objects_read"] == 2
    assert summary["album_find_recall"] >= 0.99
    assert summary["album_find_cold_objects_read"] > summary["album_find_objects_read"]
    for key in ("album_find_p50_ms", "album_find_p95_ms", "album_index_faces_per_s"):
        assert summary[key] > 0
    assert json.loads(done.stdout)["album_faces"] == 3000
    assert [g["faces"] for g in summary["album_growth"]] == [1000, 3000]
    assert (tmp_path / "scale.png").read_bytes()[:4] == b"\x89PNG"


def test_bench_scale_gallery_part(tmp_path: Path) -> None:
    pytest.importorskip("lancedb", reason="the vectors extra (lancedb) is not installed")
    out = tmp_path / "scale.json"
    done = run_facepipe(
        "bench", "scale", "--parts", "gallery", "--gallery-rows", "3000", "--dim", "64",
        "--json-out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(out.read_text())
    assert summary["gallery_rows"] == 3000
    for key in ("gallery", "gallery_faiss"):
        assert summary[f"{key}_match_p95_ms"] >= summary[f"{key}_match_p50_ms"] > 0
        assert summary[f"{key}_peak_rss_mb"] > 0
        assert summary[f"{key}_recall_best_person"] >= 0.99


def test_bench_scale_names_an_unknown_part() -> None:
    done = run_facepipe("bench", "scale", "--parts", "albums")
    assert done.returncode == 2 and "no part albums" in done.stderr

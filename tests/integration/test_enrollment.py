"""Enrolment from one folder per person, with the skipped photos and their reasons."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from facepipe.app.enrollment import enroll_folder
from facepipe.app.pipeline import LocalPipeline
from facepipe.config import Settings
from facepipe.identity.gallery import Gallery
from tests.conftest import SAMPLES


@pytest.fixture(scope="module")
def pipeline() -> LocalPipeline:
    return LocalPipeline(Settings.from_env({}, weights="random:0", device="cpu"))


def test_enrol_skips_unusable_photos_with_reasons(pipeline: LocalPipeline, tmp_path: Path) -> None:
    shutil.copytree(SAMPLES / "gallery", tmp_path / "people")
    ann = tmp_path / "people" / "ann"
    ann.mkdir()
    shutil.copy(SAMPLES / "rocket.jpg", ann / "no-face.jpg")
    shutil.copy(SAMPLES / "frames" / "obama-and-biden.jpg", ann / "two-faces.jpg")
    (ann / "broken.jpg").write_bytes(b"not an image")
    (ann / "notes.txt").write_text("ignored: not an image suffix")
    report = enroll_folder(pipeline, tmp_path / "people")
    assert sorted(report.gallery.names) == ["barack-obama", "joe-biden"]
    reasons = {s.path.name: s.reason for s in report.skipped}
    assert reasons.keys() == {"no-face.jpg", "two-faces.jpg", "broken.jpg"}
    assert reasons["no-face.jpg"] == "no face"
    assert reasons["two-faces.jpg"].startswith("2 faces")
    assert reasons["broken.jpg"].startswith("unreadable")
    small = enroll_folder(pipeline, tmp_path / "people", min_face_px=1000)
    assert len(small.gallery) == 0
    assert all("px" in s.reason for s in small.skipped if s.path.parent.name != "ann")


def test_enrolled_person_is_named_on_the_same_photo(pipeline: LocalPipeline) -> None:
    report = enroll_folder(pipeline, SAMPLES / "gallery")
    pipeline.recognition.gallery = report.gallery
    try:
        result = pipeline.run_file(SAMPLES / "gallery" / "joe-biden" / "official-portrait-2013.jpg")
    finally:
        pipeline.recognition.gallery = Gallery()
    assert result.result == ["joe-biden"]


def test_cli_writes_a_loadable_gallery(tmp_path: Path) -> None:
    out = tmp_path / "g.npz"
    proc = subprocess.run(
        [
            str(Path(sys.executable).with_name("facepipe")),
            "gallery",
            "enroll",
            str(SAMPLES / "gallery"),
            "--out",
            str(out),
            "--weights",
            "random:0",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "enrolled 2 photo(s) of 2 people" in proc.stderr
    gallery = Gallery.from_bytes(out.read_bytes())
    assert sorted(gallery.names) == ["barack-obama", "joe-biden"]
    assert gallery.embedder == "vggface2"

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
    proc = _enroll(SAMPLES / "gallery", out)
    assert proc.returncode == 0, proc.stderr
    assert "enrolled 2 photo(s) of 2 people" in proc.stderr
    gallery = Gallery.from_bytes(out.read_bytes())
    assert sorted(gallery.names) == ["barack-obama", "joe-biden"]
    assert gallery.embedder == "vggface2"


FACEPIPE_BIN = str(Path(sys.executable).with_name("facepipe"))


def _enroll(folder: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            FACEPIPE_BIN,
            "gallery",
            "enroll",
            str(folder),
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


def test_an_enrolment_that_enrols_nothing_fails_and_says_why(tmp_path: Path) -> None:
    """A folder whose only photos are a group photo and a loose one enrols nobody: an error
    (exit 2) naming both reasons, and no gallery written; a re-run that finds every photo
    already in the gallery is no error."""
    folder = tmp_path / "people"
    (folder / "couple").mkdir(parents=True)
    shutil.copy(SAMPLES / "frames" / "obama-and-biden.jpg", folder / "couple" / "both.jpg")
    shutil.copy(SAMPLES / "astronaut.jpg", folder / "astronaut.jpg")  # whose is it?
    proc = _enroll(folder, tmp_path / "g.npz")
    assert proc.returncode == 2, proc.stderr
    assert "nothing enrolled from" in proc.stderr
    assert "2 faces; enrol photos of one face" in proc.stderr
    assert f"astronaut.jpg: not in a person's folder: move it to {folder}/<name>/" in proc.stderr
    assert not (tmp_path / "g.npz").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "holds no photo in a person's folder" in _enroll(empty, tmp_path / "g.npz").stderr
    once, again = (_enroll(SAMPLES / "gallery", tmp_path / "s.npz") for _ in range(2))
    assert once.returncode == again.returncode == 0, again.stderr
    assert "already enrolled" in again.stderr

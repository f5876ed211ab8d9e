"""``gallery remove NAME`` erases the person from the albums beside the gallery too (dlib, the
shipped samples): afterwards a selfie of them finds nothing, the others are untouched."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.conftest import SAMPLES, run_facepipe


def facepipe(*args: str, root: Path) -> subprocess.CompletedProcess[str]:
    return run_facepipe(*args, "--embedder", "dlib", "--gallery", str(root / "gallery.npz"))


def found(selfie: Path, root: Path) -> set[str]:
    proc = facepipe("album", "find", "trip", str(selfie), root=root)
    assert proc.returncode == 0, proc.stderr
    return {json.loads(line)["photo"] for line in proc.stdout.splitlines()}


def test_gallery_remove_erases_album_faces(tmp_path: Path) -> None:
    root = tmp_path / "people"
    assert facepipe("gallery", "enroll", str(SAMPLES / "gallery"), root=root).returncode == 0
    proc = facepipe("album", "index", "trip", str(SAMPLES / "frames"), root=root)
    assert proc.returncode == 0, proc.stderr
    assert (root / "albums" / "trip").is_dir()  # albums live beside the gallery by default
    biden = SAMPLES / "gallery" / "joe-biden" / "official-portrait-2013.jpg"
    obama = SAMPLES / "gallery" / "barack-obama" / "official-portrait-2012.jpg"
    assert found(biden, root) == {"biden-west-wing.jpg", "obama-and-biden.jpg"}
    assert found(obama, root) == {"obama-and-biden.jpg"}
    proc = facepipe("gallery", "remove", "joe-biden", root=root)
    assert proc.returncode == 0, proc.stderr
    assert "2 matching album face(s)" in proc.stderr
    assert found(biden, root) == set()
    assert found(obama, root) == {"obama-and-biden.jpg"}
    assert not (root / "crops" / "joe-biden").exists()

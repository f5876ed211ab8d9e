"""``facepipe album`` on the shipped samples (no ../shared needed)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.conftest import SAMPLES, run_facepipe

LANCEDB = pytest.mark.skipif(
    importlib.util.find_spec("lancedb") is None, reason="the vectors extra is not installed"
)


@pytest.mark.parametrize("kind", ["shards", pytest.param("lancedb", marks=LANCEDB)])
def test_finding_in_an_album_that_does_not_exist_is_an_error_naming_the_known_ones(
    tmp_path: Path, kind: str
) -> None:
    albums = str(tmp_path / "albums") if kind == "shards" else f"lancedb:{tmp_path / 'albums'}"
    selfie = str(SAMPLES / "astronaut.jpg")
    flags = ("--albums", albums, "--embedder", "dlib")
    nothing = run_facepipe("album", "find", "trip", selfie, *flags)
    assert nothing.returncode == 2
    assert "no album 'trip'" in nothing.stderr and "known albums: none" in nothing.stderr
    indexed = run_facepipe("album", "index", "holiday", str(SAMPLES / "frames"), *flags)
    assert indexed.returncode == 0, indexed.stderr
    typo = run_facepipe("album", "find", "holliday", selfie, *flags)
    assert typo.returncode == 2 and "known albums: holiday" in typo.stderr
    found = run_facepipe("album", "find", "holiday", selfie, *flags)
    assert found.returncode == 0, found.stderr  # the astronaut is in none of them: 0 photos
    assert "album holiday: 0 photo(s) with that person" in found.stderr

"""Album search with the real offline embedder (dlib) on ../shared/faces: indexing every face of
every photo, then a selfie finds exactly that person's photos."""

from __future__ import annotations

import csv
import json
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest

from facepipe.app.albums import selfie_embedding
from facepipe.app.pipeline import LocalPipeline
from facepipe.app.stores import open_albums
from facepipe.config import Settings
from tests.conftest import SAMPLES, run_facepipe

pytestmark = pytest.mark.shared_data


def facepipe(*args: str) -> subprocess.CompletedProcess[str]:
    return run_facepipe(*args, "--embedder", "dlib", timeout=600)


@pytest.fixture(scope="module")
def indexed(shared_faces: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:  # type: ignore[type-arg]
    with (shared_faces / "identities.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    photos = tmp_path_factory.mktemp("photos")
    people: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        (photos / row["file"]).symlink_to(shared_faces / row["file"])
        people[row["identity"]].append(row["file"])
    albums = tmp_path_factory.mktemp("albums")
    proc = facepipe("album", "index", "faces", str(photos), "--albums", str(albums))
    assert proc.returncode == 0, proc.stderr
    assert f"of {len(rows)} photo(s)" in proc.stderr
    return albums, people


@pytest.fixture(scope="module")
def pipeline() -> LocalPipeline:
    return LocalPipeline(Settings.from_env({}, embedder="dlib"))


def test_each_person_finds_exactly_their_photos(indexed, pipeline, shared_faces: Path) -> None:  # type: ignore[no-untyped-def]
    albums, people = indexed
    store = open_albums(str(albums))
    for person, files in sorted(people.items()):
        selfie = shared_faces / files[-1]
        hits = store.find(
            "faces",
            selfie_embedding(pipeline, selfie.read_bytes()),
            threshold=pipeline.recognition.threshold,
            embedder="dlib",
        )
        assert {h.photo for h in hits} == set(files), person
        assert hits[0].photo == files[-1]  # the selfie itself is the best match
        sims = [h.similarity for h in hits]
        assert sims == sorted(sims, reverse=True)


def test_cli_find_prints_ranked_json_lines(indexed, shared_faces: Path) -> None:  # type: ignore[no-untyped-def]
    albums, people = indexed
    files = people["person00"]
    proc = facepipe("album", "find", "faces", str(shared_faces / files[0]), "--albums", str(albums))
    assert proc.returncode == 0, proc.stderr
    hits = [json.loads(x) for x in proc.stdout.splitlines()]
    assert {h["photo"] for h in hits} == set(files)
    assert all(len(h["box"]) == 4 for h in hits)


def test_a_stranger_finds_nothing(indexed, pipeline) -> None:  # type: ignore[no-untyped-def]
    albums, _ = indexed
    stranger = (SAMPLES / "astronaut.jpg").read_bytes()
    hits = open_albums(str(albums)).find(
        "faces",
        selfie_embedding(pipeline, stranger),
        threshold=pipeline.recognition.threshold,
        embedder="dlib",
    )
    assert hits == []


def test_selfie_without_a_face_is_a_clear_error(indexed) -> None:  # type: ignore[no-untyped-def]
    albums, _ = indexed
    rocket = SAMPLES / "rocket.jpg"
    proc = facepipe("album", "find", "faces", str(rocket), "--albums", str(albums))
    assert proc.returncode == 2
    assert "no face" in proc.stderr

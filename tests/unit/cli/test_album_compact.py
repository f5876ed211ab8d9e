"""``facepipe album compact``: merges an album's shards into one segment (``--full``) in a
folder store, reports what it did, and names the known albums for a typo."""

from __future__ import annotations

from pathlib import Path

from facepipe.identity.albums import AlbumStore
from facepipe.identity.objects import LocalObjects
from tests.conftest import run_facepipe
from tests.unit.identity.test_album_compaction import PEOPLE, entry


def test_album_compact_merges_everything_with_full(tmp_path: Path) -> None:
    store = AlbumStore(LocalObjects(tmp_path), compact_every=0)
    for i in range(5):
        store.add("trip", [entry(i), entry(i + 100)], "dlib")
    before = store.find("trip", PEOPLE[3], threshold=0.6, embedder="dlib")

    done = run_facepipe("album", "compact", "trip", "--full", "--albums", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "merged 5 shard(s) and 0 segment(s) into: 10 faces" in done.stderr
    assert "now 1 segment(s) of 10 face(s) and 0 shard(s) waiting" in done.stderr
    fresh = AlbumStore(LocalObjects(tmp_path))
    assert fresh.shards("trip") == [] and len(fresh.segments("trip")) == 1
    assert fresh.find("trip", PEOPLE[3], threshold=0.6, embedder="dlib") == before

    typo = run_facepipe("album", "compact", "trp", "--albums", str(tmp_path))
    assert typo.returncode != 0
    assert "no album 'trp'" in typo.stderr and "known albums: trip" in typo.stderr

"""The LanceDB gallery and album stores, on the real engine in a temporary folder: the same
answers as the in-memory Gallery and the object-shard AlbumStore on the same rows, enrolment and
erasure (the rows gone from every file and version), and the IVF index the writer builds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("lancedb", reason="the vectors extra (lancedb) is not installed")
pytest.importorskip("lance", reason="the vectors extra (pylance) is not installed")

from facepipe.bench.match import synthetic_faces
from facepipe.errors import GalleryError
from facepipe.identity.albums import AlbumEntry, AlbumStore
from facepipe.identity.gallery import Gallery
from facepipe.identity.objects import LocalObjects
from facepipe.identity.vector_store import (
    LanceAlbumStore,
    LanceDatabase,
    LanceGallery,
    LanceGalleryStore,
)

ROWS = 3_000
THRESHOLD = 1.1


@pytest.fixture(scope="module")
def faces() -> tuple[list[str], np.ndarray, np.ndarray]:
    names, rows, queries, _ = synthetic_faces(ROWS, 128, photos=5, latent_dim=32, queries=40)
    return names, rows, queries


def _store(folder: Path, **kwargs: int) -> LanceGalleryStore:
    return LanceGalleryStore(LanceDatabase(LocalObjects(folder)), **kwargs)


def _files_holding(folder: Path, vectors: np.ndarray, *texts: str) -> list[Path]:
    """Files under ``folder`` holding the raw float32 bytes of any of ``vectors``, or any of
    ``texts``."""
    needles = [np.ascontiguousarray(v, np.float32).tobytes() for v in vectors]
    needles += [text.encode() for text in texts]
    return [
        path
        for path in folder.rglob("*")
        if path.is_file() and any(needle in path.read_bytes() for needle in needles)
    ]


def test_match_gives_the_in_memory_gallerys_people_and_scores(
    tmp_path: Path, faces: tuple[list[str], np.ndarray, np.ndarray]
) -> None:
    names, rows, queries = faces
    store = _store(tmp_path)
    assert store.add(Gallery(names, rows, "dlib")) == ROWS
    served = store.load()
    assert isinstance(served, LanceGallery) and len(served) == ROWS
    assert (served.embedder, served.dimension) == ("dlib", 128)
    # queries of enrolled people, strangers far from everyone, and a tight threshold
    strangers = np.random.default_rng(2).normal(size=(3, 128)).astype(np.float32)
    strangers /= np.linalg.norm(strangers, axis=1, keepdims=True)
    asked = np.concatenate([queries, strangers])
    for threshold, top_k in ((THRESHOLD, 5), (0.5, 3), (THRESHOLD, 12)):
        want = Gallery(names, rows, "dlib").match(asked, threshold, top_k)
        got = served.match(asked, threshold, top_k)
        assert [m.name for m in got] == [m.name for m in want]
        for g, w in zip(got, want, strict=True):
            assert [p.name for p in g.matches] == [p.name for p in w.matches]
            assert np.allclose(
                [p.similarity for p in g.matches], [p.similarity for p in w.matches], atol=1e-5
            )
            assert g.distance == pytest.approx(w.distance, abs=1e-5)
    assert {m.name for m in served.match(strangers, THRESHOLD)} == {"unknown"}


def test_a_person_with_many_rows_is_listed_once_and_others_still_fill_top_k(
    tmp_path: Path,
) -> None:
    """More rows of one person than the first search asks for: the search widens."""
    rng = np.random.default_rng(1)
    base = rng.normal(size=16)
    many = base + 0.01 * rng.normal(size=(60, 16))
    others = rng.normal(size=(20, 16))
    names = ["ann"] * 60 + [f"p{i}" for i in range(20)]
    rows = np.concatenate([many, others])
    store = _store(tmp_path)
    store.add(Gallery(names, rows, "dlib"))
    got = store.load().match(base[None].astype(np.float32) / np.linalg.norm(base), 1.1, 5)[0]
    want = Gallery(names, rows).match(base[None].astype(np.float32) / np.linalg.norm(base), 1.1)[0]
    assert [p.name for p in got.matches] == [p.name for p in want.matches]
    assert got.matches[0].name == "ann" and len(got.matches) == 5


def test_enrol_refuses_another_embedder_and_lists_people(tmp_path: Path) -> None:
    store = _store(tmp_path)
    assert store.status() == "missing" and len(store.load()) == 0
    store.add(
        Gallery(["ann", "ann", "bob"], np.eye(3, 8), "dlib"), {store.crop_key("ann", "ab"): b"png"}
    )
    assert store.status() == "present"
    assert store.people() == {"ann": 2, "bob": 1}
    assert store.embedder() == "dlib" and store.updated_at()
    assert store.crops_of("ann") == ["crops/ann/ab.png"]
    assert store.rows_of("ann").shape == (2, 8)
    with pytest.raises(GalleryError, match="holds dlib embeddings"):
        store.add(Gallery(["cy"], np.eye(1, 8), "vggface2"))
    with pytest.raises(GalleryError, match="8-d gallery"):
        store.add(Gallery(["cy"], np.eye(1, 4), "dlib"))
    exported = store.export()
    assert sorted(exported.names) == ["ann", "ann", "bob"] and exported.embedder == "dlib"


def test_remove_erases_the_rows_from_every_file_and_version(
    tmp_path: Path, faces: tuple[list[str], np.ndarray, np.ndarray]
) -> None:
    names, rows, _ = faces
    store = _store(tmp_path)
    store.add(Gallery(names[:2000], rows[:2000], "dlib"))
    store.add(Gallery(names[2000:], rows[2000:], "dlib"))  # a second version, a second file
    victim = names[7]
    mine = np.flatnonzero(np.array(names) == victim)
    own = Gallery(names, rows).embeddings[mine]  # as stored: unit rows
    assert _files_holding(tmp_path, own), "the rows should be in the table's files before"
    assert _files_holding(tmp_path, own[:0], victim)
    assert store.load().match(own[:1], THRESHOLD)[0].name == victim
    tricky = "o'brien"
    store.add(Gallery([tricky], rows[:1] + 0.5, "dlib"))

    removal = store.remove(victim)
    assert (removal.rows, removal.crops) == (len(mine), 0) and removal.old_versions >= 2
    assert victim not in store.people() and len(store.load()) == ROWS + 1 - len(mine)
    assert all(victim not in [p.name for p in m.matches] for m in store.load().match(own, 2.0, 50))
    assert _files_holding(tmp_path, own, victim) == []  # nor the name, in any log or version
    assert len(store.load().table.list_versions()) == 1
    assert store.remove(tricky).rows == 1 and tricky not in store.people()
    with pytest.raises(GalleryError, match="is not in"):
        store.remove(victim)


def test_the_writer_builds_the_ivf_index_and_matching_stays_exact_in_scores(
    tmp_path: Path, faces: tuple[list[str], np.ndarray, np.ndarray]
) -> None:
    names, rows, queries = faces
    store = _store(tmp_path, index_min_size=1_000)
    store.add(Gallery(names, rows, "dlib"))
    served = store.load()
    assert isinstance(served, LanceGallery)
    assert [i.index_type for i in served.table.list_indices()] == ["IvfRq"]
    want = Gallery(names, rows).match(queries, THRESHOLD)
    got = served.match(queries, THRESHOLD)
    assert [m.name for m in got] == [m.name for m in want]
    # re-scored against the stored vectors: the scores are exact, not the codes' estimates
    assert np.allclose([m.similarity for m in got], [m.similarity for m in want], atol=1e-5)


def _entries(faces: tuple[list[str], np.ndarray, np.ndarray]) -> list[AlbumEntry]:
    names, rows, _ = faces
    unit = Gallery(names, rows).embeddings
    return [
        AlbumEntry(f"photo{i // 3:04d}.jpg", [i, i + 1, i + 10, i + 12], unit[i], f"req{i // 3}")
        for i in range(600)
    ]


def test_albums_find_and_forget_as_the_object_store_does(
    tmp_path: Path, faces: tuple[list[str], np.ndarray, np.ndarray]
) -> None:
    entries = _entries(faces)
    shards = AlbumStore(LocalObjects(tmp_path / "shards"))
    lance = LanceAlbumStore(LanceDatabase(LocalObjects(tmp_path / "lance")))
    for store in (shards, lance):
        assert store.add("party", [], "dlib") is None
        assert store.add("party", entries[:400], "dlib")
        assert store.add("party", entries[400:], "dlib")
        store.add("party", entries[390:420], "dlib")  # a retried batch: counted once
        assert store.albums() == ["party"] and store.embedder_of("party") == "dlib"
    queries = [e.embedding for e in entries[::37]]
    for query in queries:
        for threshold, limit in ((THRESHOLD, 100), (0.9, 3)):
            want = shards.find("party", query, threshold=threshold, embedder="dlib", limit=limit)
            got = lance.find("party", query, threshold=threshold, embedder="dlib", limit=limit)
            assert [h.photo for h in got] == [h.photo for h in want]
            assert [h.box for h in got] == [h.box for h in want]
            assert np.allclose([h.similarity for h in got], [h.similarity for h in want], atol=1e-5)
    with pytest.raises(GalleryError, match="indexed with the dlib embedder"):
        lance.find("party", queries[0], threshold=1.0, embedder="vggface2")
    with pytest.raises(GalleryError, match="not vggface2"):
        lance.add("party", entries[:1], "vggface2")
    assert lance.find("nobody", queries[0], threshold=1.0, embedder="dlib") == []

    person = np.stack([entries[5].embedding, entries[6].embedding])
    assert lance.forget(person, 0.6) == shards.forget(person, 0.6) > 0
    for store in (shards, lance):
        assert all(
            h.distance > 0.6 for h in store.find("party", person[0], threshold=2.0, embedder="dlib")
        )
    assert _files_holding(tmp_path / "lance", person) == []

"""Album index and search on a local folder: shards, ranking, embedder checks, forgetting."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from facepipe.errors import FacepipeError, GalleryError
from facepipe.identity.albums import AlbumEntry, AlbumStore, check_album_name
from facepipe.identity.objects import LocalObjects


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


@pytest.fixture
def people() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {name: unit(rng.normal(size=64)) for name in ("ann", "bob", "cyd")}


def near(v: np.ndarray, seed: int, noise: float = 0.05) -> np.ndarray:
    return unit(v + noise * np.random.default_rng(seed).normal(size=v.shape))


def test_find_ranks_the_photos_of_the_person(tmp_path: Path, people: dict) -> None:  # type: ignore[type-arg]
    store = AlbumStore(LocalObjects(tmp_path))
    store.add(
        "trip",
        [
            AlbumEntry("p1.jpg", [0, 0, 10, 10], near(people["ann"], 1)),
            AlbumEntry("p1.jpg", [20, 0, 30, 10], near(people["bob"], 2)),
            AlbumEntry("p2.jpg", [0, 0, 10, 10], near(people["bob"], 3)),
            AlbumEntry("p3.jpg", [5, 5, 15, 15], near(people["ann"], 4, noise=0.2)),
            AlbumEntry("p3.jpg", [40, 5, 50, 15], near(people["ann"], 5, noise=0.01)),
        ],
        "dlib",
    )
    hits = store.find("trip", people["ann"], threshold=0.6, embedder="dlib")
    assert [h.photo for h in hits] == ["p3.jpg", "p1.jpg"]  # best face first, one per photo
    assert hits[0].box == [40.0, 5.0, 50.0, 15.0]
    assert hits[0].similarity > hits[1].similarity
    assert store.find("trip", people["cyd"], threshold=0.6, embedder="dlib") == []
    assert store.find("empty", people["ann"], threshold=0.6, embedder="dlib") == []


def test_concurrent_writers_never_overwrite(tmp_path: Path, people: dict) -> None:  # type: ignore[type-arg]
    store = AlbumStore(LocalObjects(tmp_path))

    def write(i: int) -> str | None:
        return store.add(
            "party", [AlbumEntry(f"p{i}.jpg", [0, 0, 1, 1], near(people["bob"], i))], "dlib"
        )

    with ThreadPoolExecutor(8) as pool:
        keys = list(pool.map(write, range(16)))
    assert len(set(keys)) == 16
    assert len(store.shards("party")) == 16
    photos = {h.photo for h in store.find("party", people["bob"], threshold=0.6, embedder="dlib")}
    assert photos == {f"p{i}.jpg" for i in range(16)}


def test_embedders_are_never_mixed(tmp_path: Path, people: dict) -> None:  # type: ignore[type-arg]
    store = AlbumStore(LocalObjects(tmp_path))
    store.add("a", [AlbumEntry("p.jpg", [0, 0, 1, 1], people["ann"])], "dlib")
    with pytest.raises(GalleryError, match="dlib embedder"):
        store.add("a", [AlbumEntry("q.jpg", [0, 0, 1, 1], people["ann"])], "vggface2")
    with pytest.raises(GalleryError, match="dlib embedder"):
        store.find("a", people["ann"], threshold=1.0, embedder="vggface2")


def test_forget_erases_a_person_from_every_album(tmp_path: Path, people: dict) -> None:  # type: ignore[type-arg]
    store = AlbumStore(LocalObjects(tmp_path))
    store.add(
        "x",
        [
            AlbumEntry("1.jpg", [0, 0, 1, 1], near(people["ann"], 1)),
            AlbumEntry("1.jpg", [2, 0, 3, 1], near(people["bob"], 2)),
        ],
        "dlib",
    )
    store.add("y", [AlbumEntry("2.jpg", [0, 0, 1, 1], near(people["ann"], 3))], "dlib")
    store.add("z", [AlbumEntry("3.jpg", [0, 0, 1, 1], near(people["cyd"], 4))], "dlib")
    before = set(store.shards("x")) | set(store.shards("y"))
    assert store.forget(people["ann"][None], threshold=0.6) == 2
    assert store.find("x", people["ann"], threshold=0.6, embedder="dlib") == []
    assert store.find("y", people["ann"], threshold=0.6, embedder="dlib") == []
    assert [h.photo for h in store.find("x", people["bob"], threshold=0.6, embedder="dlib")] == [
        "1.jpg"
    ]
    assert before.isdisjoint(set(store.shards("x")) | set(store.shards("y")))
    assert store.shards("y") == []  # its only face was ann's
    assert len(store.shards("z")) == 1


@pytest.mark.parametrize("name", ["", "../etc", "a/b", "x" * 65, "-lead"])
def test_album_names_are_safe_key_parts(name: str) -> None:
    with pytest.raises(FacepipeError, match="album name"):
        check_album_name(name)

"""Album compaction: shards merged into size-tiered segments under a conditional manifest swap,
searches that read O(1) objects warm, IVF segments, concurrent writers, erasure."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from facepipe.identity.album_parts import AlbumPart, merge_parts
from facepipe.identity.albums import AlbumEntry, AlbumStore, tier
from facepipe.identity.objects import CountedObjects, LocalObjects


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


PEOPLE = unit(np.random.default_rng(0).normal(size=(40, 64)))


def face(person: int, seed: int, noise: float = 0.05) -> np.ndarray:
    return unit(PEOPLE[person] + noise * np.random.default_rng(seed).normal(size=64))


def entry(i: int, person: int | None = None, request: str = "") -> AlbumEntry:
    p = i % len(PEOPLE) if person is None else person
    return AlbumEntry(f"p{i}.jpg", [i, 0, i + 10, 10], face(p, i), request)


def faces_in(store: AlbumStore, album: str) -> list[str]:
    return sorted(store.load(album).photos)


def test_writers_compact_into_segments_and_delete_what_they_merged(tmp_path: Path) -> None:
    store = AlbumStore(LocalObjects(tmp_path), compact_every=4)
    for i in range(30):
        store.add("a", [entry(i)], "dlib")
    assert len(store._view("a").shards) < 4  # the rest were merged
    segments = store.segments("a")
    assert segments and sum(s.faces for s in segments) + len(store.shards("a")) == 30
    assert store._view("a").leftovers == []  # merged shards are deleted
    assert faces_in(store, "a") == sorted(f"p{i}.jpg" for i in range(30))
    hits = store.find("a", PEOPLE[3], threshold=0.6, embedder="dlib")
    assert [h.photo for h in hits] == ["p3.jpg"]


def test_size_tiers_keep_the_segment_count_logarithmic(tmp_path: Path) -> None:
    store = AlbumStore(LocalObjects(tmp_path), compact_every=2)
    for i in range(0, 6000, 50):
        store.add("big", [entry(j) for j in range(i, i + 50)], "dlib")
    segments = store.segments("big")
    assert sum(s.faces for s in segments) + 50 * len(store._view("big").shards) == 6000
    assert len(segments) <= 8, [s.faces for s in segments]
    assert tier(999) == 0 and tier(4000) == 1 and tier(16_000) == 2


def test_a_warm_search_reads_the_listing_and_the_manifest_only(tmp_path: Path) -> None:
    objects = CountedObjects(LocalObjects(tmp_path))
    store = AlbumStore(objects, compact_every=4)
    for i in range(20):
        store.add("a", [entry(i)], "dlib")
    reader = AlbumStore(objects)  # another process: nothing cached
    objects.reset()
    cold = reader.find("a", PEOPLE[5], threshold=0.6, embedder="dlib")
    cold_reads = objects.reads()
    objects.reset()
    warm = reader.find("a", PEOPLE[5], threshold=0.6, embedder="dlib")
    assert warm == cold and [h.photo for h in warm] == ["p5.jpg"]
    assert objects.reads() == 2 < cold_reads  # list + conditional manifest read
    store.add("a", [entry(20, person=5)], "dlib")
    objects.reset()
    again = reader.find("a", PEOPLE[5], threshold=0.6, embedder="dlib")
    assert {h.photo for h in again} == {"p5.jpg", "p20.jpg"}
    assert objects.reads() == 3  # and the one new shard


def test_concurrent_writers_lose_no_face_and_count_none_twice(tmp_path: Path) -> None:
    def write(i: int) -> None:
        # Each thread its own store, as separate functions are: only the folder is shared.
        AlbumStore(LocalObjects(tmp_path), compact_every=3).add("p", [entry(i)], "dlib")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, range(60)))
    store = AlbumStore(LocalObjects(tmp_path))
    assert faces_in(store, "p") == sorted(f"p{i}.jpg" for i in range(60))
    store.compact("p", full=True)
    assert len(store.segments("p")) == 1 and store.shards("p") == []
    assert faces_in(store, "p") == sorted(f"p{i}.jpg" for i in range(60))


def test_the_loser_of_a_manifest_swap_leaves_no_trace(tmp_path: Path) -> None:
    a = AlbumStore(LocalObjects(tmp_path), compact_every=0)
    b = AlbumStore(LocalObjects(tmp_path), compact_every=0)
    for i in range(6):
        a.add("x", [entry(i)], "dlib")
    view, parts = a._read("x")
    plan = a._plan(view, parts, full=True, max_faces=None)
    assert plan is not None
    b.add("x", [entry(6)], "dlib")
    assert b.compact("x", full=True).shards == 7  # b swaps first
    assert a._apply("x", view, parts, plan) is None  # a's swap is refused
    assert len(list((tmp_path / "albums" / "x" / "segments").iterdir())) == 1  # a's is gone
    assert faces_in(a, "x") == sorted(f"p{i}.jpg" for i in range(7))


def test_a_retried_request_is_merged_once(tmp_path: Path) -> None:
    store = AlbumStore(LocalObjects(tmp_path), compact_every=0)
    store.add("r", [entry(1, request="req-1"), entry(2, request="req-1")], "dlib")
    store.add("r", [entry(1, request="req-1"), entry(2, request="req-1")], "dlib")  # retry
    store.add("r", [entry(3)], "dlib")
    store.compact("r", full=True)
    assert faces_in(store, "r") == ["p1.jpg", "p2.jpg", "p3.jpg"]


def test_ivf_segments_find_what_exact_search_finds(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    entries = [
        AlbumEntry(f"q{i}.jpg", [0, 0, 1, 1], face(int(rng.integers(40)), 1000 + i))
        for i in range(3000)
    ]
    exact = AlbumStore(LocalObjects(tmp_path / "exact"), compact_every=0)
    ivf = AlbumStore(LocalObjects(tmp_path / "ivf"), compact_every=0, ivf_min_faces=1000)
    for store in (exact, ivf):
        for start in range(0, 3000, 500):
            store.add("s", entries[start : start + 500], "dlib")
        store.compact("s", full=True)
    ivf = AlbumStore(LocalObjects(tmp_path / "ivf"))  # a reader: the segment from its bytes
    (segment,) = ivf.segments("s")
    ivf.find("s", PEOPLE[0], threshold=0.6, embedder="dlib")
    assert ivf._parts[segment.key].ivf is not None
    found = total = 0
    for person in range(40):
        want = {h.photo for h in exact.find("s", PEOPLE[person], threshold=0.6, embedder="dlib")}
        got = {h.photo for h in ivf.find("s", PEOPLE[person], threshold=0.6, embedder="dlib")}
        assert got <= want  # no photo that exact search would not find
        found, total = found + len(got & want), total + len(want)
    assert found / total >= 0.99


def test_forget_rewrites_segments_and_a_warm_cache_forgets_too(tmp_path: Path) -> None:
    store = AlbumStore(LocalObjects(tmp_path), compact_every=3)
    for i in range(12):
        store.add("f", [entry(i, person=7 if i % 4 == 0 else 8)], "dlib")
    warm = AlbumStore(LocalObjects(tmp_path))
    assert len(warm.find("f", PEOPLE[7], threshold=0.6, embedder="dlib")) == 3
    old = {s.key for s in store.segments("f")}
    assert store.forget(PEOPLE[7][None], threshold=0.6) == 3
    assert warm.find("f", PEOPLE[7], threshold=0.6, embedder="dlib") == []
    assert len(warm.find("f", PEOPLE[8], threshold=0.6, embedder="dlib")) == 9
    assert not any(
        (tmp_path / k).exists() for k in old if k not in {s.key for s in store.segments("f")}
    )
    remaining = np.concatenate([warm._parts[k].rows() for k in warm._view("f").keys])
    assert (remaining @ PEOPLE[7]).max() < 0.8  # no row of the person is left in any part


def test_merge_keeps_order_and_masks() -> None:
    parts = [
        AlbumPart.of_entries([entry(0), entry(1)], "dlib"),
        AlbumPart.of_entries([entry(2)], "dlib"),
    ]
    merged = merge_parts(parts, keep=[np.array([False, True]), None])
    assert merged.photos.tolist() == ["p1.jpg", "p2.jpg"]
    assert AlbumPart.from_bytes(merged.to_bytes(), "k").photos.tolist() == ["p1.jpg", "p2.jpg"]


@pytest.mark.parametrize("embedder", ["vggface2"])
def test_a_compacted_album_still_refuses_another_embedder(tmp_path: Path, embedder: str) -> None:
    store = AlbumStore(LocalObjects(tmp_path), compact_every=2)
    for i in range(4):
        store.add("e", [entry(i)], "dlib")
    assert store.segments("e")
    with pytest.raises(Exception, match="dlib embedder"):
        store.add("e", [entry(9)], embedder)
    with pytest.raises(Exception, match="dlib embedder"):
        store.find("e", PEOPLE[0], threshold=0.6, embedder=embedder)

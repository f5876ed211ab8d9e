"""Gallery matching: nearest name, distance/similarity, the unknown threshold, file formats."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from facepipe.errors import GalleryError
from facepipe.identity.gallery import UNKNOWN, Gallery


def _unit(v: list[float]) -> np.ndarray:
    a = np.asarray(v, np.float32)
    return a / np.linalg.norm(a)


def test_nearest_name_and_consistent_scores() -> None:
    g = Gallery(["ann", "bob"], np.stack([_unit([1, 0, 0]), _unit([0, 1, 0])]))
    q = np.stack([_unit([0.9, 0.1, 0]), _unit([0.1, 0.9, 0.1])])
    m = g.match(q, threshold=1.1)
    assert [x.name for x in m] == ["ann", "bob"]
    for x in m:
        assert x.similarity is not None
        assert x.distance == pytest.approx(np.sqrt(2 - 2 * x.similarity), abs=1e-6)


def test_threshold_gives_unknown_but_keeps_closest() -> None:
    g = Gallery(["ann"], _unit([1, 0])[None])
    far = g.match(_unit([0, 1])[None], threshold=1.0)[0]
    assert far.name == UNKNOWN
    assert far.closest == "ann"
    assert far.distance == pytest.approx(np.sqrt(2), abs=1e-6)
    assert g.match(_unit([0, 1])[None], threshold=1.5)[0].name == "ann"


def test_empty_gallery_names_everyone_unknown() -> None:
    m = Gallery().match(np.ones((2, 512), np.float32), threshold=1.1)
    assert [(x.name, x.distance) for x in m] == [(UNKNOWN, None), (UNKNOWN, None)]


def test_dimension_mismatch_is_refused() -> None:
    g = Gallery(["ann"], np.ones((1, 128), np.float32))
    with pytest.raises(GalleryError, match="dimension"):
        g.match(np.ones((1, 512), np.float32), threshold=1.1)


def test_gallery_normalises_rows() -> None:
    g = Gallery(["a"], np.array([[3.0, 4.0]], np.float32))
    assert np.allclose(np.linalg.norm(g.embeddings, axis=1), 1.0)


def test_original_data_pt_format_loads() -> None:
    """The EC2 worker saved ``[embedding_list, name_list]`` with one (1, 512) tensor per photo."""
    rng = np.random.default_rng(0)
    rows = [torch.from_numpy(rng.normal(size=(1, 512)).astype(np.float32)) for _ in range(3)]
    buf = io.BytesIO()
    torch.save([rows, ["ann", "bob", "ann"]], buf)
    g = Gallery.from_bytes(buf.getvalue())
    assert g.names == ["ann", "bob", "ann"]
    assert g.embeddings.shape == (3, 512)
    top = g.match(g.embeddings[1:2], threshold=0.5)[0]
    assert (top.name, round(top.distance or 0, 5)) == ("bob", 0.0)


def test_npz_and_pt_roundtrip() -> None:
    rng = np.random.default_rng(2)
    g = Gallery(["x", "y"], rng.normal(size=(2, 512)).astype(np.float32), "vggface2")
    for data in (g.to_npz_bytes(), g.to_pt_bytes()):
        back = Gallery.from_bytes(data)
        assert back.names == ["x", "y"]
        assert np.allclose(back.embeddings, g.embeddings)
    assert Gallery.from_bytes(g.to_npz_bytes()).embedder == "vggface2"


@pytest.mark.parametrize("data", [b"", b"garbage", b"PK\x03\x04broken"])
def test_bad_gallery_files_are_clear_errors(data: bytes) -> None:
    with pytest.raises(GalleryError, match="gallery"):
        Gallery.from_bytes(data)


def test_mismatched_names_and_rows() -> None:
    with pytest.raises(GalleryError, match="2 names"):
        Gallery(["a", "b"], np.ones((3, 4), np.float32))


# --- top-k people, aggregation, the IVF index ---------------------------------------------------
def test_top_k_lists_people_once_each_best_first() -> None:
    """A person's score is their best row; each person is listed once, sorted."""
    rows = np.stack(
        [_unit([1, 0, 0]), _unit([0.9, 0.1, 0]), _unit([0.5, 0.5, 0]), _unit([0, 0, 1])]
    )
    g = Gallery(["ann", "ann", "bob", "cid"], rows)
    m = g.match(_unit([1, 0.05, 0])[None], threshold=1.1, top_k=5)[0]
    assert [p.name for p in m.matches] == ["ann", "bob", "cid"]
    sims = [p.similarity for p in m.matches]
    assert sims == sorted(sims, reverse=True)
    assert m.matches[0].similarity == pytest.approx(float(_unit([1, 0.05, 0]) @ rows[0]), abs=1e-6)
    for p in m.matches:
        assert p.distance == pytest.approx(np.sqrt(2 - 2 * p.similarity), abs=1e-6)
    assert (m.name, m.similarity) == ("ann", m.matches[0].similarity)
    assert [p.name for p in g.match(_unit([1, 0, 0])[None], 1.1, top_k=2)[0].matches] == [
        "ann",
        "bob",
    ]


def test_unknown_face_still_lists_its_closest_people() -> None:
    g = Gallery(["ann", "bob"], np.stack([_unit([1, 0]), _unit([0.8, 0.6])]))
    m = g.match(_unit([-1, 0.1])[None], threshold=1.1)[0]
    assert m.name == UNKNOWN
    assert [p.name for p in m.matches] == ["bob", "ann"]
    assert all(p.distance > 1.1 for p in m.matches)


def test_many_rows_of_one_person_do_not_crowd_out_the_others() -> None:
    rng = np.random.default_rng(3)
    base = _unit(list(rng.normal(size=16)))
    ann = np.stack([base + 0.01 * rng.normal(size=16) for _ in range(40)])
    others = rng.normal(size=(4, 16))
    g = Gallery(["ann"] * 40 + ["b", "c", "d", "e"], np.concatenate([ann, others]))
    m = g.match(base[None], threshold=1.1, top_k=5)[0]
    assert m.matches[0].name == "ann"
    assert sorted(p.name for p in m.matches) == ["ann", "b", "c", "d", "e"]


def _synthetic(n: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    from facepipe.bench.match import synthetic_faces

    names, rows, queries, _ = synthetic_faces(n, 512, photos=4, latent_dim=64, queries=200)
    return names, rows, queries


def test_ivf_index_matches_exact_search() -> None:
    """Forced onto the IVF index (a low size threshold): the same names, recall ≥ 0.99 of the
    nearest rows and of the people within the threshold."""
    from facepipe.bench.match import exact_top_rows

    names, rows, queries = _synthetic(8000)
    exact = Gallery(names, rows)
    ivf = Gallery(names, rows, index_min_size=1000)
    assert (exact.index_kind, ivf.index_kind) == ("exact", "ivf")
    got_exact = exact.match(queries, threshold=1.1)
    got_ivf = ivf.match(queries, threshold=1.1)
    assert [m.name for m in got_ivf] == [m.name for m in got_exact]
    assert all(m.name != UNKNOWN for m in got_ivf)
    same = [
        abs((a.similarity or 0) - (b.similarity or 0)) < 1e-5
        for a, b in zip(got_exact, got_ivf, strict=True)
    ]
    assert sum(same) >= 0.97 * len(same)  # else the name came from another of the person's rows
    # The rows nearest a query are its person's 4 photos: the index finds them.
    _, ids = ivf.search_index().search(queries, 4)
    want = exact_top_rows(exact.embeddings, queries, 4)
    hits = sum(len(set(a) & set(b)) for a, b in zip(ids.tolist(), want.tolist(), strict=True))
    assert hits / want.size >= 0.99
    within = [[p.name for p in m.matches if p.distance <= 1.1] for m in got_exact]
    found = [[p.name for p in m.matches] for m in got_ivf]
    hits = sum(len(set(w) & set(f)) for w, f in zip(within, found, strict=True))
    assert hits / sum(map(len, within)) >= 0.99


def test_ivf_gallery_keeps_one_copy_of_the_rows_and_can_still_export_them() -> None:
    names, rows, _ = _synthetic(4000)
    g = Gallery(names, rows, "vggface2", index_min_size=1000)
    before = g.embeddings.copy()
    g.search_index()
    assert g._vectors is None  # the index holds the only copy
    assert np.allclose(g.embeddings, before, atol=1e-6)
    back = Gallery.from_bytes(g.to_npz_bytes())
    assert back.names == names
    assert np.allclose(back.embeddings, before, atol=1e-6)


def test_without_and_plus() -> None:
    g = Gallery(["a", "b", "a"], np.eye(3, dtype=np.float32), "vggface2")
    assert g.without("a").names == ["b"]
    assert g.people() == {"a": 2, "b": 1}
    both = g.plus(Gallery(["c"], np.ones((1, 3)), "vggface2"))
    assert both.names == ["a", "b", "a", "c"]
    with pytest.raises(GalleryError, match="casia-webface"):
        g.plus(Gallery(["c"], np.ones((1, 3)), "casia-webface"))
    with pytest.raises(GalleryError, match="4-d"):
        g.plus(Gallery(["c"], np.ones((1, 4)), "vggface2"))

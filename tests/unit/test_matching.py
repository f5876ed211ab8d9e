"""Gallery matching: nearest name, distance/similarity, the unknown threshold, file formats."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from facepipe.errors import GalleryError
from facepipe.matching import UNKNOWN, Gallery


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

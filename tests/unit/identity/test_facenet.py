"""Embedder weight loading: seeded random weights, state_dict files, and clear failures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from facenet_pytorch import InceptionResnetV1

from facepipe.errors import ConfigError, WeightsUnavailable
from facepipe.identity.embedders import embed_splitting
from facepipe.identity.facenet import FacenetEmbedder
from tests.fakes import LimitedMemoryEmbedder, save_published_style_weights


def _crops(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(160, 160, 3), dtype=np.uint8) for _ in range(n)]


def _reference(model: torch.nn.Module, crops: list[np.ndarray]) -> np.ndarray:
    x = torch.from_numpy(np.stack(crops).astype(np.float32)).permute(0, 3, 1, 2)
    with torch.no_grad():
        return model((x - 127.5) / 128.0).numpy()


def test_random_seed_means_exactly_manual_seed_then_init() -> None:
    crops = _crops(3)
    torch.manual_seed(7)
    reference = InceptionResnetV1(pretrained=None).eval()
    ours = FacenetEmbedder(weights="random:7", device="cpu")
    assert ours.weights_id == "random:7"
    assert ours.is_random
    got = ours.embed(crops)
    assert got.shape == (3, 512)
    assert np.allclose(got, _reference(reference, crops), atol=1e-5)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    other = FacenetEmbedder(weights="random:8", device="cpu").embed(crops)
    assert not np.allclose(got, other, atol=1e-3)


def test_empty_batch() -> None:
    assert FacenetEmbedder(weights="random:0", device="cpu").embed([]).shape == (0, 512)


def test_state_dict_file_with_classifier_head_loads(tmp_path: Path) -> None:
    """The published files carry the logits layer; it is dropped, the rest loads strictly."""
    path = tmp_path / "20180402-114759-vggface2.pt"
    model = save_published_style_weights(path, seed=3)
    emb = FacenetEmbedder(weights=str(path), device="cpu")
    assert emb.weights_id.startswith("vggface2:sha256:")
    assert not emb.is_random
    crops = _crops(2, seed=5)
    assert np.allclose(emb.embed(crops), _reference(model, crops), atol=1e-5)


def test_sidecar_digest_is_used(tmp_path: Path) -> None:
    path = tmp_path / "w.pt"
    torch.save(InceptionResnetV1(pretrained=None).state_dict(), path)
    (tmp_path / "w.pt.sha256").write_text("abcdef0123456789ffff  w.pt\n")
    assert FacenetEmbedder(weights=str(path), device="cpu").weights_id == (
        "vggface2:sha256:abcdef0123456789"
    )


def test_missing_file_says_how_to_provide_weights(tmp_path: Path) -> None:
    with pytest.raises(WeightsUnavailable, match="FACEPIPE_WEIGHTS") as info:
        FacenetEmbedder(weights=str(tmp_path / "nope.pt"), device="cpu")
    assert "20180402-114759-vggface2.pt" in info.value.message


def test_wrong_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "wrong.pt"
    torch.save({"conv.weight": torch.zeros(1)}, path)
    with pytest.raises(WeightsUnavailable, match="not an InceptionResnetV1"):
        FacenetEmbedder(weights=str(path), device="cpu")


def test_no_file_no_cache_no_network_fails_at_init_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("network is unreachable")

    monkeypatch.setattr("facenet_pytorch.models.utils.download.download_url_to_file", offline)
    with pytest.raises(WeightsUnavailable, match="random:0") as info:
        FacenetEmbedder(weights="", device="cpu")
    assert "network is unreachable" in info.value.message
    assert str(tmp_path) in info.value.message


def test_cached_file_in_torch_home_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    torch.save(
        InceptionResnetV1(pretrained=None).state_dict(),
        tmp_path / "checkpoints" / "20180402-114759-vggface2.pt",
    )
    assert FacenetEmbedder(weights="", device="cpu").weights_id.startswith("vggface2:sha256:")


@pytest.mark.parametrize("weights", ["random:x", "random:"])
def test_bad_random_spec(weights: str) -> None:
    with pytest.raises(ConfigError, match="random:<int>"):
        FacenetEmbedder(weights=weights, device="cpu")


def test_a_batch_that_runs_out_of_memory_is_embedded_in_halves(embedder: Any) -> None:
    crops = _crops(11)
    limited = LimitedMemoryEmbedder(embedder, max_batch=3)
    splits: list[int] = []

    rows = embed_splitting(limited, crops, splits.append)

    np.testing.assert_allclose(rows, embedder.embed(crops), atol=1e-5)  # same rows, same order
    assert splits == [11, 5, 6]  # 11 → 5 + 6 → (2 + 3) + (3 + 3)
    assert max(n for n in limited.batches if n <= 3) == 3


def test_other_errors_and_a_single_crop_out_of_memory_propagate(embedder: Any) -> None:
    with pytest.raises(RuntimeError, match="can't allocate memory"):
        embed_splitting(LimitedMemoryEmbedder(embedder, max_batch=0), _crops(1))

    class Broken:
        name, dim, weights_id = "vggface2", 512, "x"

        def embed(self, crops: Any) -> np.ndarray:
            raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        embed_splitting(Broken(), _crops(4))

"""The embedder's fast paths (facepipe.identity.facenet_graph): parity with eager facenet-pytorch in
every exact mode, the lossy bfloat16 opt-in's cosine, state_dict loading without random
initialisation, and a cold start that imports neither torchvision nor facenet-pytorch's
``__init__``."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from facenet_pytorch import InceptionResnetV1

from facepipe.config import Settings
from facepipe.errors import ConfigError, WeightsUnavailable
from facepipe.identity import facenet_graph as fr
from facepipe.identity.facenet import FacenetEmbedder
from facepipe.vision.crops import standardize
from tests.fakes import save_published_style_weights

# Exact modes differ from eager float32 by rounding only (measured: 1 − cos ≈ 1e-13).
MIN_COSINE = 0.99999
EXACT_MODES = ["onnxruntime", "torch", "eager"]
ROOT = Path(__file__).resolve().parents[3]


def _crops(n: int, seed: int = 0, size: int = 160) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8) for _ in range(n)]


def _eager(model: torch.nn.Module, crops: list[np.ndarray]) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(standardize(crops))).numpy()


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def reference() -> torch.nn.Module:
    """Plain facenet-pytorch, exactly what ``random:0`` is defined as."""
    torch.manual_seed(0)
    return InceptionResnetV1(pretrained=None).eval()


@pytest.fixture(scope="module")
def by_mode() -> dict[str, FacenetEmbedder]:
    return {
        mode: FacenetEmbedder(weights="random:0", device="cpu", mode=mode)
        for mode in [*EXACT_MODES, "bfloat16"]
    }


def test_default_on_cpu_is_onnxruntime_and_exact() -> None:
    emb = FacenetEmbedder(weights="random:0", device="cpu", mode="auto")
    assert emb.mode == "onnxruntime"
    assert not emb.is_lossy


@pytest.mark.parametrize("batch", [1, 10])
@pytest.mark.parametrize("mode", EXACT_MODES)
def test_exact_modes_match_eager_facenet_pytorch(
    by_mode: dict[str, FacenetEmbedder], reference: torch.nn.Module, mode: str, batch: int
) -> None:
    crops = _crops(batch, seed=batch)
    got = by_mode[mode].embed(crops)
    want = _eager(reference, crops)
    assert got.shape == (batch, 512) and got.dtype == np.float32
    assert _cosines(got, want).min() >= MIN_COSINE
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)


def test_onnxruntime_takes_other_crop_sizes(
    by_mode: dict[str, FacenetEmbedder], reference: torch.nn.Module
) -> None:
    """FACEPIPE_IMAGE_SIZE may change the crop side: the graph's H and W are dynamic."""
    crops = _crops(3, seed=4, size=96)
    got = by_mode["onnxruntime"].embed(crops)
    assert _cosines(got, _eager(reference, crops)).min() >= MIN_COSINE


def test_bfloat16_is_opt_in_lossy_and_reports_its_cosine(
    by_mode: dict[str, FacenetEmbedder],
    reference: torch.nn.Module,
    record_property: pytest.RecordProperty,
) -> None:
    emb = by_mode["bfloat16"]
    assert emb.is_lossy
    crops = _crops(10, seed=10)
    cos = float(_cosines(emb.embed(crops), _eager(reference, crops)).min())
    record_property("bfloat16_min_cosine_vs_float32", cos)
    print(f"bfloat16 min cosine vs eager float32: {cos:.7f}")
    assert 0.999 <= cos < 1.0  # measured about 0.99999 with random:0


def test_onnxruntime_threads_stop_spinning_when_a_run_returns(
    by_mode: dict[str, FacenetEmbedder],
) -> None:
    """The session's threads spin between operators (one face: 14 ms against 17 ms when they
    sleep) but not after the run: a process that runs torch next (detection in the local
    pipeline) gets both cores back. Spinning on after a run, they burned ~27 ms of CPU in a
    0.2 s idle here."""
    import time

    embedder = by_mode["onnxruntime"]
    assert embedder.mode == "onnxruntime"
    crops = _crops(1)
    embedder.embed(crops)
    idle = []
    for _ in range(3):
        embedder.embed(crops)
        start = time.process_time()
        time.sleep(0.2)
        idle.append(time.process_time() - start)
    assert min(idle) < 0.005, idle


def test_state_dict_file_loads_without_random_initialisation(tmp_path: Path) -> None:
    """The module is built on the meta device and the file's tensors assigned: no init is
    computed, so the global RNG is untouched, and the numbers are the file's."""
    path = tmp_path / "20180402-114759-vggface2.pt"
    model = save_published_style_weights(path, seed=3)
    torch.manual_seed(123)
    expected_draw = torch.rand(4)
    torch.manual_seed(123)
    emb = FacenetEmbedder(weights=str(path), device="cpu")
    assert torch.equal(torch.rand(4), expected_draw)
    assert emb.mode == "onnxruntime"
    for name, tensor in model.state_dict().items():
        assert torch.equal(emb.model.state_dict()[name], tensor), name
    crops = _crops(10, seed=5)
    got = emb.embed(crops)
    assert _cosines(got, _eager(model, crops)).min() >= MIN_COSINE
    with torch.inference_mode():  # .model is the plain facenet-pytorch module, same weights
        eager = emb.model(torch.from_numpy(standardize(crops))).numpy()
    np.testing.assert_allclose(got, eager, atol=1e-5)


def test_baked_graph_runs_without_torch_and_matches_eager(tmp_path: Path) -> None:
    """The image's cold start: weights + the graph ``weights fetch`` baked beside them; the
    embedder (as the recognition function builds it, here with ``FACEPIPE_THREADS`` set too)
    opens the graph in ONNX Runtime and never imports torch."""
    model = fr.random_model(5)
    path = tmp_path / "vggface2.pt"
    torch.save(model.state_dict(), path)
    from facepipe.identity.embedders import file_digest

    fr.bake_onnx(model, path, file_digest(path))
    crops = _crops(3, seed=2)
    got = FacenetEmbedder(weights=str(path), device="cpu").embed(crops)
    want = fr.normalize(_eager(model, crops))
    assert (got * want).sum(1).min() > MIN_COSINE
    code = textwrap.dedent(f"""
        import sys
        from facepipe.config import Settings
        from facepipe.app.wiring import make_embedder
        e = make_embedder(Settings(weights={str(path)!r}, device="auto", threads=2))
        import numpy as np
        e.embed([np.zeros((160, 160, 3), np.uint8)])
        print(e.mode, "torch" in sys.modules)
    """)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    assert out.stdout.split() == ["onnxruntime", "False"]


def test_stale_baked_graph_is_ignored(tmp_path: Path) -> None:
    """A graph baked from other weights (sidecar digest differs) is not used."""
    path = tmp_path / "w.pt"
    torch.save(fr.random_model(1).state_dict(), path)
    fr.bake_onnx(fr.random_model(2), path, "0" * 64)  # made from something else
    emb = FacenetEmbedder(weights=str(path), device="cpu")
    assert emb._model is not None  # built from the file itself
    crops = _crops(2)
    want = fr.normalize(_eager(fr.random_model(1), crops))
    assert (emb.embed(crops) * want).sum(1).min() > MIN_COSINE


def test_misshapen_state_dict_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "w.pt"
    state = InceptionResnetV1(pretrained=None).state_dict()
    state["last_linear.weight"] = torch.zeros(128, 1792)
    torch.save(state, path)
    with pytest.raises(WeightsUnavailable, match="size mismatch"):
        FacenetEmbedder(weights=str(path), device="cpu")


def test_mode_comes_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """FACEPIPE_EMBED_MODE (or --embed-mode) reaches the embedder the services build."""
    from facepipe.app.wiring import make_embedder

    monkeypatch.setenv("FACEPIPE_EMBED_MODE", "torch")
    monkeypatch.setenv("FACEPIPE_WEIGHTS", "random:0")
    monkeypatch.setenv("FACEPIPE_DEVICE", "cpu")
    settings = Settings.from_env()
    assert settings.embed_mode == "torch"
    assert make_embedder(settings).mode == "torch"
    with pytest.raises(ConfigError, match="FACEPIPE_EMBED_MODE"):
        FacenetEmbedder(weights="random:0", device="cpu", mode="int4")


def test_handwritten_onnx_graph_is_valid_onnx() -> None:
    onnx = pytest.importorskip("onnx")
    model = onnx.load_from_string(fr.onnx_model(fr.random_model(0)))
    onnx.checker.check_model(model, full_check=True)
    assert [o.name for o in model.graph.output] == ["y"]


def test_cold_start_imports_no_torchvision_and_leaves_facenet_pytorch_importable() -> None:
    code = textwrap.dedent(
        """
        import sys
        import numpy as np
        from facepipe.identity.facenet import FacenetEmbedder

        emb = FacenetEmbedder(weights="random:0", device="cpu")
        assert emb.embed([np.zeros((160, 160, 3), np.uint8)]).shape == (1, 512)
        assert "torchvision" not in sys.modules, "torchvision imported"
        assert "facenet_pytorch" not in sys.modules, "facenet_pytorch left in sys.modules"
        import facenet_pytorch  # the real package, complete
        from facenet_pytorch import MTCNN, InceptionResnetV1
        from facenet_pytorch.models import inception_resnet_v1
        assert inception_resnet_v1.InceptionResnetV1 is InceptionResnetV1
        assert facenet_pytorch.models.mtcnn.MTCNN is MTCNN
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_embed_levers_smoke() -> None:
    from facepipe.bench.embed_levers import embed_levers

    result = embed_levers(1, levers=["eager", "onnxruntime"])
    assert result["default_mode"] == "onnxruntime"
    assert set(result["levers"]) == {"eager", "onnxruntime"}
    lever = result["levers"]["onnxruntime"]
    assert lever["min_cosine_vs_eager"] >= MIN_COSINE and lever["gflops"] > 0

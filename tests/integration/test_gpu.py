"""The CUDA path (``FACEPIPE_DEVICE=auto`` on a machine with a GPU): MTCNN's networks and the
facenet embedder on the GPU keep parity with facenet-pytorch run on the same GPU, and with this
pipeline on the CPU. Skipped where torch sees no GPU (the development machines and CI); run on
a GPU machine with ``make gpu-check``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from facenet_pytorch import MTCNN, InceptionResnetV1

from facepipe.app.pipeline import LocalPipeline
from facepipe.config import Settings
from facepipe.identity.facenet import FacenetEmbedder
from facepipe.stages.detect import Detection
from facepipe.vision.detector import FaceDetector
from tests.conftest import SAMPLES
from tests.integration.test_parity import check

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU visible to torch")


@pytest.fixture(scope="module")
def cuda_reference() -> tuple[MTCNN, InceptionResnetV1]:
    torch.manual_seed(0)
    resnet = InceptionResnetV1(pretrained=None).eval().to("cuda")
    return MTCNN(keep_all=True, device="cuda"), resnet


@pytest.fixture(scope="module")
def cuda_detection() -> Detection:
    return Detection(Settings.from_env({}), FaceDetector(device="cuda"))


@pytest.fixture(scope="module")
def cuda_embedder() -> FacenetEmbedder:
    return FacenetEmbedder(weights="random:0", device="cuda")


def test_auto_runs_both_stages_on_the_gpu(cuda_embedder: FacenetEmbedder) -> None:
    assert FaceDetector().device == "cuda"
    assert FacenetEmbedder(weights="random:0").device == "cuda"
    assert cuda_embedder.mode == "torch"  # ONNX Runtime's CPU graph is for the CPU only


@pytest.mark.parametrize("name", ["astronaut.jpg", "frames/obama-and-biden.jpg"])
def test_gpu_parity_with_facenet_pytorch_on_the_gpu(
    name: str,
    cuda_detection: Detection,
    cuda_embedder: FacenetEmbedder,
    cuda_reference: tuple[MTCNN, InceptionResnetV1],
) -> None:
    assert check(SAMPLES / name, cuda_detection, cuda_embedder, cuda_reference) >= 1


@pytest.mark.parametrize("name", ["astronaut.jpg", "frames/obama-and-biden.jpg"])
def test_gpu_results_match_the_cpu_pipeline(name: str) -> None:
    gpu = LocalPipeline(Settings.from_env({}, weights="random:0", device="cuda"))
    cpu = LocalPipeline(Settings.from_env({}, weights="random:0", device="cpu"))
    on_gpu = gpu.run_file(SAMPLES / name, with_embeddings=True)
    on_cpu = cpu.run_file(SAMPLES / name, with_embeddings=True)
    assert len(on_gpu.faces) == len(on_cpu.faces) >= 1
    for g, c in zip(on_gpu.faces, on_cpu.faces, strict=True):
        assert np.allclose(g.box, c.box, atol=1.0)
        assert float(np.dot(g.embedding, c.embedding)) >= 0.999

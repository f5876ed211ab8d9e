"""The container images: awslambdaric entrypoint, CPU-only torch, weights baked in at build.

No Docker daemon here, so the Dockerfiles are checked as text and the weight-baking step they run
(``facepipe weights fetch``) is run for real on a stand-in weights file.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from facepipe.identity.facenet import FacenetEmbedder
from tests.conftest import ROOT
from tests.fakes import save_published_style_weights

FUNCTIONS = ("detection", "recognition")


def _instructions(name: str) -> list[tuple[str, str]]:
    text = (ROOT / "functions" / name / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


@pytest.mark.parametrize("name", FUNCTIONS)
def test_image_runs_awslambdaric_with_app_handler(name: str) -> None:
    ins = _instructions(name)
    ops = dict(ins)
    # The base is a build argument whose default is what users build from.
    assert ops["FROM"] == "${BASE_IMAGE}"
    args = [rest for op, rest in ins if op == "ARG"]
    assert "BASE_IMAGE=python:${PYTHON_VERSION}-slim" in args
    assert json.loads(ops["ENTRYPOINT"]) == ["python", "-m", "awslambdaric"]
    assert json.loads(ops["CMD"]) == ["app.handler"]
    copies = [rest for op, rest in ins if op == "COPY"]
    assert any(c.startswith(f"functions/{name}/app.py ") and c.endswith(" ./") for c in copies)


def test_detection_image_holds_every_handler_module_the_template_names() -> None:
    """The detection image serves two functions: each one's ImageConfig Command (or the CMD)
    names a module that the Dockerfile copies into /var/task."""
    from samtranslator.yaml_helper import yaml_parse

    tpl = yaml_parse((ROOT / "template.yaml").read_text())
    copied = {
        Path(src).name
        for op, rest in _instructions("detection")
        if op == "COPY" and "functions/detection/" in rest
        for src in shlex.split(rest)[:-1]
    }
    handlers = {
        (resource["Properties"].get("ImageConfig") or {}).get("Command", ["app.handler"])[0]
        for resource in tpl["Resources"].values()
        if resource.get("Metadata", {}).get("Dockerfile") == "functions/detection/Dockerfile"
    }
    assert handlers == {"app.handler", "ingest_app.handler"}
    for handler in handlers:
        module = handler.rpartition(".")[0] + ".py"
        assert module in copied
        assert (ROOT / "functions" / "detection" / module).is_file()


@pytest.mark.parametrize("name", FUNCTIONS)
def test_image_installs_cpu_torch_facenet_no_deps_and_the_library(name: str) -> None:
    ins = _instructions(name)
    runs = " ".join(rest for op, rest in ins if op == "RUN")
    # CPU torch from PyTorch's CPU index by default (a build here points it at a local copy)
    assert "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in [
        r for op, r in ins if op == "ARG"
    ]
    assert "--index-url ${TORCH_INDEX_URL}" in runs and "torch==${TORCH_VERSION}" in runs
    assert "--no-deps facenet-pytorch" in runs
    # with the dlib extra, so that FACEPIPE_EMBEDDER=dlib (template parameter Embedder) works;
    # recognition also with the vectors extra, so that a lancedb+s3:// gallery or album loads
    extras = "dlib,vectors" if name == "recognition" else "dlib"
    assert f'pip install "/tmp/shared[{extras}]" awslambdaric' in runs


def test_recognition_image_bakes_weights_and_points_the_env_at_them() -> None:
    ins = _instructions("recognition")
    runs = " ".join(rest for op, rest in ins if op == "RUN")
    assert "facepipe weights fetch" in runs
    env = " ".join(rest for op, rest in ins if op == "ENV")
    assert "FACEPIPE_WEIGHTS=/opt/facepipe/weights/${EMBEDDER}.pt" in env


def test_template_points_at_these_dockerfiles() -> None:
    from samtranslator.yaml_helper import yaml_parse

    tpl = yaml_parse((ROOT / "template.yaml").read_text())
    for logical, name in (
        ("DetectionFunction", "detection"),
        ("RecognitionFunction", "recognition"),
    ):
        meta = tpl["Resources"][logical]["Metadata"]
        assert meta["DockerContext"] == "."
        assert meta["Dockerfile"] == f"functions/{name}/Dockerfile"
        assert (ROOT / meta["Dockerfile"]).is_file()


def test_the_weight_baking_step_runs(tmp_path: Path) -> None:
    """Run the Dockerfile's fetch command on a stand-in for the published file (with its
    classifier head) and load the result the way the Lambda does at cold start."""
    src = tmp_path / "src"
    model = save_published_style_weights(src / "20180402-114759-vggface2.pt", seed=11)
    runs = [rest for op, rest in _instructions("recognition") if op == "RUN"]
    fetch = next(r for r in runs if "facepipe weights fetch" in r).split("&&")[0]
    args = dict(
        r.split("=", 1) for op, r in _instructions("recognition") if op == "ARG" and "=" in r
    )
    assert args["WEIGHTS"] == "published"  # the default bakes the real file, never random ones
    argv = shlex.split(fetch.replace("${EMBEDDER}", "vggface2").replace("${WEIGHTS}", "published"))
    argv = [str(src) if a == "/tmp/weights" else a for a in argv]
    argv = [str(tmp_path / "out") if a == "/opt/facepipe/weights" else a for a in argv]
    facepipe = Path(sys.executable).with_name("facepipe")
    subprocess.run([str(facepipe), *argv[1:]], check=True, capture_output=True, timeout=120)
    baked = tmp_path / "out" / "vggface2.pt"
    assert (tmp_path / "out" / "vggface2.pt.sha256").is_file()
    assert (tmp_path / "out" / "vggface2.pt.onnx").is_file()  # the graph cold starts open
    emb = FacenetEmbedder(weights=str(baked), device="cpu")
    assert emb.weights_id.startswith("vggface2:sha256:")
    assert emb._model is None  # ran from the baked graph: no torch module was built
    x = torch.zeros(1, 3, 160, 160)
    with torch.no_grad():
        assert torch.allclose(emb.model(x), model(x), atol=1e-6)
        want = torch.nn.functional.normalize(model(x), dim=1).numpy()
    got = emb.embed([np.full((160, 160, 3), 127, np.uint8)])  # standardizes to ~0
    assert float(got[0] @ want[0]) > 0.999


def test_a_test_build_bakes_random_weights_that_every_result_names(tmp_path: Path) -> None:
    """WEIGHTS=random:<seed> (image test builds, where the published file cannot be had): the
    same baking (file, digest, ONNX graph: a real cold start), the same numbers as
    FACEPIPE_WEIGHTS=random:<seed>, and the results say random:<seed>, not a checksum."""
    facepipe = Path(sys.executable).with_name("facepipe")
    done = subprocess.run(
        [str(facepipe), "weights", "fetch", "--weights", "random:3", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "seeded random weights (random:3)" in done.stderr
    baked = FacenetEmbedder(weights=str(tmp_path / "vggface2.pt"), device="cpu")
    assert (baked.weights_id, baked.mode, baked._model) == ("random:3", "onnxruntime", None)
    crop = [np.random.default_rng(0).integers(0, 255, (160, 160, 3), dtype=np.uint8)]
    same = FacenetEmbedder(weights="random:3", device="cpu").embed(crop)
    assert float(baked.embed(crop)[0] @ same[0]) > 0.99999
    # A real file fetched again over it is no longer labelled random.
    src = tmp_path / "src"
    save_published_style_weights(src / "20180402-114759-vggface2.pt", seed=1)
    subprocess.run(
        [str(facepipe), "weights", "fetch", "--from-dir", str(src), "--out", str(tmp_path)],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert FacenetEmbedder(weights=str(tmp_path / "vggface2.pt")).weights_id.startswith("vggface2:")


def test_recognition_image_labels_its_weights() -> None:
    labels = [rest for op, rest in _instructions("recognition") if op == "LABEL"]
    assert any("org.facepipe.weights=${WEIGHTS}" in label for label in labels)

"""The images' package set, reproduced here: it is what the Dockerfiles install, and every handler
runs with nothing else importable (a module missing from the images' dependencies fails here
instead of in the first Lambda invocation)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from packaging.requirements import Requirement

from facepipe.local.image_env import IMAGES, NO_DEPS, guard_source, image_distributions
from tests.conftest import ROOT, SAMPLES
from tests.unit.functions.test_dockerfiles import FUNCTIONS, _instructions
from tests.unit.test_cold_start import ENV


def _pip_installs(name: str) -> tuple[set[str], set[str]]:
    """Distribution names (with extras) the Dockerfile's ``pip install`` lines name, and those
    installed ``--no-deps``."""
    names, no_deps = set(), set()
    for op, rest in _instructions(name):
        if op != "RUN":
            continue
        for command in re.split(r"&&", rest):
            words = command.split()
            if words[:2] != ["pip", "install"]:
                continue
            skip_value = False
            for word in words[2:]:
                word = word.strip('"')
                if skip_value:  # the value of --index-url / --extra-index-url
                    skip_value = False
                    continue
                if word in ("--index-url", "--extra-index-url"):
                    skip_value = True
                    continue
                if word.startswith("-") or word.startswith("https://"):
                    continue
                if word.startswith("/tmp/shared"):
                    word = "facepipe" + word.removeprefix("/tmp/shared")
                word = word.split("==")[0].replace("${TORCH_VERSION}", "")
                names.add(word)
                if "--no-deps" in words:
                    no_deps.add(Requirement(word).name)
    return names, no_deps


@pytest.mark.parametrize("name", FUNCTIONS)
def test_image_installs_are_the_dockerfiles(name: str) -> None:
    names, no_deps = _pip_installs(name)
    assert names == set(IMAGES[name])
    assert no_deps == set(NO_DEPS)


def test_the_development_extras_are_not_in_the_image() -> None:
    image = image_distributions()
    assert {"boto3", "onnxruntime", "opencv-python-headless", "dlib-bin", "torch"} <= image
    assert not {"moto", "aws-sam-cli", "pytest", "torchvision", "awscrt"} & image


SCRIPT = """
import json, sys
import numpy as np
from PIL import Image
sys.path.insert(0, sys.argv[1])
import app as detection
faces = detection.SERVICE.detection.detector.detect(Image.open(sys.argv[2]).convert("RGB"))
import ingest_app
sys.path[0] = sys.argv[3]
del sys.modules["app"]
import app as recognition
vectors = recognition.SERVICE.recognition.embedder.embed([faces[0].crop])
try:
    import awscrt
    hidden = False
except ModuleNotFoundError:
    hidden = True
print(json.dumps({"faces": len(faces), "dim": int(vectors.shape[1]), "hidden": hidden}))
"""


def test_handlers_run_on_the_image_package_set_alone() -> None:
    """Both functions' modules imported, a face detected and embedded, with every module of
    this environment that the images do not install made unimportable first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FACEPIPE_", "AWS_"))}
    env.update(ENV, FACEPIPE_WEIGHTS="random:0")
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            guard_source() + SCRIPT,
            str(ROOT / "functions" / "detection"),
            str(SAMPLES / "astronaut.jpg"),
            str(ROOT / "functions" / "recognition"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "faces": 1,
        "dim": 512,
        "hidden": True,
    }

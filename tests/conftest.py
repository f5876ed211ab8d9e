"""Shared fixtures: paths, data folders, and models loaded once per session."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"
SHARED_FACES = ROOT.parent / "shared" / "faces"
_SCRIPT = Path(sys.executable).with_name("facepipe")
# The console script as a person runs it (the module where the script is not installed).
FACEPIPE = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-m", "facepipe.cli.main"]


def run_facepipe(
    *args: str, stdin: str | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``facepipe ARGS...`` in its own process, from the repo root, under the test's (isolated)
    environment; stdout and stderr captured as text."""
    return subprocess.run(
        [*FACEPIPE, *args],
        input=stdin,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def no_vggface2(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine without the VGGFace2 file and offline, for this test and the processes it
    starts: facenet-pytorch's cache is an empty folder and every download goes to a closed
    loopback proxy (so it fails at once, here and on a connected machine alike)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch-home")))
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")


@pytest.fixture(autouse=True)
def _isolated_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """No test sees the developer's FACEPIPE_* settings, their gallery and albums (a data dir
    of its own) or real AWS credentials."""
    import os

    for name in list(os.environ):
        if name.startswith(("FACEPIPE_", "AWS_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("FACEPIPE_DATA_DIR", str(tmp_path_factory.mktemp("data-dir")))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")


@pytest.fixture(scope="session")
def shared_faces() -> Path:
    if not (SHARED_FACES / "identities.csv").is_file():
        pytest.skip(f"{SHARED_FACES} is absent (test data beside the repo)")
    return SHARED_FACES


@pytest.fixture(scope="session")
def detector():  # type: ignore[no-untyped-def]
    from facepipe.vision.detector import FaceDetector

    return FaceDetector(device="cpu")


@pytest.fixture(scope="session")
def embedder():  # type: ignore[no-untyped-def]
    from facepipe.identity.facenet import FacenetEmbedder

    return FacenetEmbedder(weights="random:0", device="cpu")

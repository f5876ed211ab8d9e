"""`make install`'s pip steps (scripts/install.sh), run for real with a stand-in for the venv's
python: a script that records every `python -m pip ...` it gets and answers as the test says,
and a stand-in `nvidia-smi`. PyTorch's CPU index is an HTTP server on 127.0.0.1, or a loopback
port that refuses or never answers."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from tests.conftest import ROOT

SCRIPT = ROOT / "scripts" / "install.sh"
PINS = "torch==2.14.1 torchvision==0.29.1"
# What pip 26 printed after `pip install -r requirements-dev.txt` in make install, verbatim.
CONFLICT_HEADER = (
    "ERROR: pip's dependency resolver does not currently take into account all the packages that"
    " are installed. This behaviour is the source of the following dependency conflicts."
)
FACENET_CONFLICTS = [
    "facenet-pytorch 2.6.0 requires numpy<2.0.0,>=1.24.0, but you have numpy 2.4.6 which is"
    " incompatible.",
    "facenet-pytorch 2.6.0 requires Pillow<10.3.0,>=10.2.0, but you have pillow 13.0.0 which is"
    " incompatible.",
    "facenet-pytorch 2.6.0 requires torch<2.3.0,>=2.2.0, but you have torch 2.14.1 which is"
    " incompatible.",
    "facenet-pytorch 2.6.0 requires torchvision<0.18.0,>=0.17.0, but you have torchvision 0.29.1"
    " which is incompatible.",
]
OTHER_CONFLICT = (
    "aws-sam-cli 1.150.0 requires click==8.1.8, but you have click 8.2.1 which is incompatible."
)

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="no bash on this machine")


class Fakes:
    """The stand-in python and nvidia-smi in a folder, and what the fake pip was asked."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bin = root / "bin"
        self.bin.mkdir()
        self.log = root / "pip.log"
        self.python = self.bin / "python"
        # `python -m pip ARGS`: ARGS appended to pip.log; when ARGS contain the text of a file
        # answer-N.match, answer-N.stderr goes to stderr and pip exits with answer-N.status.
        # Anything else (the script's probe of the CPU index) runs on the real interpreter.
        self.python.write_text(
            f"""#!/usr/bin/env bash
if [ "$1" = -m ] && [ "$2" = pip ]; then
    shift 2
    echo "$*" >> "{self.log}"
    for match in "{root}"/answer-*.match; do
        [ -e "$match" ] || continue
        case "$*" in *"$(cat "$match")"*)
            cat "${{match%.match}}.stderr" >&2
            exit "$(cat "${{match%.match}}.status")" ;;
        esac
    done
    exit 0
fi
exec "{sys.executable}" "$@"
"""
        )
        self.python.chmod(0o755)
        self.gpu(False)

    def gpu(self, present: bool) -> None:
        """`nvidia-smi -L` as on a GPU machine, or as where the driver finds none."""
        smi = self.bin / "nvidia-smi"
        smi.write_text(
            "#!/usr/bin/env bash\necho 'GPU 0: NVIDIA H200 (UUID: GPU-0f0e)'\n"
            if present
            else "#!/usr/bin/env bash\necho \"NVIDIA-SMI has failed because it couldn't"
            ' communicate with the NVIDIA driver."\nexit 9\n'
        )
        smi.chmod(0o755)

    def answer(self, match: str, stderr: str, status: int = 0) -> None:
        n = len(list(self.root.glob("answer-*.match")))
        (self.root / f"answer-{n}.match").write_text(match)
        (self.root / f"answer-{n}.stderr").write_text(stderr)
        (self.root / f"answer-{n}.status").write_text(str(status))

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def install(self, index: str, **env: str) -> subprocess.CompletedProcess[str]:
        import os

        outside = {k: v for k, v in os.environ.items() if k not in ("TORCH_BUILD", "PROBE_TIMEOUT")}
        return subprocess.run(
            ["bash", str(SCRIPT)],
            env={
                **outside,
                "PATH": f"{self.bin}:{os.environ['PATH']}",
                "PY": str(self.python),
                "TORCH_PINS": PINS,
                "TORCH_CPU_INDEX": index,
                **env,
            },
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


class Index(BaseHTTPRequestHandler):
    """PyTorch's CPU index: 200 for every page, each path asked recorded."""

    asked: ClassVar[list[str]]

    def do_GET(self) -> None:
        self.asked.append(self.path)
        body = b"<html><body><a href='torch-2.14.1+cpu.whl'>torch</a></body></html>"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fakes(tmp_path: Path) -> Fakes:
    return Fakes(tmp_path)


@pytest.fixture
def cpu_index() -> Iterator[tuple[str, list[str]]]:
    asked: list[str] = []
    handler = type("RecordingIndex", (Index,), {"asked": asked})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/whl/cpu", asked
    server.shutdown()
    server.server_close()


def refused_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/whl/cpu"


def test_no_gpu_installs_the_cpu_build_from_the_cpu_index(
    fakes: Fakes, cpu_index: tuple[str, list[str]]
) -> None:
    url, asked = cpu_index
    done = fakes.install(url)
    assert done.returncode == 0, done.stderr
    assert asked == ["/whl/cpu/torch/"]
    assert fakes.calls() == [
        f"install --quiet --extra-index-url {url} {PINS}",
        "install --quiet --no-deps facenet-pytorch==2.6.0",
        "install --quiet -r requirements-dev.txt",
    ]
    assert f"torch CPU build ({PINS} from {url})" in done.stdout


@pytest.mark.parametrize(
    ("gpu", "build", "cpu"),
    [(True, "auto", False), (False, "cuda", False), (True, "cpu", True), (False, "cpu", True)],
)
def test_torch_build_follows_the_gpu_unless_forced(
    fakes: Fakes, cpu_index: tuple[str, list[str]], gpu: bool, build: str, cpu: bool
) -> None:
    url, asked = cpu_index
    fakes.gpu(gpu)
    done = fakes.install(url, TORCH_BUILD=build)
    assert done.returncode == 0, done.stderr
    torch_step = fakes.calls()[0]
    assert torch_step == (
        f"install --quiet --extra-index-url {url} {PINS}" if cpu else f"install --quiet {PINS}"
    )
    assert bool(asked) == cpu  # the CPU index is probed only when it is to be used


def test_an_unknown_torch_build_is_refused(fakes: Fakes) -> None:
    done = fakes.install(refused_url(), TORCH_BUILD="rocm")
    assert done.returncode == 2
    assert "TORCH_BUILD must be auto, cpu or cuda, not 'rocm'" in done.stderr
    assert fakes.calls() == []


@pytest.mark.parametrize("answer", ["refuses", "never answers"])
def test_an_unreachable_cpu_index_falls_back_to_pypi_in_one_line(fakes: Fakes, answer: str) -> None:
    with socket.socket() as silent:
        if answer == "refuses":
            url = refused_url()
        else:  # accepts the connection (the backlog does), never sends a byte
            silent.bind(("127.0.0.1", 0))
            silent.listen()
            url = f"http://127.0.0.1:{silent.getsockname()[1]}/whl/cpu"
        start = time.monotonic()
        done = fakes.install(url, PROBE_TIMEOUT="1")
        elapsed = time.monotonic() - start
    assert done.returncode == 0, done.stderr
    assert elapsed < 10
    assert fakes.calls()[0] == f"install --quiet {PINS}"
    assert done.stderr.splitlines() == [
        f"install: {url} cannot be reached; installing PyPI's torch build instead"
        " (on Linux the CUDA one, ~4 GB more)"
    ]


def test_pips_expected_facenet_conflicts_become_one_note(
    fakes: Fakes, cpu_index: tuple[str, list[str]]
) -> None:
    fakes.answer("-r requirements-dev.txt", "\n".join([CONFLICT_HEADER, *FACENET_CONFLICTS, ""]))
    done = fakes.install(cpu_index[0])
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        "note: pip says facenet-pytorch 2.6.0 wants numpy<2.0.0,>=1.24.0, Pillow<10.3.0,>=10.2.0,"
        " torch<2.3.0,>=2.2.0, torchvision<0.18.0,>=0.17.0; expected: make install puts it in"
        " with --no-deps beside torch 2.14.1, which it works with"
    ]


def test_other_pip_conflicts_and_errors_still_show(
    fakes: Fakes, cpu_index: tuple[str, list[str]]
) -> None:
    after = "WARNING: something pip says after the block"
    block = [CONFLICT_HEADER, FACENET_CONFLICTS[0], OTHER_CONFLICT, *FACENET_CONFLICTS[1:], after]
    fakes.answer("-r requirements-dev.txt", "\n".join([*block, ""]))
    done = fakes.install(cpu_index[0])
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert lines[:3] == [CONFLICT_HEADER, OTHER_CONFLICT, after]
    assert lines[3].startswith("note: pip says facenet-pytorch 2.6.0 wants numpy<2.0.0,>=1.24.0,")
    assert len(lines) == 4


def test_a_failing_pip_fails_the_install_with_its_error(
    fakes: Fakes, cpu_index: tuple[str, list[str]]
) -> None:
    error = "ERROR: No matching distribution found for torch==2.14.1"
    fakes.answer("torch==2.14.1", f"{error}\n", status=1)
    done = fakes.install(cpu_index[0])
    assert done.returncode == 1
    assert done.stderr.splitlines() == [error]
    assert len(fakes.calls()) == 1  # nothing after the failed step


@pytest.mark.skipif(shutil.which("make") is None, reason="no make on this machine")
def test_make_install_passes_its_variables_to_the_script() -> None:
    shown = subprocess.run(
        ["make", "-n", "install", "TORCH_BUILD=cpu", "TORCH_CPU_INDEX=http://127.0.0.1:9/cpu"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert (
        f'PY=.venv/bin/python TORCH_PINS="{PINS}" TORCH_BUILD="cpu"'
        ' TORCH_CPU_INDEX="http://127.0.0.1:9/cpu" scripts/install.sh'
    ) in shown

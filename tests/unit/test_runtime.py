"""Process settings for torch: device choice, and the allocator setting that keeps MTCNN's big
buffers resident."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
import torch

from facepipe.errors import ConfigError
from facepipe.runtime import (
    GOMP_SPINCOUNT,
    OPENMP_WAIT_ENV,
    limit_openmp_spin,
    resolve_device,
)

# A fresh interpreter allocates three 24 MB tensors (P-net feature maps' size, alive together as
# in a forward pass) and frees them, 20 times, with or without keep_freed_memory(), and reports
# the page faults of the last 10 rounds.
FAULTS = """
import json, resource, sys, torch
from facepipe.runtime import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
def rounds(n):
    for _ in range(n):
        maps = [torch.ones(6_000_000) for _ in range(3)]  # 24 MB each, touched
        del maps
rounds(10)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
rounds(10)
print(json.dumps({"applied": applied,
                  "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")


def _fresh(script: str, mode: str, drop: tuple[str, ...], env: dict[str, str]) -> dict[str, Any]:
    """``script`` run by a fresh interpreter with argument ``mode``, in this environment less the
    variables starting with one of ``drop`` and plus ``env``; its last line of output, as JSON."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    out = subprocess.run(
        [sys.executable, "-c", script, mode],
        env={**clean, **env},
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    answer: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return answer


def _faults(mode: str, **env: str) -> dict[str, Any]:
    return _fresh(FAULTS, mode, ("MALLOC_", "GLIBC_"), env)


@linux_only
def test_freed_tensor_memory_is_reused_instead_of_refaulted() -> None:
    """Kept: no page fault once warm. With glibc's static 128 KiB thresholds pinned from the
    environment (which keep_freed_memory leaves alone), every round maps and faults the 72 MB
    in again (~17,600 pages); glibc's own dynamic default lands in between from run to run."""
    kept = _faults("keep")
    assert kept["applied"] is True
    assert kept["faults"] < 500
    pinned = _faults("keep", MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")
    assert pinned["applied"] is False
    assert pinned["faults"] > 10 * 15_000


no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible here")


@no_gpu
def test_cuda_without_a_gpu_is_a_config_error_naming_the_setting() -> None:
    with pytest.raises(ConfigError, match=r"FACEPIPE_DEVICE=cuda, but torch .* sees no GPU"):
        resolve_device("cuda")


@no_gpu
def test_auto_falls_back_to_cpu_and_cpu_passes_through() -> None:
    assert resolve_device("auto") == "cpu"
    assert resolve_device("cpu") == "cpu"


@no_gpu
def test_detector_asked_for_cuda_fails_at_init_with_the_config_error() -> None:
    from facepipe.vision.detector import FaceDetector

    with pytest.raises(ConfigError, match="FACEPIPE_DEVICE=cuda"):
        FaceDetector(device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU visible to torch")
def test_auto_picks_cuda_where_torch_sees_a_gpu() -> None:
    assert resolve_device("auto") == "cuda"
    assert resolve_device("cuda") == "cuda"


# A fresh interpreter makes facepipe's process setup (or not), then imports torch, runs one
# parallel matrix product at a time and reports the median CPU time the process burns in the
# 30 ms after each, while the calling thread sleeps: torch's OpenMP threads spinning before they
# go to sleep.
SPIN = """
import json, os, statistics, sys, time
import facepipe  # importing the package alone changes nothing
if sys.argv[1] == "facepipe":
    from facepipe.runtime import setup_process
    setup_process()
import torch
x = torch.rand(1000, 1000)
burned = []
for _ in range(15):
    x @ x
    start = time.process_time()
    time.sleep(0.03)
    burned.append(time.process_time() - start)
print(json.dumps({"spincount": os.environ.get("GOMP_SPINCOUNT"),
                  "threads": torch.get_num_threads(),
                  "burned_ms": 1000 * statistics.median(burned)}))
"""


def _spin(mode: str, **env: str) -> dict[str, Any]:
    return _fresh(SPIN, mode, OPENMP_WAIT_ENV, env)


def test_process_setup_shortens_torchs_openmp_spin() -> None:
    """``setup_process()`` before torch sets ``GOMP_SPINCOUNT`` and torch's idle OpenMP threads
    burn less CPU after each operation (here ~2.5 ms against ~5.5 ms by default; where torch
    runs a single thread there is no pool to spin). A process's own setting is kept."""
    rounds = []
    for _ in range(3):  # a busy machine can leave idle threads no core to spin on: try again
        ours, default = _spin("facepipe"), _spin("torch")
        assert ours["spincount"] == str(GOMP_SPINCOUNT) and default["spincount"] is None
        if not (isinstance(default["threads"], int) and default["threads"] >= 2):
            break
        rounds.append((float(ours["burned_ms"]), float(default["burned_ms"])))
        if rounds[-1][0] < 0.8 * rounds[-1][1]:
            break
    else:
        pytest.fail(f"facepipe's spin was not shorter in 3 rounds (ours, default ms): {rounds}")
    assert _spin("facepipe", GOMP_SPINCOUNT="7")["spincount"] == "7"
    assert _spin("facepipe", OMP_WAIT_POLICY="active")["spincount"] is None


def test_limit_openmp_spin_leaves_a_process_that_already_loaded_torch_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in OPENMP_WAIT_ENV:
        monkeypatch.delenv(name, raising=False)
    assert "torch" in sys.modules  # imported by this module: libgomp has read its settings
    assert limit_openmp_spin() is False
    assert "GOMP_SPINCOUNT" not in os.environ


def test_process_init_collects_nothing_during_the_init_and_freezes_what_it_built() -> None:
    """The handlers' and workers' init: no garbage collection inside, the collector back on
    after it with the init's objects frozen, also when the init fails."""
    import gc

    from facepipe.runtime import ProcessSetup, process_init

    assert gc.isenabled()
    frozen = gc.get_freeze_count()
    try:
        with process_init() as setup:
            assert isinstance(setup, ProcessSetup)
            assert not gc.isenabled()
            built = [[i] for i in range(1000)]  # noqa: F841  (the init's objects)
        assert gc.isenabled() and gc.get_freeze_count() >= frozen + 1000
        with pytest.raises(RuntimeError), process_init():
            raise RuntimeError("the init failed")
        assert gc.isenabled()
    finally:
        gc.unfreeze()

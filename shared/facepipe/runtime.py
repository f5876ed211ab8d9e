"""How a facepipe process runs: the one process-setup call, torch's device and thread count.

Every process that detects or embeds makes one explicit setup call before it imports torch: a
Lambda handler and a worker wrap their init in :func:`process_init`, the ``facepipe`` console
script calls :func:`setup_process`. Importing ``facepipe`` changes nothing process-wide.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from facepipe.errors import ConfigError

# NVIDIA's driver exposes these device nodes (and the container runtimes mount them) wherever
# CUDA can work; without them torch.cuda.is_available() is False.
NVIDIA_DEVICE_NODES = ("/dev/nvidiactl", "/dev/nvidia0")


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda`` when a GPU is visible, else ``cpu``. ``cuda`` is checked: without a
    GPU torch can use, :class:`ConfigError` says so at init instead of a torch error on the
    first model moved there. Without NVIDIA device nodes ``auto`` answers ``cpu`` without
    importing torch (2 s), which the recognition function on ONNX Runtime otherwise never
    needs."""
    if device == "cpu":
        return device
    if device == "auto" and not any(os.path.exists(node) for node in NVIDIA_DEVICE_NODES):
        return "cpu"
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU-only build"
        raise ConfigError(
            f"FACEPIPE_DEVICE={device}, but torch ({torch.__version__}, {build}) sees no GPU: "
            "use auto or cpu, or run where NVIDIA's driver and a GPU are visible"
        )
    return device


def configure_threads(threads: int) -> None:
    """Set torch's intra-op thread count (0 keeps torch's default of one per core)."""
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


# libgomp (the OpenMP runtime of torch's Linux wheels) reads its spin count once, as torch loads
# it; a process started with either of these keeps its own.
OPENMP_WAIT_ENV = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")
GOMP_SPINCOUNT = 100_000


def limit_openmp_spin() -> bool:
    """Let torch's idle OpenMP threads spin for ~2 ms instead of libgomp's default ~6 ms before
    they sleep, by setting ``GOMP_SPINCOUNT`` (300,000 by default) before torch is imported.

    The threads spin after each parallel operation, waiting for the next one. Between the
    P-net's many short operations that is what keeps them fast (``OMP_WAIT_POLICY=PASSIVE`` or
    a spin count of 10,000 made detection slower), but after a frame they go on taking a core
    from whatever runs next: the ONNX Runtime embedder in a process that runs both stages (the
    local pipeline, the worker), the NumPy resampling threads, the SQS send. The whole pipeline
    measured 0.96–0.97× its time against facenet-pytorch's with 30,000 or 100,000 (the
    benchmark's ratio 0.473–0.477 against 0.492–0.499 with the default, runs in turn);
    detection alone moved within the noise.

    Part of :func:`setup_process`; does nothing once torch is imported
    (libgomp has read its settings) or when the process was started with ``GOMP_SPINCOUNT`` or
    ``OMP_WAIT_POLICY``. Returns whether it set the variable."""
    if "torch" in sys.modules or any(k in os.environ for k in OPENMP_WAIT_ENV):
        return False
    os.environ["GOMP_SPINCOUNT"] = str(GOMP_SPINCOUNT)
    return True


# glibc's mallopt parameters (malloc.h) and the environment variables through which glibc takes
# the same settings at start-up; a process started with any of these keeps its own.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
GLIBC_MALLOC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")
MMAP_THRESHOLD = 32 << 20  # glibc's largest (HEAP_MAX_SIZE / 2 on 64-bit)
TRIM_THRESHOLD = 512 << 20


def keep_freed_memory() -> bool:
    """Let glibc's malloc keep freed tensor memory for the next frame instead of returning it.

    By default glibc serves large buffers with ``mmap`` and trims the heap's top once it is past
    twice the largest block freed so far, so the buffers of every frame go back to the kernel
    and the next frame faults them in again, page by page and zero-filled: MTCNN's feature maps
    (10–30 MB per pyramid level of a 1080p frame) took some 13,000 page faults per P-net call on
    the largest level here, 71 ms against 40 ms without. With the mmap threshold at glibc's
    maximum (32 MiB) and the heap trimmed only above 512 MiB, those buffers are reused.
    Process-wide; glibc on Linux only (elsewhere, or when the process was started with
    ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_`` or ``GLIBC_TUNABLES``, nothing
    changes). Returns whether the settings were applied."""
    if not sys.platform.startswith("linux") or any(k in os.environ for k in GLIBC_MALLOC_ENV):
        return False
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):  # not glibc (musl has it too, as a no-op)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )


@dataclass(frozen=True)
class ProcessSetup:
    """What :func:`setup_process` changed (False: the process's own setting was kept)."""

    openmp_spin: bool
    allocator: bool


def setup_process() -> ProcessSetup:
    """The process-wide settings, once, before torch is imported: torch's idle OpenMP threads
    spin less (:func:`limit_openmp_spin`) and glibc keeps freed tensor memory for the next
    frame (:func:`keep_freed_memory`)."""
    return ProcessSetup(openmp_spin=limit_openmp_spin(), allocator=keep_freed_memory())


@contextmanager
def process_init() -> Iterator[ProcessSetup]:
    """A function's or worker's init: ``with process_init(): <imports and models>``.

    :func:`setup_process`, and no garbage collection while the init runs: it allocates about a
    million objects (torch, boto3, the models) that live as long as the process, and CPython's
    full collections would walk them again and again (0.2 s of a 1.5 s detection init). At the
    end the init's objects are frozen out of every later collection (``gc.freeze``)."""
    gc.disable()
    try:
        yield setup_process()
    finally:
        gc.freeze()
        gc.enable()

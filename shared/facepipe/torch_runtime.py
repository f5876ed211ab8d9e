"""Torch process settings shared by both stages: device choice and thread count."""

from __future__ import annotations

import os

# NVIDIA's driver exposes these device nodes (and the container runtimes mount them) wherever
# CUDA can work; without them torch.cuda.is_available() is False.
NVIDIA_DEVICE_NODES = ("/dev/nvidiactl", "/dev/nvidia0")


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda`` when a GPU is visible, else ``cpu``; other values pass through.
    Without NVIDIA device nodes the answer is ``cpu`` without importing torch (2 s), which the
    recognition function on ONNX Runtime otherwise never needs."""
    if device != "auto":
        return device
    if not any(os.path.exists(node) for node in NVIDIA_DEVICE_NODES):
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def configure_threads(threads: int) -> None:
    """Set torch's intra-op thread count (0 keeps torch's default of one per core)."""
    if threads > 0:
        import torch

        torch.set_num_threads(threads)

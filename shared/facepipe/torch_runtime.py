"""Torch process settings shared by both stages: device choice and thread count."""

from __future__ import annotations


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda`` when a GPU is visible, else ``cpu``; other values pass through."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def configure_threads(threads: int) -> None:
    """Set torch's intra-op thread count (0 keeps torch's default of one per core)."""
    if threads > 0:
        import torch

        torch.set_num_threads(threads)

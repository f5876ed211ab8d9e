"""Test stand-ins that several test modules share."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from facenet_pytorch import InceptionResnetV1


def save_published_style_weights(path: Path, seed: int) -> torch.nn.Module:
    """Write seeded InceptionResnetV1 weights shaped like facenet-pytorch's published VGGFace2
    file (with its 8631-class logits head) and return the model they came from."""
    torch.manual_seed(seed)
    model = InceptionResnetV1(pretrained=None).eval()
    state = model.state_dict()
    state["logits.weight"] = torch.zeros(8631, 512)
    state["logits.bias"] = torch.zeros(8631)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return model


class LimitedMemoryEmbedder:
    """A real embedder that runs out of memory, as torch's CPU allocator reports it, when asked
    for more than ``max_batch`` crops at once (a function with too little memory for its batch).
    ``batches`` records the size of every call."""

    def __init__(self, inner: Any, max_batch: int) -> None:
        self.inner = inner
        self.max_batch = max_batch
        self.name, self.dim, self.weights_id = inner.name, inner.dim, inner.weights_id
        self.batches: list[int] = []

    def embed(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        self.batches.append(len(crops))
        if len(crops) > self.max_batch:
            raise RuntimeError(
                "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate "
                f"memory: you tried to allocate {len(crops) * 2**30} bytes."
            )
        return np.asarray(self.inner.embed(crops))

"""The embedder registry: each embedder's name and default match threshold, the
:class:`Embedder` protocol they all implement, and what is common to them (weights identity,
out-of-memory splitting), without any model.

Three embedders: ``vggface2`` and ``casia-webface``
(:class:`facepipe.identity.facenet.FacenetEmbedder`, 512-d) and ``dlib``
(:class:`facepipe.identity.dlib_embedder.DlibEmbedder`, 128-d, offline); every one returns unit
rows, so distances and thresholds mean the same thing for all of them. :mod:`facepipe.config`
takes its threshold defaults from here, so that reading them imports no model (the detection
function never embeds).
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from facepipe.errors import ConfigError

EMBEDDERS = ("vggface2", "casia-webface", "dlib")

# The default FACEPIPE_MATCH_THRESHOLD of each embedder: the L2 distance between unit embeddings
# above which a face is `unknown`. Measure one with `facepipe eval` (docs/models.md, Thresholds).
DEFAULT_MATCH_THRESHOLDS = {
    # facenet-pytorch's commonly used value for its pretrained sets; NOT calibrated here (the
    # weights cannot be downloaded where this repository's tests run).
    "vggface2": 1.1,
    "casia-webface": 1.1,
    # `facepipe eval --embedder dlib` on ../shared/faces/master.csv: AUC 1.0, every pair right
    # between 0.376 (largest same-person distance) and 0.408 (smallest different-person one).
    "dlib": 0.39,
}

RANDOM_PREFIX = "random:"  # FACEPIPE_WEIGHTS=random:<seed>: seeded random weights (tests)


class Embedder(Protocol):
    """What recognition needs from an embedder.

    ``name`` is the ``FACEPIPE_EMBEDDER`` value (and the kind of crop it takes), ``dim`` the
    embedding size, ``weights_id`` which weights made the numbers (results carry it).
    """

    name: str
    dim: int
    weights_id: str

    def embed(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """uint8 HxWx3 crops → float32 ``(N, dim)`` unit rows."""
        ...


def is_out_of_memory(exc: BaseException) -> bool:
    """Host ``MemoryError``, torch's CPU allocator failure, or CUDA out-of-memory."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


def embed_splitting(
    embedder: Embedder, crops: Sequence[np.ndarray], on_split: Callable[[int], None] | None = None
) -> np.ndarray:
    """``embedder.embed(crops)``; when that runs out of memory, each half in turn (recursively,
    down to one crop), so a batch too large for the function's memory still completes. The
    rows come back in the order of ``crops``; ``on_split`` is told the size of each batch that
    had to be split."""
    try:
        return embedder.embed(crops)
    except (MemoryError, RuntimeError) as exc:
        if not is_out_of_memory(exc) or len(crops) < 2:
            raise
    _release_cached_memory()
    if on_split is not None:
        on_split(len(crops))
    half = len(crops) // 2
    return np.concatenate(
        [
            embed_splitting(embedder, crops[:half], on_split),
            embed_splitting(embedder, crops[half:], on_split),
        ]
    )


def _release_cached_memory() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def default_match_threshold(embedder: str) -> float:
    """The calibrated (or, for facenet, the customary) threshold of ``embedder``."""
    try:
        return DEFAULT_MATCH_THRESHOLDS[embedder]
    except KeyError:
        raise ConfigError(
            f"unknown embedder {embedder!r}; choose one of {', '.join(EMBEDDERS)}"
        ) from None


def file_digest(path: Path) -> str:
    """sha256 of a weights file; a ``<file>.sha256`` sidecar (written at image build) is used
    when present so that a cold start does not hash 100 MB."""
    sidecar = path.with_name(path.name + ".sha256")
    if sidecar.exists():
        return sidecar.read_text().split()[0]
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()

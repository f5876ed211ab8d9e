"""Matching faces against a gallery of known people.

A gallery is a list of names and one unit embedding per name (several rows may share a name).
Two file formats load:

* ``.pt``: ``torch.save([embeddings, names])``, the ``data.pt`` format of the original EC2 face
  worker (embeddings a (N, 512) tensor or a list of (1, 512)/(512,) tensors);
* ``.npz``: ``numpy.savez(path, embeddings=..., names=..., embedder=...)``.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from facepipe.errors import GalleryError

UNKNOWN = "unknown"


@dataclass(frozen=True)
class Match:
    """The closest gallery entry for one face. ``name`` is ``unknown`` when ``distance`` is over
    the threshold or the gallery is empty (then ``distance``/``similarity`` are ``None``)."""

    name: str
    distance: float | None
    similarity: float | None
    closest: str | None = None


@dataclass
class Gallery:
    names: list[str] = field(default_factory=list)
    embeddings: np.ndarray = field(default_factory=lambda: np.zeros((0, 512), np.float32))
    embedder: str | None = None

    def __post_init__(self) -> None:
        emb = np.asarray(self.embeddings, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[0] != len(self.names):
            raise GalleryError(
                f"gallery has {len(self.names)} names but embeddings of shape {emb.shape}"
            )
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        self.embeddings = emb / np.maximum(norms, 1e-12)

    def __len__(self) -> int:
        return len(self.names)

    @classmethod
    def from_bytes(cls, data: bytes, *, source: str = "gallery") -> Gallery:
        """Load a ``.npz`` or a ``.pt`` gallery from bytes (format sniffed, not guessed from the
        name: npz files are zip archives)."""
        try:
            if _is_npz(data):
                with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                    embedder = str(npz["embedder"]) if "embedder" in npz else None
                    return cls([str(n) for n in npz["names"]], npz["embeddings"], embedder)
            import torch

            obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except GalleryError:
            raise
        except Exception as exc:
            raise GalleryError(f"{source} is not a gallery file (.npz or .pt): {exc}") from exc
        if not (isinstance(obj, list | tuple) and len(obj) == 2):
            raise GalleryError(f"{source}: expected [embeddings, names], got {type(obj).__name__}")
        raw, names = obj
        if isinstance(raw, list | tuple):
            rows = [np.asarray(t.detach().cpu() if hasattr(t, "detach") else t) for t in raw]
            emb = np.stack([r.reshape(-1) for r in rows]) if rows else np.zeros((0, 512))
        else:
            emb = np.asarray(raw.detach().cpu())
        return cls([str(n) for n in names], emb)

    def to_npz_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(
            buf,
            embeddings=self.embeddings,
            names=np.array(self.names, dtype=str),
            embedder=np.array(self.embedder or ""),
        )
        return buf.getvalue()

    def to_pt_bytes(self) -> bytes:
        """The original worker's ``[embeddings, names]`` format."""
        import torch

        buf = io.BytesIO()
        torch.save([torch.from_numpy(self.embeddings.copy()), list(self.names)], buf)
        return buf.getvalue()

    def match(self, queries: np.ndarray, threshold: float) -> list[Match]:
        """Closest entry for each row of ``queries`` (unit vectors, shape (M, D)).

        >>> g = Gallery(["ann", "bob"], np.eye(2, dtype=np.float32))
        >>> [m.name for m in g.match(np.array([[1, 0], [0.6, -0.8]], np.float32), 1.1)]
        ['ann', 'unknown']
        """
        queries = np.asarray(queries, dtype=np.float32)
        if len(self) == 0:
            return [Match(UNKNOWN, None, None) for _ in range(len(queries))]
        if queries.shape[1:] != self.embeddings.shape[1:]:
            raise GalleryError(
                f"embedding dimension {queries.shape[1]} does not match the gallery's "
                f"{self.embeddings.shape[1]}: was the gallery made with another embedder?"
            )
        sims = queries @ self.embeddings.T
        best = np.argmax(sims, axis=1)
        out = []
        for row, idx in enumerate(best):
            sim = float(np.clip(sims[row, idx], -1.0, 1.0))
            dist = float(np.sqrt(max(0.0, 2.0 - 2.0 * sim)))
            name = self.names[idx] if dist <= threshold else UNKNOWN
            out.append(Match(name, dist, sim, closest=self.names[idx]))
        return out


def _is_npz(data: bytes) -> bool:
    """npz and torch files are both zip archives; npz members are ``<array>.npy``."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return "names.npy" in zf.namelist()
    except zipfile.BadZipFile:
        return False


def build_gallery(names: Sequence[str], embeddings: np.ndarray, embedder: str) -> Gallery:
    return Gallery(list(names), np.asarray(embeddings, np.float32), embedder)

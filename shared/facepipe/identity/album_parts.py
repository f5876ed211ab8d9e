"""The pieces an album is stored in, and how each is searched.

A **part** is one object: a *shard* (the faces of one write) or a *segment* (shards and smaller
segments merged by compaction). Both are the same ``.npz``: ``photos``, ``boxes``, ``requests``
and ``embedder``, with the faces' unit rows either as ``embeddings`` (float32, searched exactly:
one matrix product) or, from :data:`IVF_MIN_FACES` faces, as ``ivf``: a serialised faiss
IVF index of half-precision rows (half the memory; similarities move by about 1e-3), searched in
the lists nearest to the selfie. A part is immutable: its key is never written twice.

Search is vectorised end to end: :meth:`AlbumPart.within` gives the rows over the similarity
floor, :func:`best_per_photo` keeps each photo's best face with one sort and one ``np.unique``.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from facepipe.errors import GalleryError
from facepipe.identity.gallery import IvfIndex

IVF_MIN_FACES = 16_000  # faces from which a merged segment is an IVF index, not rows


@dataclass(frozen=True)
class AlbumEntry:
    """One face of one photo: the photo's id (its file name, S3 key or request filename)."""

    photo: str
    box: Sequence[float]
    embedding: np.ndarray
    request_id: str = ""  # the frame's request (stack writes); "" for the CLI's index runs


@dataclass(frozen=True)
class AlbumHit:
    """A photo that contains the person: the best-matching face's box and scores."""

    photo: str
    box: list[float]
    similarity: float
    distance: float


def album_nlist(n: int) -> int:
    """IVF lists for a segment of ``n`` faces: ``sqrt(n)`` (fewer than the gallery's
    ``4·sqrt(n)``: compaction trains an index at every merge, and a selfie search reads only
    the lists near one person), at most one per 39 rows."""
    return max(1, min(round(math.sqrt(n)), n // 39))


def album_nprobe(nlist: int) -> int:
    """Lists searched per selfie: ``3·sqrt(nlist)``, 16 at least (twice the gallery's: a
    search wants every photo of the person, not the top 5; ``make bench-scale`` measured the
    recall of the person's photos at 1.0 in a 256,000-face segment, 0.995 with half)."""
    return min(nlist, max(16, round(3 * math.sqrt(nlist))))


@dataclass
class AlbumPart:
    """A shard or segment, loaded: ``photos``/``requests`` are numpy string arrays, ``boxes``
    (N, 4); the rows are in ``vectors`` (exact) or in ``ivf``."""

    photos: np.ndarray
    boxes: np.ndarray
    requests: np.ndarray
    embedder: str | None
    vectors: np.ndarray | None = None
    ivf: IvfIndex | None = None

    def __len__(self) -> int:
        return len(self.photos)

    @property
    def dimension(self) -> int:
        if self.vectors is not None:
            return int(self.vectors.shape[1])
        assert self.ivf is not None
        return self.ivf.dimension

    def rows(self) -> np.ndarray:
        """Every face's unit row (an IVF segment's are decoded: merging and erasure only)."""
        if self.vectors is not None:
            return self.vectors
        assert self.ivf is not None
        return self.ivf.vectors()

    def within(self, query: np.ndarray, min_similarity: float) -> tuple[np.ndarray, np.ndarray]:
        """(row ids, similarities) of the faces at least ``min_similarity`` from ``query``."""
        if not len(self):
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        if self.ivf is not None:
            return self.ivf.within(query, min_similarity)
        assert self.vectors is not None
        sims = self.vectors @ np.asarray(query, np.float32).reshape(-1)
        rows = np.flatnonzero(sims >= min_similarity)
        return rows, sims[rows]

    # --- files --------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        arrays = {
            "photos": self.photos.astype(str),
            "boxes": self.boxes.astype(np.float32).reshape(-1, 4),
            "requests": self.requests.astype(str),
            "embedder": np.array(self.embedder or ""),
        }
        if self.ivf is not None:
            arrays["ivf"] = self.ivf.to_bytes()
        else:
            assert self.vectors is not None
            arrays["embeddings"] = self.vectors.astype(np.float32)
        np.savez(buf, **arrays)  # type: ignore[arg-type]
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, key: str) -> AlbumPart:
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                photos = npz["photos"].astype(str)
                requests = (
                    npz["requests"].astype(str)
                    if "requests" in npz
                    else np.full(len(photos), "", dtype=str)
                )
                part = cls(
                    photos,
                    npz["boxes"].astype(np.float32).reshape(-1, 4),
                    requests,
                    str(npz["embedder"]) or None,
                )
                if "ivf" in npz:
                    index = IvfIndex.from_bytes(npz["ivf"])
                    index.set_nprobe(album_nprobe(index.nlist))
                    part.ivf = index
                else:
                    part.vectors = npz["embeddings"].astype(np.float32)
        except Exception as exc:
            raise GalleryError(f"album part {key} is unreadable: {exc}") from exc
        if len(part) != (part.ivf.size if part.ivf is not None else len(part.vectors)):  # type: ignore[arg-type]
            raise GalleryError(f"album part {key} has more or fewer rows than photos")
        return part

    @classmethod
    def of_entries(cls, entries: Sequence[AlbumEntry], embedder: str) -> AlbumPart:
        return cls(
            np.array([e.photo for e in entries], dtype=str),
            np.array([list(e.box) for e in entries], dtype=np.float32).reshape(-1, 4),
            np.array([e.request_id for e in entries], dtype=str),
            embedder,
            vectors=np.stack([np.asarray(e.embedding, np.float32).reshape(-1) for e in entries]),
        )


def merge_parts(
    parts: Sequence[AlbumPart],
    *,
    keep: Sequence[np.ndarray | None] | None = None,
    ivf_min_faces: int = IVF_MIN_FACES,
) -> AlbumPart:
    """One segment of ``parts`` (oldest first) less the rows ``keep`` masks out, a request's
    faces once (from the first part holding them: a batch retried after a failed post indexes
    its frame again); an IVF segment from ``ivf_min_faces`` faces."""
    embedders = {p.embedder for p in parts if len(p) and p.embedder is not None}
    if len(embedders) > 1:
        raise GalleryError(f"cannot merge album parts of embedders {sorted(embedders)}")
    photos, boxes, requests, rows = [], [], [], []
    seen = np.zeros(0, dtype=str)
    for i, part in enumerate(parts):
        mask = np.ones(len(part), bool) if keep is None or keep[i] is None else keep[i]
        assert mask is not None
        named = part.requests != ""
        mask = mask & ~(named & np.isin(part.requests, seen))
        seen = np.union1d(seen, part.requests[named])
        if mask.any():
            photos.append(part.photos[mask])
            boxes.append(part.boxes[mask])
            requests.append(part.requests[mask])
            rows.append(part.rows()[mask])
    embedder = next(iter(embedders), None)
    if not photos:
        return AlbumPart(
            np.zeros(0, str), np.zeros((0, 4), np.float32), np.zeros(0, str), embedder,
            vectors=np.zeros((0, parts[0].dimension if parts else 0), np.float32),
        )  # fmt: skip
    vectors = np.concatenate(rows).astype(np.float32)
    merged = AlbumPart(
        np.concatenate(photos), np.concatenate(boxes), np.concatenate(requests), embedder
    )
    if len(vectors) >= ivf_min_faces:
        nlist = album_nlist(len(vectors))
        merged.ivf = IvfIndex(vectors, nlist=nlist, nprobe=album_nprobe(nlist), fp16=True)
    else:
        merged.vectors = vectors
    return merged


def best_per_photo(
    parts: Sequence[AlbumPart], query: np.ndarray, threshold: float, limit: int
) -> list[AlbumHit]:
    """Photos holding a face within ``threshold`` (L2 between unit vectors) of ``query``, best
    first, one hit (its best face) per photo, ``limit`` at most."""
    min_similarity = 1.0 - threshold * threshold / 2.0  # ‖a-b‖² = 2 - 2·a·b
    photos, boxes, sims = [], [], []
    for part in parts:
        rows, found = part.within(query, min_similarity)
        if len(rows):
            photos.append(part.photos[rows])
            boxes.append(part.boxes[rows])
            sims.append(found.astype(np.float32))
    if not photos:
        return []
    photo, box, sim = np.concatenate(photos), np.concatenate(boxes), np.concatenate(sims)
    order = np.argsort(-sim, kind="stable")
    _, first = np.unique(photo[order], return_index=True)
    best = order[np.sort(first)][:limit]
    sim_best = np.clip(sim[best].astype(np.float64), -1.0, 1.0)
    dist_best = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * sim_best))
    keep = dist_best <= threshold
    return [
        AlbumHit(str(p), [round(float(v), 2) for v in b], round(float(s), 6), round(float(d), 6))
        for p, b, s, d in zip(
            photo[best][keep], box[best][keep], sim_best[keep], dist_best[keep], strict=True
        )
    ]

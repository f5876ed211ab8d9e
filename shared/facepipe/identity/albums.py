"""Album search ("find me in these photos"): an index of every face of every photo of an album,
and a search of it by a selfie.

Layout, in the data bucket or a local folder (the same
:class:`~facepipe.identity.objects.Objects` as the gallery)::

    albums/<album>/shards/<UTC time>-<uuid>/entries.npz   photos (ids), boxes, embeddings,
                                                          request_ids, embedder

Every writer (a CLI run, a recognition batch) adds a **new shard** under a unique key, so
concurrent writers never overwrite each other and no read-modify-write is needed. Album entries
carry no names: a face is found by its embedding only. A recognition batch indexes before it
posts its results, so a record retried after a failed post indexes its frame again: entries
carry their request_id, and a request's faces count once, from the first shard holding them.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from facepipe.errors import FacepipeError, GalleryError
from facepipe.identity.objects import Objects
from facepipe.messages import check_album

ALBUMS_PREFIX = "albums/"
SHARD_FILE = "entries.npz"


def check_album_name(name: str) -> str:
    try:
        return check_album(name or "")
    except ValueError as exc:
        raise FacepipeError(
            f"{name!r} is not an album name: {exc}", code="invalid_album", status=400
        ) from exc


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


@dataclass
class AlbumIndex:
    photos: list[str]
    boxes: np.ndarray
    embeddings: np.ndarray
    embedder: str | None
    requests: list[str] = field(default_factory=list)  # each entry's request_id ("": none)


def _shard_bytes(entries: Sequence[AlbumEntry], embedder: str) -> bytes:
    buf = io.BytesIO()
    np.savez(
        buf,
        photos=np.array([e.photo for e in entries], dtype=str),
        boxes=np.array([list(e.box) for e in entries], dtype=np.float32).reshape(-1, 4),
        embeddings=np.stack([np.asarray(e.embedding, np.float32) for e in entries]),
        requests=np.array([e.request_id for e in entries], dtype=str),
        embedder=np.array(embedder),
    )
    return buf.getvalue()


def _read_shard(data: bytes, key: str) -> AlbumIndex:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            photos = [str(p) for p in npz["photos"]]
            requests = [str(r) for r in npz["requests"]] if "requests" in npz else []
            return AlbumIndex(
                photos,
                npz["boxes"].astype(np.float32),
                npz["embeddings"].astype(np.float32),
                str(npz["embedder"]) or None,
                requests or [""] * len(photos),
            )
    except Exception as exc:
        raise GalleryError(f"album shard {key} is unreadable: {exc}") from exc


def _without_requests(part: AlbumIndex, seen: set[str]) -> AlbumIndex:
    """``part`` less the entries of requests already indexed by an earlier shard."""
    keep = [i for i, r in enumerate(part.requests) if not r or r not in seen]
    if len(keep) == len(part.requests):
        return part
    return AlbumIndex(
        [part.photos[i] for i in keep],
        part.boxes[keep],
        part.embeddings[keep],
        part.embedder,
        [part.requests[i] for i in keep],
    )


class AlbumStore:
    """Albums under ``albums/`` of ``objects`` (a bucket or a folder)."""

    def __init__(self, objects: Objects, prefix: str = ALBUMS_PREFIX) -> None:
        self.objects = objects
        self.prefix = prefix

    def _shards_prefix(self, album: str) -> str:
        return f"{self.prefix}{check_album_name(album)}/shards/"

    def albums(self) -> list[str]:
        names = {k[len(self.prefix) :].split("/", 1)[0] for k in self.objects.keys(self.prefix)}
        return sorted(names)

    def shards(self, album: str) -> list[str]:
        keys = self.objects.keys(self._shards_prefix(album))
        return [k for k in keys if k.endswith("/" + SHARD_FILE)]

    def add(self, album: str, entries: Sequence[AlbumEntry], embedder: str) -> str | None:
        """Write ``entries`` as a new shard (nothing for none); refuse another embedder's."""
        if not entries:
            return None
        existing = self.embedder_of(album)
        if existing is not None and existing != embedder:
            raise GalleryError(
                f"album {album!r} was indexed with the {existing} embedder, not {embedder}: "
                "index it into a new album, or set FACEPIPE_EMBEDDER to match"
            )
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        key = f"{self._shards_prefix(album)}{stamp}-{uuid.uuid4().hex[:12]}/{SHARD_FILE}"
        self.objects.put(key, _shard_bytes(entries, embedder))
        return key

    def embedder_of(self, album: str) -> str | None:
        shards = self.shards(album)
        if not shards:
            return None
        data = self.objects.get(shards[0])
        return _read_shard(data, shards[0]).embedder if data is not None else None

    def load(self, album: str) -> AlbumIndex:
        """Every entry of every shard of the album; a request's faces once (the first shard)."""
        parts = []
        seen: set[str] = set()
        for key in self.shards(album):
            data = self.objects.get(key)
            if data is not None:
                part = _read_shard(data, key)
                parts.append(_without_requests(part, seen))
                seen.update(r for r in part.requests if r)
        if not parts:
            return AlbumIndex([], np.zeros((0, 4), np.float32), np.zeros((0, 0), np.float32), None)
        embedders = {p.embedder for p in parts}
        if len(embedders) > 1:
            raise GalleryError(f"album {album!r} mixes embedders {sorted(map(str, embedders))}")
        return AlbumIndex(
            [photo for p in parts for photo in p.photos],
            np.concatenate([p.boxes for p in parts]),
            np.concatenate([p.embeddings for p in parts]),
            parts[0].embedder,
            [r for p in parts for r in p.requests],
        )

    def find(
        self,
        album: str,
        query: np.ndarray,
        *,
        threshold: float,
        embedder: str,
        limit: int = 100,
    ) -> list[AlbumHit]:
        """Photos of ``album`` holding a face within ``threshold`` (L2 between unit vectors)
        of ``query``, best first, one hit per photo (its best face)."""
        index = self.load(album)
        if not index.photos:
            return []
        if index.embedder is not None and index.embedder != embedder:
            raise GalleryError(
                f"album {album!r} was indexed with the {index.embedder} embedder; this search "
                f"embeds with {embedder}"
            )
        sims = index.embeddings @ np.asarray(query, np.float32).reshape(-1)
        best: dict[str, int] = {}
        for row in np.argsort(-sims):
            photo = index.photos[row]
            if photo not in best:
                best[photo] = int(row)
        hits = []
        for photo, row in best.items():
            sim = float(np.clip(sims[row], -1.0, 1.0))
            dist = float(np.sqrt(max(0.0, 2.0 - 2.0 * sim)))
            if dist <= threshold:
                box = [round(float(v), 2) for v in index.boxes[row]]
                hits.append(AlbumHit(photo, box, round(sim, 6), round(dist, 6)))
        return hits[:limit]

    def forget(self, embeddings: np.ndarray, threshold: float) -> int:
        """Erase, from every album, the faces within ``threshold`` of any of ``embeddings`` (a
        person's enrolment rows): each touched shard is rewritten without them and the old one
        erased with all its versions. Returns how many faces were removed."""
        people = np.asarray(embeddings, np.float32)
        if people.size == 0:
            return 0
        removed = 0
        for album in self.albums():
            for key in self.shards(album):
                data = self.objects.get(key)
                if data is None:
                    continue
                shard = _read_shard(data, key)
                if shard.embeddings.shape[1] != people.shape[1]:
                    continue  # another embedder's album cannot hold this person's rows
                dist = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * (shard.embeddings @ people.T)))
                hit = (dist <= threshold).any(axis=1)
                if not hit.any():
                    continue
                keep = [
                    AlbumEntry(
                        shard.photos[i],
                        shard.boxes[i].tolist(),
                        shard.embeddings[i],
                        shard.requests[i],
                    )
                    for i in np.flatnonzero(~hit)
                ]
                self.add_replacing(album, keep, shard.embedder or "", key)
                removed += int(hit.sum())
        return removed

    def add_replacing(
        self, album: str, entries: Sequence[AlbumEntry], embedder: str, old_key: str
    ) -> None:
        if entries:
            self.add(album, entries, embedder)
        # Each shard has a folder of its own: erasing it removes every version of the shard.
        self.objects.erase_prefix(old_key[: -len(SHARD_FILE)])

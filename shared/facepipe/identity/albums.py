"""Album search ("find me in these photos"): an index of every face of every photo of an album,
and a search of it by a selfie, that stays fast as the album grows.

Layout, in the data bucket or a local folder (the same
:class:`~facepipe.identity.objects.Objects` as the gallery)::

    albums/<album>/shards/<UTC time>-<uuid>/entries.npz     one write's faces (a delta)
    albums/<album>/segments/<UTC time>-<uuid>/segment.npz   compacted faces (exact or IVF)
    albums/<album>/manifest.json                            the embedder, the live segments,
                                                            the shards they already hold

**Writes** never read-modify-write faces: every writer (a CLI run, a recognition batch) adds a
new shard under a unique key. **Compaction** merges shards and smaller segments into a segment
(:meth:`AlbumStore.compact`, run by a writer once :attr:`AlbumStore.compact_every` shards wait,
and by ``facepipe album compact``): it writes the new segment, then swaps the manifest with a
*conditional* write (S3 ``If-Match``; a lock in a folder), then deletes what it merged, every
version. A writer that loses the swap deletes its segment and leaves the work to the winner, so
concurrent writers and compactors lose no face. Segments merge by size tiers (``fanout`` of one
tier make one of the next), so each face is rewritten about ``log(N)`` times and an album of a
million faces is a few dozen objects, not a hundred thousand.

**A search** lists the shards, reads the manifest (``If-None-Match``: unchanged costs no
transfer), and reads only the parts it has not cached: parts are immutable, so a warm search
reads 2 objects plus any shard written since. A part deleted under it (a compaction won in
between) makes it read the manifest again. Ranking is vectorised
(:func:`~facepipe.identity.album_parts.best_per_photo`).

Album entries carry no names: a face is found by its embedding only. A recognition batch indexes
before it posts its results, so a record retried after a failed post indexes its frame again:
entries carry their request_id, a request's faces are merged once, and a search gives one hit
per photo. **Erasure** (:meth:`AlbumStore.forget`) compacts an album's shards without the
person, rewrites each segment that held them, swaps the manifest and erases the old objects
with all their versions; a process that had them cached drops them at its next search.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import numpy as np
from pydantic import BaseModel, ValidationError

from facepipe.errors import FacepipeError, GalleryError
from facepipe.identity.album_parts import (
    IVF_MIN_FACES,
    AlbumEntry,
    AlbumHit,
    AlbumPart,
    best_per_photo,
    merge_parts,
)
from facepipe.identity.objects import Objects
from facepipe.messages import check_album

__all__ = ["AlbumEntry", "AlbumHit", "AlbumIndex", "AlbumStore", "check_album_name"]

_log = logging.getLogger(__name__)

ALBUMS_PREFIX = "albums/"
SHARD_FILE = "entries.npz"
SEGMENT_FILE = "segment.npz"
MANIFEST_FILE = "manifest.json"
COMPACT_EVERY = 32  # shards waiting that make a writer compact
FANOUT = 4  # segments of one size tier merged into one of the next
TIER_BASE = 1_000  # faces of the smallest tier
MERGE_MAX_FACES = 300_000  # largest merge a writer (a recognition batch) does; more: compact
SWAP_TRIES = 5
COMPACTED_GRACE_S = 120


def check_album_name(name: str) -> str:
    try:
        return check_album(name or "")
    except ValueError as exc:
        raise FacepipeError(
            f"{name!r} is not an album name: {exc}", code="invalid_album", status=400
        ) from exc


class SegmentRef(BaseModel):
    key: str
    faces: int


class AlbumManifest(BaseModel):
    """The album's live segments (oldest first) and the shards merged into them (key → when),
    which readers skip. A merged shard is deleted right after the swap (or, if that compactor
    died, by the next one); its entry goes once it is no longer listed and
    :data:`COMPACTED_GRACE_S` old, so that a reader that cached the shard before it was merged
    does not count its faces twice."""

    format: Literal[1] = 1
    embedder: str | None = None
    segments: list[SegmentRef] = []
    compacted: dict[str, str] = {}
    updated_at: str = ""

    def to_bytes(self) -> bytes:
        self.updated_at = datetime.now(UTC).isoformat(timespec="seconds")
        return json.dumps(self.model_dump(), indent=1).encode() + b"\n"


@dataclass
class AlbumIndex:
    """Every face of an album, for export and checks (a search does not build this)."""

    photos: list[str]
    boxes: np.ndarray
    embeddings: np.ndarray
    embedder: str | None
    requests: list[str] = field(default_factory=list)  # each entry's request_id ("": none)


@dataclass
class _View:
    """A consistent reading of an album: its manifest (and tag), the shards waiting to be
    merged, and ``leftovers``: shards merged already but not yet deleted."""

    manifest: AlbumManifest
    tag: str | None
    shards: list[str]
    leftovers: list[str]

    @property
    def keys(self) -> list[str]:
        return [s.key for s in self.manifest.segments] + self.shards


@dataclass
class CompactReport:
    shards: int = 0
    segments_in: int = 0
    segments_out: list[SegmentRef] = field(default_factory=list)
    removed: int = 0  # faces erased (forget)

    def line(self) -> str:
        made = ", ".join(f"{s.faces} faces" for s in self.segments_out) or "none"
        return f"merged {self.shards} shard(s) and {self.segments_in} segment(s) into: {made}"


def _folder(key: str) -> str:
    """A part's own folder: erasing it removes every version of the part."""
    return key.rsplit("/", 1)[0] + "/"


def tier(faces: int, base: int = TIER_BASE, fanout: int = FANOUT) -> int:
    return 0 if faces < base * fanout else int(math.log(faces / base, fanout))


class _Stale(Exception):
    """A part of the view was deleted while it was read: read the manifest again."""


class AlbumStore:
    """Albums under ``albums/`` of ``objects`` (a bucket or a folder).

    Args:
        compact_every: shards waiting after a write that make the writer compact (0: never;
            ``facepipe album compact`` still does).
        merge_max_faces: the largest merge a writer does; bigger tiers wait for ``compact``.
        ivf_min_faces: faces from which a segment is an IVF index.

    Parts read are cached by key for the life of the store (a function's container keeps it
    between invocations); the manifest is checked at every search.
    """

    def __init__(
        self,
        objects: Objects,
        prefix: str = ALBUMS_PREFIX,
        *,
        compact_every: int = COMPACT_EVERY,
        merge_max_faces: int = MERGE_MAX_FACES,
        ivf_min_faces: int = IVF_MIN_FACES,
    ) -> None:
        self.objects = objects
        self.prefix = prefix
        self.compact_every = compact_every
        self.merge_max_faces = merge_max_faces
        self.ivf_min_faces = ivf_min_faces
        self._parts: dict[str, AlbumPart] = {}
        self._manifests: dict[str, tuple[str | None, AlbumManifest]] = {}
        self._lock = threading.Lock()

    # --- keys ---------------------------------------------------------------------------------
    def _album_prefix(self, album: str) -> str:
        return f"{self.prefix}{check_album_name(album)}/"

    def _shards_prefix(self, album: str) -> str:
        return f"{self._album_prefix(album)}shards/"

    def _manifest_key(self, album: str) -> str:
        return f"{self._album_prefix(album)}{MANIFEST_FILE}"

    def _new_key(self, album: str, folder: str, name: str) -> str:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        return f"{self._album_prefix(album)}{folder}/{stamp}-{uuid.uuid4().hex[:12]}/{name}"

    def albums(self) -> list[str]:
        names = {k[len(self.prefix) :].split("/", 1)[0] for k in self.objects.keys(self.prefix)}
        return sorted(names)

    def shards(self, album: str) -> list[str]:
        """Every shard object of the album, merged or not (a listing: one request per 1000)."""
        keys = self.objects.keys(self._shards_prefix(album))
        return [k for k in keys if k.endswith("/" + SHARD_FILE)]

    def waiting(self, album: str) -> int:
        """Shards not merged into a segment yet."""
        return len(self._view(album).shards)

    def segments(self, album: str) -> list[SegmentRef]:
        return list(self._manifest(album)[1].segments)

    # --- reading ------------------------------------------------------------------------------
    def _manifest(self, album: str) -> tuple[str | None, AlbumManifest]:
        key = self._manifest_key(album)
        cached = self._manifests.get(album)
        fresh = self.objects.get_fresh(key, cached[0] if cached else None)
        if not fresh.changed and cached is not None:
            return cached
        if fresh.data is None:
            manifest = AlbumManifest()
        else:
            try:
                manifest = AlbumManifest.model_validate_json(fresh.data)
            except ValidationError as exc:
                raise GalleryError(
                    f"{self.objects.uri(key)} is not an album manifest: {exc}"
                ) from exc
        self._manifests[album] = (fresh.tag, manifest)
        return fresh.tag, manifest

    def _view(self, album: str) -> _View:
        # List first, then the manifest: a shard merged in between is then named by the
        # manifest read after it, and skipped; one written after the listing waits a search.
        listed = self.shards(album)
        tag, manifest = self._manifest(album)
        merged = manifest.compacted
        return _View(
            manifest,
            tag,
            [k for k in listed if k not in merged],
            [k for k in listed if k in merged],
        )

    def _part(self, key: str) -> AlbumPart:
        part = self._parts.get(key)
        if part is None:
            data = self.objects.get(key)
            if data is None:
                raise _Stale(key)
            part = AlbumPart.from_bytes(data, key)
            with self._lock:
                self._parts[key] = part
        return part

    def _read(self, album: str) -> tuple[_View, list[AlbumPart]]:
        """The album's view and its parts (oldest segment first, then shards by age); drops
        from the cache this album's parts that are gone."""
        for _ in range(SWAP_TRIES):
            view = self._view(album)
            try:
                parts = [self._part(k) for k in view.keys]
            except _Stale:
                continue
            live = set(view.keys)
            prefix = self._album_prefix(album)
            with self._lock:
                for key in [k for k in self._parts if k.startswith(prefix) and k not in live]:
                    del self._parts[key]
            return view, parts
        raise GalleryError(f"album {album!r} kept changing while it was read: try again")

    def embedder_of(self, album: str) -> str | None:
        return self._embedder_in(self._view(album))

    def _embedder_in(self, view: _View) -> str | None:
        """The manifest's embedder, else the first shard's still there (none merged yet)."""
        if view.manifest.embedder is not None:
            return view.manifest.embedder
        for key in view.shards + view.leftovers:
            try:
                return self._part(key).embedder
            except _Stale:
                continue
        return None

    def load(self, album: str) -> AlbumIndex:
        """Every face of the album, a request's faces once."""
        _, parts = self._read(album)
        merged = merge_parts(parts, ivf_min_faces=2**62) if parts else None
        if merged is None or not len(merged):
            return AlbumIndex([], np.zeros((0, 4), np.float32), np.zeros((0, 0), np.float32), None)
        return AlbumIndex(
            merged.photos.tolist(),
            merged.boxes,
            merged.rows(),
            merged.embedder,
            merged.requests.tolist(),
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
        view, parts = self._read(album)
        made_with = view.manifest.embedder or next((p.embedder for p in parts if p.embedder), None)
        if made_with is not None and made_with != embedder and any(len(p) for p in parts):
            raise GalleryError(
                f"album {album!r} was indexed with the {made_with} embedder; this search "
                f"embeds with {embedder}"
            )
        return best_per_photo(parts, query, threshold, limit)

    # --- writing ------------------------------------------------------------------------------
    def add(self, album: str, entries: Sequence[AlbumEntry], embedder: str) -> str | None:
        """Write ``entries`` as a new shard (nothing for none); refuse another embedder's.
        Compacts when :attr:`compact_every` shards wait (a failed compaction is logged: the
        shard is written and a later write or ``album compact`` merges it)."""
        if not entries:
            return None
        view = self._view(album)  # one listing and manifest read serve both checks
        existing = self._embedder_in(view)
        if existing is not None and existing != embedder:
            raise GalleryError(
                f"album {album!r} was indexed with the {existing} embedder, not {embedder}: "
                "index it into a new album, or set FACEPIPE_EMBEDDER to match"
            )
        key = self._new_key(album, "shards", SHARD_FILE)
        part = AlbumPart.of_entries(entries, embedder)
        self.objects.put(key, part.to_bytes())
        with self._lock:
            self._parts[key] = part
        if self.compact_every and len(view.shards) + 1 >= self.compact_every:
            try:
                self.compact(album, max_faces=self.merge_max_faces, tries=1)
            except Exception as exc:  # the shard is safe; compaction can wait
                _log.warning("album %s: compaction after a write failed: %s", album, exc)
        return key

    def compact(
        self,
        album: str,
        *,
        full: bool = False,
        max_faces: int | None = None,
        tries: int = SWAP_TRIES,
    ) -> CompactReport:
        """Merge the album's waiting shards into a segment, then segments by size tier
        (``full``: everything into one). ``max_faces`` caps a tier merge. Another compactor
        that swaps the manifest first wins: this one retries (``tries`` times in all)."""
        for _ in range(tries):
            try:
                view, parts = self._read(album)
            except GalleryError:
                continue
            plan = self._plan(view, parts, full=full, max_faces=max_faces)
            if plan is None:
                return CompactReport()
            report = self._apply(album, view, parts, plan)
            if report is not None:
                return report
        return CompactReport()  # others kept compacting: they did the work

    def _plan(
        self, view: _View, parts: list[AlbumPart], *, full: bool, max_faces: int | None
    ) -> list[list[int]] | None:
        """Groups of positions in ``view.keys`` to merge, each into one segment: the waiting
        shards into one; then, while a size tier holds :data:`FANOUT` segments, its oldest
        ones into one of the next tier (not over ``max_faces``). ``full``: everything."""
        n_seg = len(view.manifest.segments)
        if full:
            return [list(range(len(parts)))] if len(parts) > 1 or view.shards else None
        # (faces, positions), oldest first; the shards' new segment is the newest.
        items = [(len(parts[i]), [i]) for i in range(n_seg)]
        if view.shards:
            shard_pos = list(range(n_seg, len(parts)))
            items.append((sum(len(parts[i]) for i in shard_pos), shard_pos))
        while True:
            tiers = [tier(faces) for faces, _ in items]
            ready = [t for t in sorted(set(tiers)) if tiers.count(t) >= FANOUT]
            group = [k for k, t in enumerate(tiers) if ready and t == ready[0]][:FANOUT]
            faces = sum(items[k][0] for k in group)
            if not group or (max_faces is not None and faces > max_faces):
                break
            positions = sorted(p for k in group for p in items[k][1])
            items = [it for k, it in enumerate(items) if k not in group]
            items.insert(group[0], (faces, positions))
        groups = [pos for _, pos in items if len(pos) > 1 or pos[0] >= n_seg]
        return groups or None

    def _apply(
        self, album: str, view: _View, parts: list[AlbumPart], groups: list[list[int]]
    ) -> CompactReport | None:
        """Write each group's segment, swap the manifest, delete what was merged; ``None``
        when another writer swapped first (this one's segments are deleted)."""
        keys = view.keys
        report = CompactReport()
        new_refs: list[SegmentRef] = []
        merged_keys: set[str] = set()
        for group in groups:
            group = sorted(group)
            segment = merge_parts([parts[i] for i in group], ivf_min_faces=self.ivf_min_faces)
            merged_keys.update(keys[i] for i in group)
            report.shards += sum(1 for i in group if keys[i].endswith(SHARD_FILE))
            report.segments_in += sum(1 for i in group if keys[i].endswith(SEGMENT_FILE))
            if len(segment):
                key = self._new_key(album, "segments", SEGMENT_FILE)
                self.objects.put(key, segment.to_bytes())
                new_refs.append(SegmentRef(key=key, faces=len(segment)))
                with self._lock:
                    self._parts[key] = segment
        if not self._swap(album, view, merged_keys, new_refs):
            return None
        report.segments_out = new_refs
        return report

    def _swap(self, album: str, view: _View, merged: set[str], new: list[SegmentRef]) -> bool:
        """The manifest with ``new`` in place of the ``merged`` parts, written only if nobody
        wrote it since ``view`` was read; then what was merged (and any shard an earlier
        compactor merged but did not delete) is erased, every version. When another writer
        swapped first, ``new`` is erased instead and the answer is ``False``."""
        old = view.manifest
        now = datetime.now(UTC)
        listed = set(view.shards) | set(view.leftovers)
        compacted = {
            key: when
            for key, when in old.compacted.items()
            if key in listed
            or (now - datetime.fromisoformat(when)).total_seconds() < COMPACTED_GRACE_S
        }
        stamp = now.isoformat(timespec="seconds")
        compacted.update({k: stamp for k in merged if k.endswith(SHARD_FILE)})
        manifest = AlbumManifest(
            embedder=old.embedder or next((p.embedder for p in self._known(view.keys)), None),
            segments=[s for s in old.segments if s.key not in merged] + new,
            compacted=compacted,
        )
        if not self.objects.put_if(self._manifest_key(album), manifest.to_bytes(), view.tag):
            for ref in new:
                self.objects.erase_prefix(_folder(ref.key))
            return False
        for key in sorted(merged | set(view.leftovers)):
            self.objects.erase_prefix(_folder(key))
        return True

    def _known(self, keys: Sequence[str]) -> list[AlbumPart]:
        return [self._parts[k] for k in keys if k in self._parts]

    # --- erasure ------------------------------------------------------------------------------
    def forget(self, embeddings: np.ndarray, threshold: float) -> int:
        """Erase, from every album, the faces within ``threshold`` of any of ``embeddings`` (a
        person's enrolment rows): the album's shards are compacted without them, each segment
        holding them is rewritten, and the old objects are erased with all their versions.
        Returns how many faces were removed."""
        people = np.asarray(embeddings, np.float32)
        if people.size == 0:
            return 0
        return sum(self._forget_in(album, people, threshold) for album in self.albums())

    def _forget_in(self, album: str, people: np.ndarray, threshold: float) -> int:
        for _ in range(SWAP_TRIES):
            view, parts = self._read(album)
            keys = view.keys
            masks: list[np.ndarray | None] = []
            removed = 0
            for part in parts:
                if not len(part) or part.dimension != people.shape[1]:
                    masks.append(None)  # another embedder's album cannot hold these rows
                    continue
                sims = part.rows() @ people.T
                hit = (np.sqrt(np.maximum(0.0, 2.0 - 2.0 * sims)) <= threshold).any(axis=1)
                masks.append(~hit if hit.any() else None)
                removed += int(hit.sum())
            if not removed:
                return 0
            n_seg = len(view.manifest.segments)
            touched = [i for i in range(n_seg) if masks[i] is not None]
            new_refs: list[SegmentRef] = []
            merged = {keys[i] for i in touched} | set(view.shards)
            groups = [[i] for i in touched]
            if view.shards:  # every waiting shard, into one segment without the person
                groups.append(list(range(n_seg, len(parts))))
            for group in groups:
                segment = merge_parts(
                    [parts[i] for i in group],
                    keep=[masks[i] for i in group],
                    ivf_min_faces=self.ivf_min_faces,
                )
                if len(segment):
                    key = self._new_key(album, "segments", SEGMENT_FILE)
                    self.objects.put(key, segment.to_bytes())
                    new_refs.append(SegmentRef(key=key, faces=len(segment)))
            if self._swap(album, view, merged, new_refs):
                return removed
        raise GalleryError(f"album {album!r} kept changing during erasure: run it again")

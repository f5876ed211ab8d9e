"""The managed gallery: one versioned gallery object, a small manifest, and the enrolment crops.

Layout, in S3 (``FACEPIPE_GALLERY=s3://<bucket>/gallery/gallery.pt``) or in a local folder
(``FACEPIPE_GALLERY=people/gallery.pt``)::

    gallery/gallery.pt                  every row: `.pt` [embeddings, names] or `.npz`
    gallery/gallery.pt.manifest.json    format, embedder, dimension, count, people, sha256,
                                        updated_at
    gallery/crops/<name>/<sha256>.png   each enrolled face crop as it was embedded (lossless)

The gallery object is written before its manifest and loading checks the object against the
manifest's sha256, so a half-written or foreign object is refused instead of served. A gallery
without a manifest (a file written by hand, the original worker's ``data.pt``) loads unchecked.
The crops keep what is needed to re-embed a person with another model and to erase them.

Example:
    >>> store = open_gallery_store("/tmp/people/gallery.npz")  # doctest: +SKIP
    >>> store.save(store.load().plus(new_rows), crops)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
import posixpath
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, Protocol, TypeVar

import numpy as np
from pydantic import BaseModel, ValidationError

from facepipe.errors import GalleryError
from facepipe.identity.gallery import INDEX_MIN_SIZE, Gallery, Matcher
from facepipe.identity.objects import Objects

_log = logging.getLogger(__name__)

MANIFEST_SUFFIX = ".manifest.json"
CROPS_FOLDER = "crops"
_BAD_NAME = re.compile(r"[/\\\x00-\x1f\x7f]")


class Manifest(BaseModel):
    """What the gallery object next to it holds; ``sha256`` is the object's checksum."""

    format: Literal[1] = 1
    embedder: str | None
    dimension: int
    count: int
    people: int
    sha256: str
    updated_at: str

    @classmethod
    def describe(cls, gallery: Gallery, data: bytes) -> Manifest:
        return cls(
            embedder=gallery.embedder,
            dimension=gallery.dimension,
            count=len(gallery),
            people=len(set(gallery.names)),
            sha256=hashlib.sha256(data).hexdigest(),
            updated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )


ManifestModel = TypeVar("ManifestModel", bound=BaseModel)


def read_manifest(objects: Objects, key: str, model: type[ManifestModel]) -> ManifestModel | None:
    """The manifest at ``key`` (``None`` when there is none); one that does not parse is a
    :class:`GalleryError` naming it."""
    raw = objects.get(key)
    if raw is None:
        return None
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise GalleryError(f"{objects.uri(key)} is not a gallery manifest: {exc}") from exc


def write_manifest(objects: Objects, key: str, manifest: BaseModel) -> None:
    objects.put(
        key, json.dumps(manifest.model_dump(), indent=2).encode() + b"\n", "application/json"
    )


def check_person_name(name: str) -> str:
    """A name that can be a folder and a key part: no slashes or control characters."""
    if not name or name in (".", "..") or len(name) > 200 or _BAD_NAME.search(name):
        raise GalleryError(
            f"{name!r} cannot be a person's name in the gallery: use 1-200 characters without "
            "slashes or control characters"
        )
    return name


@dataclass(frozen=True)
class Removal:
    """What ``GalleryStore.remove`` deleted."""

    name: str
    rows: int
    crops: int
    old_versions: int


class PersonCrops:
    """Each enrolled face crop as it was embedded, under ``crops_prefix`` of ``objects``:
    ``<crops_prefix><name>/<sha256>.png`` (what re-embedding with another model needs)."""

    def __init__(self, objects: Objects, crops_prefix: str) -> None:
        self.objects = objects
        self.crops_prefix = crops_prefix

    def crop_key(self, name: str, sha256: str) -> str:
        return f"{self._person_prefix(name)}{sha256}.png"

    def _person_prefix(self, name: str) -> str:
        return f"{self.crops_prefix}{check_person_name(name)}/"

    def crops_of(self, name: str) -> list[str]:
        """Keys of ``name``'s stored enrolment crops."""
        return self.objects.keys(self._person_prefix(name))

    def put_crops(self, crops: Mapping[str, bytes] | None) -> None:
        for key, png in (crops or {}).items():
            self.objects.put(key, png, "image/png")

    def erase_crops(self, name: str) -> int:
        """Every version of ``name``'s crops (none for a name that cannot have any)."""
        return self.objects.erase_prefix(self._person_prefix(name)) if is_person_name(name) else 0


class GalleryStore(PersonCrops):
    """The gallery at ``key`` of ``objects``, its manifest and its crops.

    Args:
        objects: the bucket or folder.
        key: the gallery object's key (``gallery/gallery.pt``); its suffix picks the format.
        index_min_size, index_nprobe: passed to every loaded :class:`Gallery`.
    """

    def __init__(
        self,
        objects: Objects,
        key: str,
        *,
        index_min_size: int = INDEX_MIN_SIZE,
        index_nprobe: int = 0,
    ) -> None:
        folder = posixpath.dirname(key)
        super().__init__(objects, f"{folder}/{CROPS_FOLDER}/" if folder else f"{CROPS_FOLDER}/")
        self.key = key
        self.manifest_key = key + MANIFEST_SUFFIX
        self.index_min_size = index_min_size
        self.index_nprobe = index_nprobe

    @property
    def location(self) -> str:
        return self.objects.uri(self.key)

    # --- reading ------------------------------------------------------------------------------
    def tag(self) -> str:
        """Changes whenever the gallery object or its manifest is written (S3: their ETags;
        a folder: modification time and size)."""
        return f"{self.objects.tag(self.key)}|{self.objects.tag(self.manifest_key)}"

    def manifest(self) -> Manifest | None:
        return read_manifest(self.objects, self.manifest_key, Manifest)

    def load(self, *, attempts: int = 2) -> Gallery:
        """The stored gallery (empty when there is none), checked against its manifest.

        A checksum mismatch is read again once after a moment (a writer puts the object before
        its manifest), then raised as :class:`GalleryError`.
        """
        problem = ""
        for attempt in range(attempts):
            if attempt:
                time.sleep(0.5)
            data = self.objects.get(self.key)
            if data is None:
                if self.objects.get(self.manifest_key) is not None:
                    _log.warning("%s has a manifest but no gallery object", self.location)
                return Gallery(index_min_size=self.index_min_size, index_nprobe=self.index_nprobe)
            manifest = self.manifest()
            if manifest is None:
                return self._parse(data, None)
            digest = hashlib.sha256(data).hexdigest()
            if digest == manifest.sha256:
                return self._parse(data, manifest)
            problem = f"sha256 {digest[:16]}… but the manifest says {manifest.sha256[:16]}…"
        raise GalleryError(
            f"{self.location} does not match its manifest: {problem} (corrupt, or written "
            "without its manifest: write galleries with `facepipe gallery ...`)"
        )

    def _parse(self, data: bytes, manifest: Manifest | None) -> Gallery:
        gallery = Gallery.from_bytes(data, source=self.location)
        gallery.index_min_size = self.index_min_size
        gallery.index_nprobe = self.index_nprobe
        if manifest is not None:
            if gallery.embedder is None:
                gallery.embedder = manifest.embedder
            if len(gallery) != manifest.count or (
                len(gallery) and gallery.dimension != manifest.dimension
            ):
                raise GalleryError(
                    f"{self.location} holds {len(gallery)}×{gallery.dimension} rows, its "
                    f"manifest says {manifest.count}×{manifest.dimension}"
                )
        return gallery

    def status(self) -> GalleryStatus:
        """``present``; ``missing`` (never written); ``gone`` (its manifest without it)."""
        if self.objects.tag(self.key) is not None:
            return "present"
        return "gone" if self.objects.tag(self.manifest_key) is not None else "missing"

    def embedder(self) -> str | None:
        return self.load().embedder

    def people(self) -> dict[str, int]:
        return self.load().people()

    def rows_of(self, name: str) -> np.ndarray:
        """``name``'s unit rows (enrolment photos), (n, D)."""
        gallery = self.load()
        return gallery.embeddings[[i for i, n in enumerate(gallery.names) if n == name]]

    def updated_at(self) -> str | None:
        manifest = self.manifest()
        return manifest.updated_at if manifest else None

    def export(self) -> Gallery:
        """Every row, in memory."""
        return self.load()

    # --- writing ------------------------------------------------------------------------------
    def save(self, gallery: Gallery, crops: Mapping[str, bytes] | None = None) -> Manifest:
        """Write ``crops`` (key → PNG), then the gallery object, then its manifest."""
        self.put_crops(crops)
        data = gallery.to_bytes(self.key)
        manifest = Manifest.describe(gallery, data)
        self.objects.put(self.key, data)
        write_manifest(self.objects, self.manifest_key, manifest)
        return manifest

    def remove(self, name: str) -> Removal:
        """Erase ``name``: their rows (a new gallery version), every version of their crops,
        and every older version of the gallery object and its manifest (any of which may hold
        their rows). Older versions of the other people's rows go with them."""
        gallery = self.load()
        rows = gallery.names.count(name)
        if rows:
            self.save(gallery.without(name))
        crops = self.erase_crops(name)
        if not rows and not crops:
            raise GalleryError(f"{name!r} is not in {self.location}", code="not_found")
        old = self.objects.drop_history(self.key) + self.objects.drop_history(self.manifest_key)
        return Removal(name, rows, crops, old)

    def add(self, rows: Gallery, crops: Mapping[str, bytes] | None = None) -> int:
        """The stored gallery plus ``rows`` (and their ``crops``), written; its row count.
        Refuses rows of another embedder or dimension."""
        gallery = self.load().plus(rows)
        self.save(gallery, crops)
        return len(gallery)


GalleryStatus = Literal["present", "missing", "gone"]


class GalleryBackend(Protocol):
    """Where the gallery lives, as enrolment, erasure and recognition use it: the one-object
    :class:`GalleryStore`, or a vector engine's
    (:class:`facepipe.identity.vector_store.LanceGalleryStore`)."""

    objects: Objects  # the crops (and the albums beside the gallery, by default)

    @property
    def location(self) -> str: ...

    def tag(self) -> str: ...

    def status(self) -> GalleryStatus: ...

    def load(self) -> Matcher: ...

    def embedder(self) -> str | None: ...

    def people(self) -> dict[str, int]: ...

    def rows_of(self, name: str) -> np.ndarray: ...

    def updated_at(self) -> str | None: ...

    def export(self) -> Gallery: ...

    def add(self, rows: Gallery, crops: Mapping[str, bytes] | None = None) -> int: ...

    def remove(self, name: str) -> Removal: ...

    def crop_key(self, name: str, sha256: str) -> str: ...

    def crops_of(self, name: str) -> list[str]: ...


def is_person_name(name: str) -> bool:
    """Whether ``name`` can have crops (see :func:`check_person_name`)."""
    try:
        check_person_name(name)
    except GalleryError:
        return False
    return True

"""Galleries and albums opened from where they live: ``s3://bucket/...`` (the S3 adapter) or a
local path (:class:`~facepipe.identity.objects.LocalObjects`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from facepipe.aws.clients import client
from facepipe.aws.s3 import S3Objects
from facepipe.config import Settings
from facepipe.errors import GalleryError
from facepipe.identity.albums import AlbumStore
from facepipe.identity.gallery import INDEX_MIN_SIZE
from facepipe.identity.gallery_store import GalleryStore
from facepipe.identity.objects import LocalObjects, Objects


def open_gallery_store(
    location: str, settings: Settings | None = None, s3: Any = None
) -> GalleryStore:
    """``location``: ``s3://bucket/key`` (``s3`` or ``settings`` give the client) or a path;
    ``settings`` also give the index settings of the galleries it loads."""
    index = {
        "index_min_size": settings.index_min_size if settings else INDEX_MIN_SIZE,
        "index_nprobe": settings.index_nprobe if settings else 0,
    }
    parsed = urlparse(location)
    if parsed.scheme == "s3":
        if s3 is None:
            s3 = client("s3", settings or Settings.from_env())
        key = parsed.path.lstrip("/")
        if not parsed.netloc or not key:
            raise GalleryError(f"{location}: expected s3://<bucket>/<key>")
        return GalleryStore(S3Objects(s3, parsed.netloc), key, **index)
    path = Path(location).expanduser()
    return GalleryStore(LocalObjects(path.parent), path.name, **index)


def albums_location(settings: Settings) -> str:
    """``FACEPIPE_ALBUMS``, else beside the gallery (its bucket, or its folder), else the data
    bucket, else ``FACEPIPE_DATA_DIR`` (beside its default gallery); `gallery remove` erases
    album faces at the same place."""
    if settings.albums:
        return str(settings.albums)
    gallery = urlparse(settings.gallery)
    if gallery.scheme == "s3":
        return f"s3://{gallery.netloc}"
    if settings.gallery:
        return str(Path(settings.gallery).expanduser().parent)
    return f"s3://{settings.bucket}" if settings.bucket else str(settings.data_path)


def open_albums(location: str, s3: Any = None, settings: Settings | None = None) -> AlbumStore:
    """``s3://bucket`` (its ``albums/`` prefix) or a local folder (its ``albums/`` folder);
    ``settings`` give the compaction settings."""
    parsed = urlparse(location)
    objects: Objects
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise GalleryError(f"{location}: expected s3://<bucket>")
        objects = S3Objects(s3, parsed.netloc)
    else:
        objects = LocalObjects(Path(location).expanduser())
    if settings is None:
        return AlbumStore(objects)
    return AlbumStore(
        objects,
        compact_every=settings.album_compact_every,
        merge_max_faces=settings.album_merge_max_faces,
    )

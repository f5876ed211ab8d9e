"""Galleries and albums opened from where they live: ``s3://bucket/...`` (the S3 adapter), a
local path (:class:`~facepipe.identity.objects.LocalObjects`), or a vector engine's database,
``lancedb+s3://bucket/prefix`` or ``lancedb:<folder>``
(:mod:`facepipe.identity.vector_store`, docs/vector-stores.md)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from facepipe.aws.clients import client
from facepipe.aws.s3 import S3Objects
from facepipe.config import Settings
from facepipe.errors import GalleryError
from facepipe.identity.album_stores import Albums
from facepipe.identity.albums import AlbumStore
from facepipe.identity.gallery import INDEX_MIN_SIZE
from facepipe.identity.gallery_store import GalleryBackend, GalleryStore
from facepipe.identity.objects import LocalObjects, Objects
from facepipe.identity.vector_store import LanceAlbumStore, LanceDatabase, LanceGalleryStore

LANCE_PREFIX = "lancedb"


def is_vector_store(location: str) -> bool:
    """Whether ``location`` names a LanceDB database (``lancedb:...``, ``lancedb+s3://...``).

    >>> is_vector_store("lancedb+s3://bucket/people"), is_vector_store("s3://bucket/g.pt")
    (True, False)
    """
    return location.startswith((f"{LANCE_PREFIX}:", f"{LANCE_PREFIX}+"))


def lance_storage_options(settings: Settings | None) -> dict[str, str]:
    """LanceDB's S3 options from the settings: the endpoint (the local stack's emulator, plain
    HTTP allowed on it) and the region; credentials from the environment (Lambda's, ECS's and
    EC2's are found by LanceDB itself), else from boto3's chain (a profile)."""
    settings = settings or Settings.from_env()
    options: dict[str, str] = {}
    if settings.endpoint_url:
        options["aws_endpoint"] = settings.endpoint_url
        if settings.endpoint_url.startswith("http://"):
            options["allow_http"] = "true"
    region = settings.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not region:
        region = client("s3", settings).meta.region_name
    if region:
        options["region"] = region
    if not os.environ.get("AWS_ACCESS_KEY_ID"):
        import boto3

        found = boto3.session.Session().get_credentials()
        if found is not None:
            frozen = found.get_frozen_credentials()
            options["aws_access_key_id"] = str(frozen.access_key)
            options["aws_secret_access_key"] = str(frozen.secret_key)
            if frozen.token:
                options["aws_session_token"] = frozen.token
    return options


def _lance_database(location: str, settings: Settings | None, s3: Any) -> LanceDatabase:
    """``lancedb+s3://bucket/prefix`` or ``lancedb:<folder>`` → the database there."""
    rest = location.split(":", 1)[1] if location.startswith(f"{LANCE_PREFIX}:") else ""
    if location.startswith(f"{LANCE_PREFIX}+s3://"):
        parsed = urlparse(location[len(LANCE_PREFIX) + 1 :])
        if not parsed.netloc:
            raise GalleryError(f"{location}: expected lancedb+s3://<bucket>/<prefix>")
        if s3 is None:
            s3 = client("s3", settings or Settings.from_env())
        objects: Objects = S3Objects(s3, parsed.netloc)
        return LanceDatabase(objects, parsed.path.strip("/"), lance_storage_options(settings))
    if not rest or location.startswith(f"{LANCE_PREFIX}+"):
        raise GalleryError(
            f"{location}: expected lancedb+s3://<bucket>/<prefix> or lancedb:<folder>"
        )
    folder = Path(rest.removeprefix("//")).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    return LanceDatabase(LocalObjects(folder))


def open_gallery_store(
    location: str, settings: Settings | None = None, s3: Any = None
) -> GalleryBackend:
    """``location``: ``s3://bucket/key`` (``s3`` or ``settings`` give the client), a path, or a
    LanceDB database (``lancedb+s3://bucket/prefix``, ``lancedb:<folder>``); ``settings`` also
    give the index settings of the galleries it loads."""
    index = {
        "index_min_size": settings.index_min_size if settings else INDEX_MIN_SIZE,
        "index_nprobe": settings.index_nprobe if settings else 0,
    }
    if is_vector_store(location):
        return LanceGalleryStore(_lance_database(location, settings, s3), **index)
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
    """``FACEPIPE_ALBUMS``, else beside the gallery (its bucket, its folder, or its LanceDB
    database), else the data bucket, else ``FACEPIPE_DATA_DIR`` (beside its default gallery);
    `gallery remove` erases album faces at the same place."""
    if settings.albums:
        return str(settings.albums)
    if is_vector_store(settings.gallery):
        return settings.gallery
    gallery = urlparse(settings.gallery)
    if gallery.scheme == "s3":
        return f"s3://{gallery.netloc}"
    if settings.gallery:
        return str(Path(settings.gallery).expanduser().parent)
    return f"s3://{settings.bucket}" if settings.bucket else str(settings.data_path)


def open_albums(location: str, s3: Any = None, settings: Settings | None = None) -> Albums:
    """``s3://bucket`` (its ``albums/`` prefix), a local folder (its ``albums/`` folder), or a
    LanceDB database (``lancedb+s3://bucket/prefix``, ``lancedb:<folder>``: a table per album)."""
    if is_vector_store(location):
        index_min_size = settings.index_min_size if settings else INDEX_MIN_SIZE
        database = _lance_database(location, settings, s3)
        return LanceAlbumStore(database, index_min_size=index_min_size)
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


def albums_beside(store: GalleryBackend) -> Albums:
    """The albums kept where ``store``'s gallery is (its bucket or folder, or its LanceDB
    database): where `gallery remove` erases the person's album faces."""
    if isinstance(store, LanceGalleryStore):
        return LanceAlbumStore(store.database, index_min_size=store.index_min_size)
    return AlbumStore(store.objects)

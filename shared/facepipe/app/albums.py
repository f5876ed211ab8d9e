"""Album indexing and selfie search on this machine, with the local pipeline's own code (the CLI;
the recognition function indexes and searches through :class:`~facepipe.identity.albums.AlbumStore`
directly)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from facepipe.app.pipeline import LocalPipeline
from facepipe.errors import FacepipeError
from facepipe.identity.album_stores import Albums
from facepipe.identity.albums import AlbumEntry, check_album_name


@dataclass
class IndexReport:
    photos: int = 0
    faces: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    shards: list[str] = field(default_factory=list)


def index_photos(
    pipeline: LocalPipeline,
    store: Albums,
    album: str,
    photos: Iterable[tuple[str, bytes]],
    *,
    shard_size: int = 200,
) -> IndexReport:
    """Detect and embed every face of every ``(photo id, bytes)`` with the pipeline's own code;
    write a shard every ``shard_size`` photos."""
    check_album_name(album)
    report = IndexReport()
    embedder = pipeline.recognition.embedder
    pending: list[AlbumEntry] = []
    pending_photos = 0

    def flush() -> None:
        key = store.add(album, pending, embedder.name)
        if key:
            report.shards.append(key)
        pending.clear()

    for photo, data in photos:
        result = pipeline.run_bytes(data, photo, with_embeddings=True)
        report.photos += 1
        if result.status != "ok":
            report.skipped.append((photo, result.error.message if result.error else "no face"))
            continue
        for face in result.faces:
            pending.append(AlbumEntry(photo, face.box, np.asarray(face.embedding, np.float32)))
        report.faces += len(result.faces)
        pending_photos += 1
        if pending_photos >= shard_size:
            flush()
            pending_photos = 0
    flush()
    return report


def selfie_embedding(pipeline: LocalPipeline, data: bytes) -> np.ndarray:
    """The embedding of the selfie's largest face (MTCNN lists the largest first)."""
    result = pipeline.run_bytes(data, "selfie", with_embeddings=True)
    if result.status != "ok" or not result.faces:
        reason = result.error.message if result.error else "no face found in the selfie"
        raise FacepipeError(reason, code="no_face", status=422)
    return np.asarray(result.faces[0].embedding, np.float32)

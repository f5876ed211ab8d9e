"""The port every album store implements: the object shards of
:class:`~facepipe.identity.albums.AlbumStore`, or a vector engine's tables
(:class:`~facepipe.identity.vector_store.LanceAlbumStore`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from facepipe.identity.albums import AlbumEntry, AlbumHit
from facepipe.identity.objects import Objects


class Albums(Protocol):
    """Album indexing and search, as recognition, the CLI and erasure use it; the albums are
    at ``objects.uri(prefix)``."""

    objects: Objects
    prefix: str

    def albums(self) -> list[str]: ...

    def embedder_of(self, album: str) -> str | None: ...

    def add(self, album: str, entries: Sequence[AlbumEntry], embedder: str) -> str | None: ...

    def find(
        self,
        album: str,
        query: np.ndarray,
        *,
        threshold: float,
        embedder: str,
        limit: int = ...,
    ) -> list[AlbumHit]: ...

    def forget(self, embeddings: np.ndarray, threshold: float) -> int: ...

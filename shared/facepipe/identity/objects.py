"""Where galleries and albums keep their objects, by key: the port, and a local folder.

S3 implements the same port in :class:`facepipe.aws.s3.S3Objects`; :mod:`facepipe.app.stores`
opens either from a location (``s3://bucket/...`` or a path).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol


class Objects(Protocol):
    """Where the gallery's objects live: an S3 bucket or a local folder, by key."""

    def uri(self, key: str) -> str: ...

    def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, data: bytes, content_type: str = ...) -> None: ...

    def tag(self, key: str) -> str | None: ...

    def keys(self, prefix: str) -> list[str]: ...

    def erase_prefix(self, prefix: str) -> int: ...

    def drop_history(self, key: str) -> int: ...

    def drop_history_under(self, prefix: str) -> int: ...


class LocalObjects:
    """Files under ``root``; writes are atomic (a temporary file renamed into place). A folder
    keeps no old versions, so ``drop_history`` has nothing to do."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*key.split("/"))

    def uri(self, key: str) -> str:
        return str(self._path(key))

    def get(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    def put(self, key: str, data: bytes, content_type: str = "") -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def tag(self, key: str) -> str | None:
        try:
            stat = self._path(key).stat()
        except FileNotFoundError:
            return None
        return f"{stat.st_mtime_ns}:{stat.st_size}"

    def keys(self, prefix: str) -> list[str]:
        folder = self._path(prefix.rstrip("/"))
        if not folder.is_dir():
            return []
        return sorted(p.relative_to(self.root).as_posix() for p in folder.rglob("*") if p.is_file())

    def erase_prefix(self, prefix: str) -> int:
        keys = self.keys(prefix)
        for key in keys:
            self._path(key).unlink(missing_ok=True)
        folder = self._path(prefix.rstrip("/"))
        if folder.is_dir():
            for sub in sorted(folder.rglob("*"), reverse=True):
                sub.rmdir()
            folder.rmdir()
        return len(keys)

    def drop_history(self, key: str) -> int:
        return 0

    def drop_history_under(self, prefix: str) -> int:
        return 0

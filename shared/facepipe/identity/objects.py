"""Where galleries and albums keep their objects, by key: the port, and a local folder.

S3 implements the same port in :class:`facepipe.aws.s3.S3Objects`; :mod:`facepipe.app.stores`
opens either from a location (``s3://bucket/...`` or a path).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class Fresh:
    """What :meth:`Objects.get_fresh` found: the object's ``data`` (``None`` when it did not
    change since the tag given, or is not there: see ``exists``) and its current ``tag``."""

    data: bytes | None
    tag: str | None
    changed: bool

    @property
    def exists(self) -> bool:
        return self.tag is not None


class Objects(Protocol):
    """Where the gallery's objects live: an S3 bucket or a local folder, by key."""

    def uri(self, key: str) -> str: ...

    def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, data: bytes, content_type: str = ...) -> None: ...

    def tag(self, key: str) -> str | None: ...

    def get_fresh(self, key: str, tag: str | None) -> Fresh:
        """The object unless its tag is still ``tag`` (one request: S3's ``If-None-Match``)."""
        ...

    def put_if(self, key: str, data: bytes, tag: str | None) -> bool:
        """Write ``key`` only if its tag is still ``tag`` (``None``: only if there is none);
        ``False`` when another writer got there first. S3's conditional writes."""
        ...

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
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def tag(self, key: str) -> str | None:
        try:
            stat = self._path(key).stat()
        except FileNotFoundError:
            return None
        return f"{stat.st_mtime_ns}:{stat.st_size}"

    # Conditional reads and writes tag by content: a file's modification time has the
    # clock's granularity and its inode is reused, so two quick writes could share a stat tag.
    def _digest(self, key: str) -> tuple[bytes | None, str | None]:
        data = self.get(key)
        return data, (
            hashlib.blake2b(data, digest_size=16).hexdigest() if data is not None else None
        )

    def get_fresh(self, key: str, tag: str | None) -> Fresh:
        data, now = self._digest(key)
        if now is not None and now == tag:
            return Fresh(None, now, False)
        return Fresh(data, now, True)

    def put_if(self, key: str, data: bytes, tag: str | None) -> bool:
        """Compare and replace under an exclusive lock on ``.<name>.lock`` beside it (writers
        on one machine's folder; writers on several machines need S3)."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(f".{path.name}.lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if self._digest(key)[1] != tag:
                    return False
                self.put(key, data)
                return True
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def keys(self, prefix: str) -> list[str]:
        """Files under ``prefix`` (not the hidden temporary and lock files); a folder deleted
        while it is walked (a concurrent erase) is skipped, as S3's listing would."""
        folder = self._path(prefix.rstrip("/"))
        found: list[str] = []
        for top, _, files in os.walk(folder):  # errors (a vanished folder) are skipped
            base = Path(top)
            found.extend((base / f).relative_to(self.root).as_posix() for f in files if f[0] != ".")
        return sorted(found)

    def erase_prefix(self, prefix: str) -> int:
        keys = self.keys(prefix)
        for key in keys:
            self._path(key).unlink(missing_ok=True)
        folder = self._path(prefix.rstrip("/"))
        for top, _dirs, files in os.walk(folder, topdown=False):
            for name in files:
                (Path(top) / name).unlink(missing_ok=True)
            with contextlib.suppress(FileNotFoundError):
                os.rmdir(top)
        return len(keys)

    def drop_history(self, key: str) -> int:
        return 0

    def drop_history_under(self, prefix: str) -> int:
        return 0


class CountedObjects:
    """``objects`` with a count of the requests made through it, by kind (``get``, ``list``,
    ...): what ``facepipe bench scale`` reports as objects read per search."""

    def __init__(self, objects: Objects) -> None:
        self.objects = objects
        self.counts: dict[str, int] = {}

    def _count(self, kind: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1

    def reads(self) -> int:
        return sum(self.counts.get(k, 0) for k in ("get", "get_fresh", "tag", "list"))

    def reset(self) -> None:
        self.counts.clear()

    def uri(self, key: str) -> str:
        return self.objects.uri(key)

    def get(self, key: str) -> bytes | None:
        self._count("get")
        return self.objects.get(key)

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self._count("put")
        self.objects.put(key, data, content_type)

    def tag(self, key: str) -> str | None:
        self._count("tag")
        return self.objects.tag(key)

    def get_fresh(self, key: str, tag: str | None) -> Fresh:
        self._count("get_fresh")
        return self.objects.get_fresh(key, tag)

    def put_if(self, key: str, data: bytes, tag: str | None) -> bool:
        self._count("put_if")
        return self.objects.put_if(key, data, tag)

    def keys(self, prefix: str) -> list[str]:
        self._count("list")
        return self.objects.keys(prefix)

    def erase_prefix(self, prefix: str) -> int:
        self._count("erase")
        return self.objects.erase_prefix(prefix)

    def drop_history(self, key: str) -> int:
        return self.objects.drop_history(key)

    def drop_history_under(self, prefix: str) -> int:
        return self.objects.drop_history_under(prefix)

"""boto3 clients built from :class:`~facepipe.config.Settings` (endpoint, region, retries)."""

from __future__ import annotations

import threading
from typing import Any

import boto3
from botocore.config import Config

from facepipe.config import Settings

# Standard retry mode: exponential backoff with jitter on throttling and 5xx, then surface.
_RETRIES = Config(retries={"mode": "standard", "max_attempts": 6}, connect_timeout=5)


_SESSION: boto3.session.Session | None = None
_LOCK = threading.Lock()


def _session() -> boto3.session.Session:
    """One boto3 session per process: each new session loads botocore's endpoint and partition
    data again (tens of ms of every cold start per client)."""
    global _SESSION
    with _LOCK:
        if _SESSION is None:
            _SESSION = boto3.session.Session()
        return _SESSION


def client(service: str, settings: Settings) -> Any:
    kwargs: dict[str, Any] = {"config": _RETRIES}
    if settings.endpoint_url:
        kwargs["endpoint_url"] = settings.endpoint_url
    if settings.region:
        kwargs["region_name"] = settings.region
    session = _session()
    with _LOCK:  # a session is not thread-safe; the clients it makes are
        return session.client(service, **kwargs)  # type: ignore[call-overload]


class LazyClient:
    """A boto3 client built on first use, for clients most invocations never touch (detection's
    S3 claim checks for oversized tasks): ~0.1 s less of every cold start."""

    def __init__(self, service: str, settings: Settings) -> None:
        self._service, self._settings = service, settings
        self._client: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._client is None:
            self._client = client(self._service, self._settings)
        return getattr(self._client, name)

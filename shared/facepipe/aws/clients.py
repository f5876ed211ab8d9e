"""boto3 clients built from :class:`~facepipe.config.Settings` (endpoint, region, retries)."""

from __future__ import annotations

import os
import threading
from typing import Any

import boto3
from botocore.config import Config

from facepipe.config import Settings

# Standard retry mode: exponential backoff with jitter on throttling and 5xx, then surface. The
# timeouts bound every call (botocore's default read timeout is 60 s), so that a result's claim
# in the ledger can outlast the worst-case send (see worst_case_call_s and ledger.lease_s).
CONNECT_TIMEOUT_S = 3.0
READ_TIMEOUT_S = 10.0
MAX_ATTEMPTS = 5
_RETRIES = Config(
    retries={"mode": "standard", "max_attempts": MAX_ATTEMPTS},
    connect_timeout=CONNECT_TIMEOUT_S,
    read_timeout=READ_TIMEOUT_S,
)
# botocore's standard mode sleeps at most base * 2 ** (attempt - 1) between attempts, base 1 s.
_MAX_BACKOFF_S = 20.0


def worst_case_call_s(
    attempts: int = MAX_ATTEMPTS,
    connect_s: float = CONNECT_TIMEOUT_S,
    read_s: float = READ_TIMEOUT_S,
) -> float:
    """The longest one AWS call of these clients can take before it raises: every attempt
    timing out on connect and read, with the longest backoff between them (80 s by default).

    >>> worst_case_call_s()
    80.0
    """
    backoff = sum(min(_MAX_BACKOFF_S, 2.0 ** (n - 1)) for n in range(1, attempts))
    return attempts * (connect_s + read_s) + backoff


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
    """A bounded client of ``service``. Its region: ``FACEPIPE_REGION``, else ``AWS_REGION`` (the
    variable every other AWS SDK and Lambda itself use, which botocore alone ignores), else
    botocore's chain (``AWS_DEFAULT_REGION``, the profile)."""
    kwargs: dict[str, Any] = {"config": _RETRIES}
    if settings.endpoint_url:
        kwargs["endpoint_url"] = settings.endpoint_url
    region = settings.region or os.environ.get("AWS_REGION", "")
    if region:
        kwargs["region_name"] = region
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

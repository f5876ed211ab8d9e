"""boto3 clients built from :class:`~facepipe.config.Settings` (endpoint, region, retries)."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config

from facepipe.config import Settings

# Standard retry mode: exponential backoff with jitter on throttling and 5xx, then surface.
_RETRIES = Config(retries={"mode": "standard", "max_attempts": 6}, connect_timeout=5)


def client(service: str, settings: Settings) -> Any:
    kwargs: dict[str, Any] = {"config": _RETRIES}
    if settings.endpoint_url:
        kwargs["endpoint_url"] = settings.endpoint_url
    if settings.region:
        kwargs["region_name"] = settings.region
    return boto3.session.Session().client(service, **kwargs)  # type: ignore[call-overload]

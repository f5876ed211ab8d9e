"""boto3 clients: one session per process, and clients most invocations never use built lazily."""

from __future__ import annotations

from pathlib import Path

import pytest

from facepipe.aws import clients
from facepipe.config import Settings


def test_clients_share_one_session() -> None:
    settings = Settings.from_env({"FACEPIPE_REGION": "us-east-1"})
    clients.client("sqs", settings)
    first = clients._SESSION
    clients.client("s3", settings)
    assert first is not None and clients._SESSION is first


def test_lazy_client_is_built_on_first_use() -> None:
    settings = Settings.from_env({"FACEPIPE_REGION": "eu-west-1"})
    lazy = clients.LazyClient("s3", settings)
    assert lazy._client is None  # nothing built at cold start
    assert lazy.meta.region_name == "eu-west-1"
    built = lazy._client
    assert built is not None
    lazy.meta  # noqa: B018 - a second use reuses the same client
    assert lazy._client is built


def test_aws_region_alone_gives_the_region(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``AWS_REGION`` (which Lambda and every other AWS SDK use, and the docs rely on) is
    enough: botocore alone would say "You must specify a region". An explicit
    ``FACEPIPE_REGION`` still wins."""
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_REGION", "ap-south-1")
    monkeypatch.setattr(clients, "_SESSION", None)  # a session that sees this environment
    assert clients.client("sqs", Settings.from_env({})).meta.region_name == "ap-south-1"
    chosen = Settings.from_env({"FACEPIPE_REGION": "eu-west-1"})
    assert clients.client("sqs", chosen).meta.region_name == "eu-west-1"

"""boto3 clients: one session per process, and clients most invocations never use built lazily."""

from __future__ import annotations

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

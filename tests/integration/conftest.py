"""Integration fixtures: the template's queues and bucket in a local moto server."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest

from facepipe.local.emulator import LocalAws


@pytest.fixture(scope="module")
def local_aws() -> Iterator[LocalAws]:
    """template.yaml's SQS queues and S3 bucket on 127.0.0.1, one server per test module."""
    with LocalAws() as aws:
        yield aws


@pytest.fixture(scope="module")
def own_observability() -> Iterator[None]:
    """For modules that import handlers: each imports facepipe.aws.powertools under its own
    environment (its service name, as in its own execution environment); the process's copy is
    put back afterwards, so that the handlers later modules import get theirs."""
    saved = sys.modules.pop("facepipe.aws.powertools", None)
    yield
    sys.modules.pop("facepipe.aws.powertools", None)
    if saved is not None:
        sys.modules["facepipe.aws.powertools"] = saved


def read_queue(aws: LocalAws, output: str) -> list[dict[str, Any]]:
    """Every message on the queue of stack output ``output`` (e.g. ``"RequestQueueUrl"``),
    received 10 at a time with WaitTimeSeconds=1 until empty, and deleted."""
    return aws.drain(aws.outputs[output], wait_seconds=1)


def read_all_queues(aws: LocalAws) -> dict[str, list[dict[str, Any]]]:
    """Logical id → messages, for every queue of the template."""
    return {name: aws.drain(url, wait_seconds=1) for name, url in aws.queue_urls().items()}

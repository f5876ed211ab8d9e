"""End-to-end fixtures: the whole local stack, and HTTP/queue helpers that use it as a client
would (real HTTP over 127.0.0.1, results from the response queue).

One stack per runtime and module (``stack`` is parametrized over ``inprocess`` and ``rie``);
each test makes its own request ids and only ever looks for those.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest

from facepipe.config import Settings
from facepipe.local.stack import LocalStack
from facepipe.messages import Result
from tests.conftest import SAMPLES

RESULT_DEADLINE_S = 60.0


@pytest.fixture(scope="module", params=["inprocess", "rie", "image"])
def stack(request: pytest.FixtureRequest) -> Iterator[LocalStack]:
    """``facepipe local up`` in this process: seeded random weights, no gallery. ``image``: each
    function in its built container image (``make image-check`` builds them), skipped with the
    reason where there is no Docker or no image."""
    runtime = request.param
    if runtime == "image":
        skip_without_images()
    settings = Settings.from_env({}, weights="random:0")
    with LocalStack(settings, runtime=runtime, stack=f"facepipe-e2e-{runtime}") as local:
        yield local


def skip_without_images() -> None:
    """Skip (saying why) unless a Docker runs here or can be started, with both images built."""
    from facepipe.errors import ConfigError
    from facepipe.local.docker import DockerDaemon
    from facepipe.local.images import require_images

    try:
        with DockerDaemon() as daemon:
            require_images(daemon)
    except ConfigError as exc:
        pytest.skip(f"image runtime: {exc.message.splitlines()[0]}")


@pytest.fixture
def local(stack: LocalStack) -> LocalStack:
    """The module's stack with its response and dead-letter queues emptied."""
    info = stack.info()
    for url in (info["response_queue_url"], info["dead_letter_queue_url"]):
        stack.aws.drain(url, wait_seconds=0)
    return stack


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def frame(sample: str, request_id: str) -> dict[str, str]:
    content = base64.b64encode((SAMPLES / sample).read_bytes()).decode()
    return {"request_id": request_id, "filename": sample, "content": content}


def http(
    url: str,
    body: bytes | str | Mapping[str, Any] | None = None,
    *,
    method: str = "POST",
    headers: Mapping[str, str] | None = None,
    timeout: float = 180.0,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request with urllib: (status, lower-cased headers, body); 4xx/5xx too."""
    if isinstance(body, Mapping):
        data: bytes | None = json.dumps(body).encode()
    else:
        data = body.encode() if isinstance(body, str) else body
    request = urllib.request.Request(
        url,
        data=data,
        method=method,
        headers=dict(headers or {"content-type": "application/json"}),
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, _lower(response.headers.items()), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, _lower(exc.headers.items()), exc.read()


def _lower(items: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in items}


def post_json(url: str, body: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
    status, headers, raw = http(url, body)
    assert headers.get("content-type") == "application/json", (status, headers, raw[:300])
    return status, json.loads(raw)


def collect(
    sqs: Any,
    queue_url: str,
    request_ids: Sequence[str],
    *,
    deadline_s: float = RESULT_DEADLINE_S,
    grace_s: float = 1.5,
) -> tuple[dict[str, list[Result]], list[str]]:
    """Receive (and delete) results until every id in ``request_ids`` has one or the deadline
    passes, then for ``grace_s`` more (duplicates arrive late). Returns id → its results, and
    the bodies of messages for ids not asked for."""
    wanted = set(request_ids)
    got: dict[str, list[Result]] = {rid: [] for rid in request_ids}
    extra: list[str] = []
    deadline = time.monotonic() + deadline_s
    settle: float | None = None
    while time.monotonic() < (settle if settle is not None else deadline):
        messages = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        for message in messages:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            result = Result.model_validate_json(message["Body"])
            attribute = message["MessageAttributes"]["request_id"]["StringValue"]
            assert attribute == result.request_id
            if result.request_id in wanted:
                got[result.request_id].append(result)
            else:
                extra.append(message["Body"])
        if settle is None and all(got.values()):
            settle = time.monotonic() + grace_s
    return got, extra


def queue_counts(sqs: Any, queue_url: str) -> tuple[int, int]:
    """(visible, in flight) messages."""
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return (
        int(attributes["ApproximateNumberOfMessages"]),
        int(attributes["ApproximateNumberOfMessagesNotVisible"]),
    )

"""No image bytes, crops or embeddings in the logs, even at DEBUG: everything both functions print
under the RIE (their whole stdout/stderr, as CloudWatch would get it) is searched for them."""

from __future__ import annotations

import base64
import json
import re

import pytest

from facepipe.config import Settings
from facepipe.local.stack import LocalStack
from tests.conftest import SAMPLES
from tests.e2e.conftest import collect, frame, new_id, post_json

pytestmark = pytest.mark.slow

# 8+ numbers in a row, e.g. an embedding or a pixel row printed as a list.
NUMBER_RUN = re.compile(r"(?:-?\d+\.\d+(?:e-?\d+)?\s*,\s*){8,}")


def chunks(text: str, size: int = 48, step: int = 4096) -> list[str]:
    """Pieces of ``text`` spread over its length: any one of them in a log means it leaked."""
    return [text[i : i + size] for i in range(0, max(1, len(text) - size), step)]


def test_logs_carry_ids_counts_and_timings_but_never_pixels_or_embeddings() -> None:
    settings = Settings.from_env({}, weights="random:0")
    parameters = {"LogLevel": "DEBUG"}
    with LocalStack(settings, runtime="rie", stack="facepipe-logs", parameters=parameters) as local:
        info = local.info()
        samples = ["astronaut.jpg", "frames/obama-and-biden.jpg", "rocket.jpg"]
        ids = [new_id("logs") for _ in samples]
        body = {"frames": [frame(s, rid) for s, rid in zip(samples, ids, strict=True)]}
        status, _ = post_json(info["function_url"], body)
        assert status == 202
        got, _ = collect(local.aws.sqs, info["response_queue_url"], ids)
        assert [len(got[rid]) for rid in ids] == [1, 1, 1]
        for name in local.invokers:
            assert local.function_env(name)["POWERTOOLS_LOG_LEVEL"] == "DEBUG"
        logs = {
            name: invoker.function.log_text()  # type: ignore[attr-defined]
            for name, invoker in local.invokers.items()
        }

    images = [base64.b64encode((SAMPLES / s).read_bytes()).decode() for s in samples]
    event = json.loads((SAMPLES.parent / "events" / "recognition-sqs.json").read_text())
    # The astronaut's crop exactly as detection queues it (the events are regenerated from the
    # same sample with the same code).
    crops = [f["crop_png"] for f in json.loads(event["Records"][0]["body"])["faces"]]
    for name, text in logs.items():
        if name != "IngestFunction":  # S3 ingress: not used here (its ids come from S3 keys)
            assert ids[0] in text, f"{name} logs no request_id"  # the logs are there, at DEBUG
        for secret in images + crops:
            leaked = [c for c in chunks(secret) if c in text]
            assert not leaked, f"{name} logged image/crop bytes: {leaked[0]}"
        assert "crop_png" not in text, name
        assert not NUMBER_RUN.search(text), f"{name} logged a run of numbers"

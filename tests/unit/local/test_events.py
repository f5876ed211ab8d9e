"""The committed events/ are exactly what ``facepipe events`` makes, and the event shapes are
Lambda's (checked against ``sam local generate-event``)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from facepipe.errors import InvalidRequest
from facepipe.local.emulator import LocalAws
from facepipe.local.events import (
    SENT_AT,
    function_url_event,
    generate_events,
    object_created_event,
    sqs_event,
)
from facepipe.messages import DetectRequest, FaceTask
from facepipe.stages.ingest import S3Object, objects_in_message
from facepipe.vision.frames import decode_base64, decode_image
from tests.conftest import ROOT

EVENTS = ROOT / "events"
EVENT_FILES = [
    "detection-bad.json",
    "detection-multi.json",
    "detection-single.json",
    "ingest-sqs.json",
    "recognition-sqs.json",
]


def sam_event(*args: str) -> dict[str, Any]:
    sam = shutil.which("sam", path=str(Path(sys.executable).parent)) or shutil.which("sam")
    if sam is None:
        pytest.skip("the sam CLI (aws-sam-cli) is not installed")
    out = subprocess.run(
        [sam, "local", "generate-event", *args],
        env={**os.environ, "SAM_CLI_TELEMETRY": "0"},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    return dict(json.loads(out))


def load(name: str) -> dict[str, Any]:
    return dict(json.loads((EVENTS / name).read_text()))


def test_regenerated_events_are_byte_identical(tmp_path: Path) -> None:
    written = generate_events(tmp_path)

    assert sorted(p.name for p in written) == EVENT_FILES
    assert sorted(p.name for p in EVENTS.glob("*.json")) == EVENT_FILES
    for name in EVENT_FILES:
        fresh, committed = (tmp_path / name).read_bytes(), (EVENTS / name).read_bytes()
        assert fresh == committed, f"events/{name} is stale: run `make events` and commit it"
        assert len(committed) <= 150_000


def test_function_url_event_has_lambdas_keys() -> None:
    reference = sam_event("apigateway", "http-api-proxy")
    # With a query string and a cookie, every optional top-level key is present, as in sam's.
    full = function_url_event(
        "{}", path="/x", query="a=1&a=2&b=3", headers={"Cookie": "c1=v1; c2=v2"}
    )
    assert list(full) == list(reference)
    assert set(full["requestContext"]["http"]) == set(reference["requestContext"]["http"])
    # sam's sample also carries the mTLS and JWT-authorizer blocks, which Function URLs lack.
    assert set(reference["requestContext"]) - set(full["requestContext"]) == {
        "authentication",
        "authorizer",
    }
    assert full["queryStringParameters"] == {"a": "1,2", "b": "3"}
    assert full["cookies"] == ["c1=v1", "c2=v2"]
    assert "cookie" not in full["headers"]
    # Without them (the sample events) Lambda leaves cookies and queryStringParameters out.
    single = load("detection-single.json")
    assert set(reference) - set(single) == {"cookies", "queryStringParameters"}
    assert set(single["requestContext"]["http"]) == set(reference["requestContext"]["http"])


def test_function_url_event_values() -> None:
    event = function_url_event(
        b"\x89PNG", method="put", is_base64=True, request_id="r", time_epoch_ms=1767225600123
    )
    assert event["version"] == "2.0" and event["routeKey"] == "$default"
    assert event["body"] == base64.b64encode(b"\x89PNG").decode() and event["isBase64Encoded"]
    context = event["requestContext"]
    assert context["http"]["method"] == "PUT"
    assert context["http"]["sourceIp"] == "127.0.0.1"
    assert context["accountId"] == "anonymous"
    assert context["stage"] == "$default"
    assert context["time"] == "01/Jan/2026:00:00:00 +0000"
    assert context["timeEpoch"] == 1767225600123
    assert event["headers"]["host"] == context["domainName"]
    assert context["domainName"] == f"{context['apiId']}.lambda-url.us-east-1.on.aws"


def test_sqs_event_has_lambdas_keys() -> None:
    reference = sam_event("sqs", "receive-message")["Records"][0]
    event = sqs_event(['{"request_id": "r1"}', "not json"], sent_timestamp_ms=1000)
    first, second = event["Records"]

    assert list(first) == list(reference)
    assert set(first["attributes"]) == set(reference["attributes"])
    assert first["messageAttributes"]["request_id"]["stringValue"] == "r1"
    assert first["messageAttributes"]["request_id"]["dataType"] == "String"
    assert second["messageAttributes"] == {}
    assert first["md5OfBody"] == hashlib.md5(b'{"request_id": "r1"}').hexdigest()
    assert first["messageId"] != second["messageId"]
    assert first["attributes"]["SentTimestamp"] == "1000"
    assert first["eventSourceARN"].endswith(":facepipe-local-RequestQueue")


def test_sample_events_carry_what_their_names_say() -> None:
    single = DetectRequest.parse(json.loads(load("detection-single.json")["body"]), max_frames=16)
    assert [(f.request_id, f.filename) for f in single.frames] == [
        ("sample-astronaut", "astronaut.jpg")
    ]
    assert (
        decode_base64(single.frames[0].content) == (ROOT / "samples" / "astronaut.jpg").read_bytes()
    )

    multi = DetectRequest.parse(json.loads(load("detection-multi.json")["body"]), max_frames=16)
    assert [(f.request_id, f.filename) for f in multi.frames] == [
        ("sample-multi-1", "astronaut.jpg"),
        ("sample-multi-2", "rocket.jpg"),
    ]
    for frame in multi.frames:  # shrunk to keep the file under 150 KB, still a picture
        assert decode_image(decode_base64(frame.content), max_pixels=10**7).width == 256

    bad = json.loads(load("detection-bad.json")["body"])
    with pytest.raises(InvalidRequest, match="base64"):
        decode_base64(bad["content"])

    (record,) = load("recognition-sqs.json")["Records"]
    task = FaceTask.parse_json(record["body"])
    assert (task.request_id, task.filename, len(task.faces)) == (
        "sample-astronaut",
        "astronaut.jpg",
        1,
    )
    assert task.sent_at == SENT_AT
    assert record["md5OfBody"] == hashlib.md5(record["body"].encode()).hexdigest()
    assert record["messageAttributes"]["request_id"]["stringValue"] == "sample-astronaut"

    (record,) = load("ingest-sqs.json")["Records"]
    assert record["eventSourceARN"].endswith(":facepipe-local-IngestQueue")
    assert record["messageAttributes"] == {}  # EventBridge sets none
    astronaut = (ROOT / "samples" / "astronaut.jpg").read_bytes()
    assert objects_in_message(record["body"]) == [
        S3Object(
            bucket="facepipe-local-data",
            key="input/astronaut.jpg",
            etag=hashlib.md5(astronaut).hexdigest(),
            size=len(astronaut),
        )
    ]


def test_object_created_event_is_shaped_as_the_one_the_local_bucket_sends() -> None:
    # moto delivers the bucket's EventBridge events as AWS documents them (one difference: moto
    # spells the object's ETag field "eTag", AWS's documentation "etag"; facepipe reads both).
    with LocalAws(stack="facepipe-eventshape") as aws:
        bucket = aws.outputs["BucketName"]
        put = aws.s3.put_object(Bucket=bucket, Key="input/a b.jpg", Body=b"hello")
        (message,) = aws.drain(aws.outputs["IngestQueueUrl"], wait_seconds=5)
    sent = json.loads(message["Body"])
    ours = object_created_event(
        bucket, "input/a b.jpg", size=5, etag=put["ETag"].strip('"'), version_id=put["VersionId"]
    )
    assert list(ours) == list(sent)
    assert list(ours["detail"]) == list(sent["detail"])
    sent["detail"]["object"]["etag"] = sent["detail"]["object"].pop("eTag")
    assert set(ours["detail"]["object"]) == set(sent["detail"]["object"])
    for field in ("detail-type", "source", "account", "region", "resources"):
        assert ours[field] == sent[field], field
    for field in ("bucket", "requester"):
        assert ours["detail"][field] == sent["detail"][field], field
    for field in ("key", "size", "etag", "version-id"):
        assert ours["detail"]["object"][field] == sent["detail"]["object"][field], field
    assert objects_in_message(json.dumps(ours)) == objects_in_message(message["Body"])

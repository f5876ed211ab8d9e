"""S3 ingress on the local stack: uploads under input/ → output/<key>.json and the response queue.

Real moto server (the bucket's events reach the ingest queue through moto's EventBridge), real
MTCNN on the shipped samples, the real handlers in-process, the real CLI in its own process.
"""

from __future__ import annotations

import csv
import io
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from facepipe.config import Settings
from facepipe.local.stack import LocalStack
from facepipe.messages import Result
from facepipe.stages.ingest import S3Object
from tests.conftest import SAMPLES, run_facepipe
from tests.e2e.conftest import collect, frame, post_json, skip_without_images

pytestmark = pytest.mark.slow
PHOTOS = ("astronaut.jpg", "rocket.jpg", "frames/obama-and-biden.jpg")
MAX_OBJECT_BYTES = 1_000_000  # the samples are under 100 kB


@pytest.fixture(scope="module", params=["inprocess", "image"])
def stack(request: pytest.FixtureRequest) -> Iterator[LocalStack]:
    """In this process, and in the built images (S3 ingress runs in the detection image with
    its other handler), skipped with the reason where there is no Docker or no image."""
    if request.param == "image":
        skip_without_images()
    settings = Settings.from_env({}, weights="random:0", max_object_bytes=MAX_OBJECT_BYTES)
    name = f"facepipe-e2e-s3-{request.param}"
    with LocalStack(settings, runtime=request.param, stack=name) as local:
        yield local


@pytest.fixture
def info(stack: LocalStack, tmp_path: Path) -> dict[str, Any]:
    info = dict(stack.info())
    for url in (info["response_queue_url"], info["ingest_dead_letter_queue_url"]):
        stack.aws.drain(url, wait_seconds=0)
    path = tmp_path / "local.json"
    path.write_text(json.dumps(info) + "\n")
    info["file"] = str(path)
    return info


def put(stack: LocalStack, key: str, data: bytes) -> S3Object:
    bucket = stack.info()["bucket"]
    answer = stack.aws.s3.put_object(Bucket=bucket, Key=key, Body=data)
    return S3Object(bucket, key, answer["ETag"].strip('"'), answer.get("VersionId"))


def output(stack: LocalStack, key: str, deadline_s: float = 90) -> Result:
    """The result object at ``key``, once it is there."""
    s3, bucket = stack.aws.s3, stack.info()["bucket"]
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            return Result.model_validate_json(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        except s3.exceptions.NoSuchKey:
            time.sleep(0.5)
    raise AssertionError(f"no {key} within {deadline_s} s")


def same_faces(a: Result, b: Result) -> None:
    assert a.status == b.status
    assert [f.box for f in a.faces] == [f.box for f in b.faces]
    assert [f.name for f in a.faces] == [f.name for f in b.faces]
    assert (a.width, a.height) == (b.width, b.height)


def test_uploads_give_the_function_url_results_in_output_and_on_the_queue(
    stack: LocalStack, info: dict[str, Any], tmp_path: Path
) -> None:
    batch = f"t1-{uuid.uuid4().hex[:8]}"
    objects = {
        name: put(stack, f"input/{batch}/{name}", (SAMPLES / name).read_bytes()) for name in PHOTOS
    }
    posted = {name: f"post-{uuid.uuid4().hex[:8]}" for name in PHOTOS}
    status, body = post_json(
        info["function_url"], {"frames": [frame(n, posted[n]) for n in PHOTOS]}
    )
    assert status == 202, body
    ids = [*posted.values(), *(o.request_id() for o in objects.values())]
    got, _ = collect(stack.aws.sqs, info["response_queue_url"], ids, deadline_s=120)
    assert all(len(results) == 1 for results in got.values()), got
    for name, obj in objects.items():
        from_s3 = output(stack, f"output/{batch}/{name}.json")
        (queued,) = got[obj.request_id()]
        (via_url,) = got[posted[name]]
        assert from_s3.request_id == queued.request_id == obj.request_id()
        assert from_s3.filename == f"input/{batch}/{name}"
        assert from_s3.output_key == f"output/{batch}/{name}.json"
        same_faces(from_s3, queued)
        same_faces(from_s3, via_url)
    assert [len(output(stack, f"output/{batch}/{n}.json").faces) for n in PHOTOS] == [1, 0, 2]

    out = tmp_path / "batch.csv"
    args = ("--prefix", f"output/{batch}/", "--local-info", info["file"])
    done = run_facepipe("results", "csv", *args, "--out", str(out))
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(out.open()))
    assert [(r["key"], r["face_index"], r["status"]) for r in rows] == [
        (f"input/{batch}/astronaut.jpg", "0", "ok"),
        (f"input/{batch}/frames/obama-and-biden.jpg", "0", "ok"),
        (f"input/{batch}/frames/obama-and-biden.jpg", "1", "ok"),
        (f"input/{batch}/rocket.jpg", "", "no_face"),
    ]
    assert all(r["name"] == "unknown" and len(r["box"].split()) == 4 for r in rows if r["box"])
    to_s3 = run_facepipe(
        "results", "csv", *args, "--out", f"s3://{info['bucket']}/output/{batch}.csv"
    )
    assert to_s3.returncode == 0, to_s3.stderr
    stored = stack.aws.s3.get_object(Bucket=info["bucket"], Key=f"output/{batch}.csv")
    assert stored["Body"].read().decode() == out.read_text()


def test_uploader_waits_writes_the_csv_and_reports_bad_photos(
    stack: LocalStack, info: dict[str, Any], tmp_path: Path
) -> None:
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    for name, target in (("astronaut.jpg", "a.jpg"), ("rocket.jpg", "sub/r.jpg")):
        (photos / target).write_bytes((SAMPLES / name).read_bytes())
    (photos / "notes.jpg").write_text("not a photo at all")
    (photos / "huge.png").write_bytes(b"\0" * (MAX_OBJECT_BYTES + 1))
    batch = f"t2-{uuid.uuid4().hex[:8]}"
    out = tmp_path / "results.csv"
    done = run_facepipe(
        "upload", str(photos), "--batch", batch, "--local-info", info["file"], "--wait",
        "--csv", str(out), "--poll-timeout", "120", "--concurrency", "3",
    )  # fmt: skip
    assert done.returncode == 1, done.stderr  # two photos did not finish
    lines = {line["key"]: line for line in map(json.loads, done.stdout.splitlines())}
    prefix = f"input/{batch}/"
    assert set(lines) == {prefix + n for n in ("a.jpg", "sub/r.jpg", "notes.jpg", "huge.png")}
    assert lines[prefix + "a.jpg"]["status"] == "ok" and lines[prefix + "a.jpg"]["faces"] == 1
    assert lines[prefix + "sub/r.jpg"]["status"] == "no_face"
    assert lines[prefix + "notes.jpg"]["error"]["code"] == "invalid_image"
    assert lines[prefix + "huge.png"]["error"]["code"] == "payload_too_large"
    assert f"error {prefix}notes.jpg: invalid_image" in done.stderr
    assert f"error {prefix}huge.png: payload_too_large" in done.stderr
    assert "results: 4 of 4 (ok 1, no_face 1, error 2), timed out 0" in done.stderr
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [(r["key"].removeprefix(prefix), r["status"]) for r in rows] == [
        ("a.jpg", "ok"),  # upload order: the folder's files, sorted
        ("huge.png", "error"),
        ("notes.jpg", "error"),
        ("sub/r.jpg", "no_face"),
    ]
    # Every result also went to the response queue, once; nothing was dead-lettered.
    ids = [line["request_id"] for line in lines.values()]
    got, _ = collect(stack.aws.sqs, info["response_queue_url"], ids, deadline_s=30)
    assert all(len(results) == 1 for results in got.values()), got
    assert stack.aws.drain(info["ingest_dead_letter_queue_url"], wait_seconds=0) == []


def test_repeated_events_give_one_result(stack: LocalStack, info: dict[str, Any]) -> None:
    batch = f"t3-{uuid.uuid4().hex[:8]}"
    obj = put(stack, f"input/{batch}/a.jpg", (SAMPLES / "astronaut.jpg").read_bytes())
    detail = {
        "bucket": {"name": obj.bucket},
        "object": {"key": obj.key, "etag": obj.etag, "version-id": obj.version_id, "size": 1},
    }
    eventbridge = {"source": "aws.s3", "detail-type": "Object Created", "detail": detail}
    s3_object = {"key": obj.key, "eTag": obj.etag, "versionId": obj.version_id}
    notification = {
        "Records": [
            {
                "eventName": "ObjectCreated:Put",
                "s3": {"bucket": {"name": obj.bucket}, "object": s3_object},
            }
        ]
    }
    # S3 delivers at least once: the same event again (now, and after the result is out), the
    # same object in S3's own notification shape, and S3's test event.
    sqs, queue = stack.aws.sqs, info["ingest_queue_url"]
    for body in (eventbridge, notification, {"Service": "Amazon S3", "Event": "s3:TestEvent"}):
        sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(body))
    first = output(stack, f"output/{batch}/a.jpg.json")
    sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(eventbridge))
    got, _ = collect(sqs, info["response_queue_url"], [obj.request_id()], grace_s=8)
    assert len(got[obj.request_id()]) == 1
    assert output(stack, f"output/{batch}/a.jpg.json") == first
    assert stack.aws.drain(info["ingest_dead_letter_queue_url"], wait_seconds=0) == []

"""S3 ingress pieces without a stack: event parsing, request ids, keys, the CSV, the uploader's
plan, the result copies, and the emulator delivering bucket events to the ingest queue."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from facepipe.aws.s3 import S3ResultCopies
from facepipe.client.sources import SourceError
from facepipe.client.uploads import csv_rows, plan_uploads, write_csv
from facepipe.errors import ConfigError, InvalidMessage
from facepipe.local.emulator import LocalAws
from facepipe.messages import ErrorInfo, FaceResult, Result
from facepipe.stages.ingest import S3Object, check_prefixes, objects_in_message, output_key_for
from tests.conftest import SAMPLES


def eventbridge_event(key: str, version: str | None = "v1", etag: str = "abc") -> dict[str, Any]:
    obj: dict[str, Any] = {"key": key, "size": 3, "etag": etag, "sequencer": "1"}
    if version is not None:
        obj["version-id"] = version
    return {
        "version": "0",
        "detail-type": "Object Created",
        "source": "aws.s3",
        "detail": {"version": "0", "bucket": {"name": "bkt"}, "object": obj, "reason": "PutObject"},
    }


def notification(key: str, version: str | None = "v1", etag: str = "abc") -> dict[str, Any]:
    obj: dict[str, Any] = {"key": key, "size": 3, "eTag": etag}
    if version is not None:
        obj["versionId"] = version
    record = {"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "bkt"}, "object": obj}}
    return {"Records": [record]}


def test_both_event_shapes_name_the_same_object_and_request_id() -> None:
    (via_eventbridge,) = objects_in_message(json.dumps(eventbridge_event("input/a b+c.jpg")))
    # S3 notifications URL-encode keys (space as +, + as %2B); EventBridge does not.
    (via_s3,) = objects_in_message(json.dumps(notification("input/a+b%2Bc.jpg")))
    assert via_eventbridge == via_s3 == S3Object("bkt", "input/a b+c.jpg", "abc", "v1", 3)
    assert via_eventbridge.request_id() == via_s3.request_id()
    assert via_eventbridge.request_id().startswith("s3-") and len(via_s3.request_id()) == 35


def test_request_id_changes_with_version_or_etag_only() -> None:
    base = S3Object("bkt", "input/a.jpg", "abc", "v1")
    assert base.request_id() == S3Object("bkt", "input/a.jpg", "other", "v1").request_id()
    assert base.request_id() != S3Object("bkt", "input/a.jpg", "abc", "v2").request_id()
    assert base.request_id() != S3Object("bkt", "input/b.jpg", "abc", "v1").request_id()
    unversioned = S3Object("bkt", "input/a.jpg", "abc", None)
    assert unversioned.request_id() != S3Object("bkt", "input/a.jpg", "abd").request_id()
    (parsed,) = objects_in_message(json.dumps(notification("input/a.jpg", version="null")))
    assert parsed.version_id is None and parsed.request_id() == unversioned.request_id()


def test_test_events_and_other_event_kinds_announce_nothing() -> None:
    assert objects_in_message(json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent"})) == []
    removed = notification("input/a.jpg")
    removed["Records"][0]["eventName"] = "ObjectRemoved:Delete"
    assert objects_in_message(json.dumps(removed)) == []


@pytest.mark.parametrize("body", ["not json", "[1]", '{"detail": {"bucket": {}}}', '{"x": 1}'])
def test_malformed_ingest_messages_are_invalid(body: str) -> None:
    with pytest.raises(InvalidMessage):
        objects_in_message(body)


def test_output_keys_and_prefixes() -> None:
    assert output_key_for("input/b/x/a.jpg", "input/", "output/") == "output/b/x/a.jpg.json"
    check_prefixes("input/", "output/")
    for ingest, output in (("input/", "input/"), ("in/", "in/out/"), ("a/b/", "a/")):
        with pytest.raises(ConfigError, match="overlap"):
            check_prefixes(ingest, output)


def result(**fields: Any) -> Result:
    return Result(request_id="s3-1", filename="input/b/a.jpg", **fields)


def test_csv_has_a_row_per_face_and_one_per_faceless_photo() -> None:
    face = FaceResult(box=[1.5, 2, 30, 40.25], probability=0.99, name="ann", similarity=0.9512)
    results = [
        result(status="ok", faces=[face, face.model_copy(update={"name": "unknown"})]),
        result(status="no_face"),
        result(status="error", error=ErrorInfo(code="invalid_image", message="not an image")),
    ]
    rows = list(csv_rows(results))
    assert [(r["face_index"], r["name"], r["status"]) for r in rows] == [
        ("0", "ann", "ok"),
        ("1", "unknown", "ok"),
        ("", "", "no_face"),
        ("", "", "error"),
    ]
    assert rows[0]["box"] == "1.5 2 30 40.25" and rows[0]["similarity"] == "0.9512"
    assert rows[3]["error"] == "invalid_image: not an image"
    stream = io.StringIO()
    assert write_csv(results, stream) == 4
    assert stream.getvalue().splitlines()[0] == "key,face_index,box,name,similarity,status,error"


def test_upload_plan_keeps_folder_paths_and_refuses_clashes(tmp_path: Path) -> None:
    (tmp_path / "set" / "sub").mkdir(parents=True)
    (tmp_path / "set" / "a.jpg").write_bytes(b"1")
    (tmp_path / "set" / "sub" / "b.png").write_bytes(b"2")
    (tmp_path / "c.jpg").write_bytes(b"3")
    plan = plan_uploads([str(tmp_path / "set"), str(tmp_path / "c.jpg")], "input/", "b1")
    assert [u.key for u in plan] == ["input/b1/a.jpg", "input/b1/sub/b.png", "input/b1/c.jpg"]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "c.jpg").write_bytes(b"4")
    with pytest.raises(SourceError, match=r"both be uploaded as input/b1/c\.jpg"):
        plan_uploads([str(tmp_path / "c.jpg"), str(tmp_path / "other")], "input/", "b1")
    with pytest.raises(SourceError, match="--batch"):
        plan_uploads([str(tmp_path / "c.jpg")], "input/", "../up")


class _Sink:
    def __init__(self) -> None:
        self.sent: list[Result] = []

    def send_result(self, result: Result) -> None:
        self.sent.append(result)


class _S3:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def put_object(self, *, Bucket: str, Key: str, Body: bytes, ContentType: str) -> None:  # noqa: N803
        self.objects[Key] = Body


def test_result_copies_only_under_the_output_prefix() -> None:
    sink, s3 = _Sink(), _S3()
    copies = S3ResultCopies(sink, s3, "bkt", "output/")
    copies.send_result(result(status="no_face", output_key="output/b/a.jpg.json"))
    copies.send_result(result(status="no_face", output_key="gallery/gallery.pt"))
    copies.send_result(result(status="no_face"))
    assert list(s3.objects) == ["output/b/a.jpg.json"]
    assert Result.model_validate_json(s3.objects["output/b/a.jpg.json"]).status == "no_face"
    assert len(sink.sent) == 3  # every result still reaches the queue


def test_emulator_sends_uploads_under_the_ingest_prefix_to_the_ingest_queue() -> None:
    with LocalAws(stack="facepipe-unit-ingress") as aws:
        bucket = aws.outputs["BucketName"]
        queue = aws.outputs["IngestQueueUrl"]
        assert aws.outputs["IngestPrefix"] == "input/"
        aws.s3.put_object(
            Bucket=bucket, Key="input/b/a.jpg", Body=(SAMPLES / "rocket.jpg").read_bytes()
        )
        aws.s3.put_object(Bucket=bucket, Key="output/b/a.jpg.json", Body=b"{}")
        aws.s3.put_object(Bucket=bucket, Key="payloads/x/y.json", Body=b"{}")
        messages = aws.drain(queue)
        assert len(messages) == 1
        (obj,) = objects_in_message(messages[0]["Body"])
        head = aws.s3.head_object(Bucket=bucket, Key="input/b/a.jpg")
        assert obj == S3Object(
            bucket, "input/b/a.jpg", head["ETag"].strip('"'), head["VersionId"], obj.size
        )

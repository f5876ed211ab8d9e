"""Both Lambda handlers in-process against local AWS (moto: the template's queues and bucket).

Real images through real MTCNN, real SQS and S3 semantics; seeded random embedder weights
(the numbers only need to be consistent here).
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from PIL import Image

from facepipe.identity.gallery import Gallery
from facepipe.local.emulator import LocalAws
from facepipe.local.events import function_url_event, sqs_event
from facepipe.local.invokers import _PER_FUNCTION_MODULES, _own_copies
from facepipe.messages import FaceTask, Result
from tests.conftest import ROOT, SAMPLES


@dataclass
class FakeContext:
    function_name: str = "facepipe-test"
    memory_limit_in_mb: int = 2048
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:facepipe-test"
    aws_request_id: str = "00000000-0000-0000-0000-000000000000"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


@pytest.fixture(scope="module")
def aws() -> Iterator[LocalAws]:
    with LocalAws(stack="facepipe-handlers") as local:
        yield local


def load_handler(aws: LocalAws, logical_id: str, **extra_env: str) -> ModuleType:
    """Import ``functions/<name>/app.py`` the way Lambda does: with the function's env set at
    import (its init code reads it), under a unique module name."""
    env = aws.function_env(logical_id)
    env.update(FACEPIPE_WEIGHTS="random:0", **extra_env)
    folder = aws.function_dir(logical_id)
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        spec = importlib.util.spec_from_file_location(
            f"app_{logical_id}_{uuid.uuid4().hex}", folder / "app.py"
        )
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        # its own Logger/Metrics, built from its env (POWERTOOLS_SERVICE_NAME), as in Lambda:
        # another test may have imported facepipe.aws.powertools with other settings
        with _own_copies(_PER_FUNCTION_MODULES):
            spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def detection(aws: LocalAws) -> ModuleType:
    return load_handler(aws, "DetectionFunction")


@pytest.fixture(scope="module")
def recognition(aws: LocalAws) -> ModuleType:
    return load_handler(aws, "RecognitionFunction")


@pytest.fixture(autouse=True)
def _empty_queues(aws: LocalAws) -> None:
    for url in aws.queue_urls().values():
        aws.drain(url, wait_seconds=0)  # PurgeQueue is limited to once a minute, as in AWS


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def post(handler: ModuleType, body: Any, **kw: Any) -> tuple[int, dict[str, Any]]:
    raw = body if isinstance(body, str) else json.dumps(body)
    response = handler.handler(function_url_event(raw, **kw), FakeContext())
    assert response["headers"]["content-type"] == "application/json"
    return response["statusCode"], json.loads(response["body"])


def results(aws: LocalAws) -> dict[str, Result]:
    msgs = aws.drain(aws.outputs["ResponseQueueUrl"])
    out = {}
    for m in msgs:
        r = Result.model_validate_json(m["Body"])
        assert r.request_id not in out, "two results for one request_id"
        assert m["MessageAttributes"]["request_id"]["StringValue"] == r.request_id
        out[r.request_id] = r
    return out


def tasks(aws: LocalAws) -> list[dict[str, Any]]:
    return aws.drain(aws.outputs["RequestQueueUrl"])


def recognize(recognition: ModuleType, messages: list[dict[str, Any]]) -> dict[str, Any]:
    event = sqs_event([m["Body"] for m in messages], message_ids=[m["MessageId"] for m in messages])
    return recognition.handler(event, FakeContext())


def tiled(path: Path, n: int) -> str:
    """An n×n mosaic of a portrait: n² real faces in one frame."""
    tile = Image.open(path).convert("RGB")
    grid = Image.new("RGB", (tile.width * n, tile.height * n))
    for i in range(n * n):
        grid.paste(tile, ((i % n) * tile.width, (i // n) * tile.height))
    buf = io.BytesIO()
    grid.save(buf, format="JPEG", quality=90)
    return base64.b64encode(buf.getvalue()).decode()


def handler_metrics(stdout: str) -> list[dict[str, Any]]:
    """The EMF blobs a handler printed, less Powertools' separate ColdStart blob (only the
    first invocation of a module prints one, so a test must not count on it either way)."""
    blobs = [json.loads(x) for x in stdout.splitlines() if x.startswith('{"_aws"')]
    return [b for b in blobs if "ColdStart" not in b]


# --- detection ------------------------------------------------------------------------------
def test_frame_with_face_becomes_one_task(aws: LocalAws, detection: ModuleType) -> None:
    status, body = post(
        detection,
        {"request_id": "t-one", "filename": "a.jpg", "content": b64(SAMPLES / "astronaut.jpg")},
    )
    assert status == 202
    assert body["request_id"] == "t-one"
    assert body["frames"] == [
        {"request_id": "t-one", "filename": "a.jpg", "status": "queued", "faces": 1}
    ]
    queued = tasks(aws)
    assert len(queued) == 1
    assert queued[0]["MessageAttributes"]["request_id"]["StringValue"] == "t-one"
    task = FaceTask.model_validate_json(queued[0]["Body"])
    assert (task.request_id, task.width, task.height, len(task.faces)) == ("t-one", 512, 512, 1)
    assert task.payload_key is None
    assert results(aws) == {}


def test_frame_without_face_gets_its_final_result_at_once(
    aws: LocalAws, detection: ModuleType
) -> None:
    status, body = post(detection, {"request_id": "t-none", "content": b64(SAMPLES / "rocket.jpg")})
    assert (status, body["frames"][0]["status"]) == (202, "no_face")
    assert tasks(aws) == []
    got = results(aws)
    assert list(got) == ["t-none"]
    assert got["t-none"].status == "no_face"
    assert got["t-none"].faces == []


def test_multi_frame_request(aws: LocalAws, detection: ModuleType) -> None:
    frames = [
        {"request_id": "m-1", "content": b64(SAMPLES / "astronaut.jpg")},
        {"request_id": "m-2", "content": b64(SAMPLES / "rocket.jpg")},
        {"content": b64(SAMPLES / "astronaut.jpg")},
    ]
    status, body = post(detection, {"frames": frames})
    assert status == 202
    statuses = [(f["status"], f["faces"]) for f in body["frames"]]
    assert statuses == [("queued", 1), ("no_face", 0), ("queued", 1)]
    generated = body["frames"][2]["request_id"]
    assert {FaceTask.model_validate_json(m["Body"]).request_id for m in tasks(aws)} == {
        "m-1",
        generated,
    }
    assert list(results(aws)) == ["m-2"]


def test_many_faces_go_through_s3_claim_check(
    aws: LocalAws, detection: ModuleType, recognition: ModuleType
) -> None:
    status, body = post(
        detection, {"request_id": "t-crowd", "content": tiled(SAMPLES / "astronaut.jpg", 3)}
    )
    assert status == 202
    assert body["frames"][0]["faces"] == 9
    queued = tasks(aws)
    task = FaceTask.model_validate_json(queued[0]["Body"])
    assert task.faces == []
    assert task.payload_key is not None
    assert task.payload_key.startswith("payloads/t-crowd/")
    assert len(queued[0]["Body"]) < 262_144
    bucket = aws.outputs["BucketName"]
    aws.s3.head_object(Bucket=bucket, Key=task.payload_key)
    # Recognition fetches the crops, posts the result, then deletes the payload object.
    response = recognize(recognition, queued)
    assert response == {"batchItemFailures": []}
    got = results(aws)["t-crowd"]
    assert (got.status, len(got.faces)) == ("ok", 9)
    listed = aws.s3.list_objects_v2(Bucket=bucket, Prefix="payloads/t-crowd/")
    assert listed.get("KeyCount", 0) == 0
    # The same message again (SQS delivers at least once): its payload is gone, but the ledger
    # knows the request has its result, so the record is done with nothing posted.
    assert recognize(recognition, queued) == {"batchItemFailures": []}
    assert results(aws) == {}
    assert aws.drain(aws.outputs["DeadLetterQueueUrl"], wait_seconds=0) == []


@pytest.mark.parametrize(
    ("body", "kw", "status", "code"),
    [
        ("{not json", {}, 400, "invalid_request"),
        ({"content": "%%%not-base64%%%"}, {}, 400, "invalid_request"),
        ({"content": base64.b64encode(b"just text").decode()}, {}, 400, "invalid_image"),
        ({"request_id": "bad id with spaces", "content": "aGk="}, {}, 400, "invalid_request"),
        ({"frames": [{"content": "aGk="}] * 17}, {}, 413, "too_many_frames"),
        ({"content": "aGk="}, {"method": "GET"}, 405, "method_not_allowed"),
        ("", {}, 400, "invalid_request"),
    ],
)
def test_bad_input_is_a_clear_4xx_and_queues_nothing(
    aws: LocalAws, detection: ModuleType, body: Any, kw: dict[str, Any], status: int, code: str
) -> None:
    got_status, got = post(detection, body, **kw)
    assert (got_status, got["error"]) == (status, code)
    assert len(got["message"]) > 10
    assert "Traceback" not in got["message"]
    assert tasks(aws) == []
    assert results(aws) == {}


def test_one_bad_frame_rejects_the_whole_request(aws: LocalAws, detection: ModuleType) -> None:
    frames = [
        {"request_id": "ok-1", "content": b64(SAMPLES / "astronaut.jpg")},
        {"request_id": "bad-2", "content": base64.b64encode(b"GIF89a....").decode()},
    ]
    status, body = post(detection, {"frames": frames})
    assert status == 400
    assert "frames[1]" in body["message"]
    assert "bad-2" in body["message"]
    assert tasks(aws) == []


def test_original_size_gives_boxes_in_the_pixels_of_the_frame_before_downscaling(
    aws: LocalAws, detection: ModuleType
) -> None:
    """A client that downscaled a frame too large for the body says the size it had: boxes,
    landmarks, width and height come back in those pixels (each axis its own scale); the crops
    are those of the pixels sent."""
    sent = b64(SAMPLES / "astronaut.jpg")  # 512 x 512
    frames = [
        {"request_id": "os-sent", "content": sent},
        {"request_id": "os-original", "content": sent, "original_size": [1024, 1536]},
    ]
    status, body = post(detection, {"frames": frames})
    assert status == 202, body
    got = {
        t.request_id: t for t in map(FaceTask.model_validate_json, (m["Body"] for m in tasks(aws)))
    }
    plain, scaled = got["os-sent"], got["os-original"]
    assert (plain.width, plain.height, scaled.width, scaled.height) == (512, 512, 1024, 1536)
    [face], [back] = plain.faces, scaled.faces
    x1, y1, x2, y2 = face.box
    assert back.box == pytest.approx([x1 * 2, y1 * 3, x2 * 2, y2 * 3], abs=0.02)
    for (x, y), point in zip(face.landmarks, back.landmarks, strict=True):
        assert point == pytest.approx([x * 2, y * 3], abs=0.02)
    assert back.crop_png == face.crop_png


@pytest.mark.parametrize(
    ("original_size", "words"),
    [
        ([256, 512], "frames[1].original_size (os-small): 256x512 is smaller than the image sent "
         "(512x512)"),
        ([512, 511], "frames[1].original_size (os-small): 512x511 is smaller"),
    ],
)  # fmt: skip
def test_an_original_size_smaller_than_the_frame_is_a_400(
    aws: LocalAws, detection: ModuleType, original_size: list[int], words: str
) -> None:
    frames = [
        {"request_id": "os-fine", "content": b64(SAMPLES / "astronaut.jpg")},
        {"request_id": "os-small", "content": b64(SAMPLES / "astronaut.jpg"),
         "original_size": original_size},
    ]  # fmt: skip
    status, body = post(detection, {"frames": frames})
    assert (status, body["error"]) == (400, "invalid_request")
    assert words in body["message"]
    assert tasks(aws) == [] and results(aws) == {}  # all or nothing


def test_base64_encoded_event_body(aws: LocalAws, detection: ModuleType) -> None:
    raw = json.dumps({"request_id": "t-b64", "content": b64(SAMPLES / "astronaut.jpg")})
    event = function_url_event(raw, is_base64=True)  # Lambda's encoding of a binary body
    assert event["isBase64Encoded"] is True
    assert event["body"] == base64.b64encode(raw.encode()).decode()
    status = detection.handler(event, FakeContext())["statusCode"]
    assert status == 202
    assert len(tasks(aws)) == 1


def test_logs_and_metrics_carry_ids_not_images(
    aws: LocalAws, detection: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    logger = detection.logger  # the handler's own (see load_handler)
    content = b64(SAMPLES / "astronaut.jpg")
    stream = io.StringIO()
    handler = logger.registered_handler
    previous = handler.setStream(stream)  # type: ignore[attr-defined]
    try:
        post(detection, {"request_id": "t-logs", "content": content})
    finally:
        handler.setStream(previous)  # type: ignore[attr-defined]
    logs = [json.loads(line) for line in stream.getvalue().splitlines()]
    accepted = [x for x in logs if x.get("message") == "frames accepted"]
    assert len(accepted) == 1
    assert accepted[0]["request_id"] == "t-logs"
    assert accepted[0]["faces"] == 1
    assert accepted[0]["service"] == "detection"
    emf = handler_metrics(capsys.readouterr().out)
    assert len(emf) == 1
    assert emf[0]["FacesDetected"] == [1.0]
    assert emf[0]["FramesReceived"] == [1.0]
    assert content[:100] not in stream.getvalue()


def test_a_failure_of_its_own_is_a_500_counted_as_requests_failed(
    aws: LocalAws,
    detection: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The request queue is gone (deleted, or a wrong URL in the function's env): SQS refuses the
    # task, and the caller gets a 500 that says to retry. Lambda counts the invocation as a
    # success, so the failure must show in the function's own RequestsFailed metric.
    dispatcher = detection.SERVICE.dispatcher
    monkeypatch.setattr(dispatcher, "request_queue_url", dispatcher.request_queue_url + "-gone")
    status, body = post(
        detection, {"request_id": "t-500", "content": b64(SAMPLES / "astronaut.jpg")}
    )
    assert (status, body["error"]) == (500, "internal_error")
    assert "retry" in body["message"] and "Traceback" not in body["message"]
    emf = handler_metrics(capsys.readouterr().out)
    assert len(emf) == 1
    assert emf[0]["RequestsFailed"] == [1.0]
    assert emf[0]["service"] == "detection"
    assert "FramesReceived" not in emf[0] and "RequestsRejected" not in emf[0]
    assert tasks(aws) == [] and results(aws) == {}


# --- recognition ----------------------------------------------------------------------------
def test_batch_of_real_tasks_gets_one_result_each(
    aws: LocalAws, detection: ModuleType, recognition: ModuleType
) -> None:
    frames = [{"request_id": f"b-{i}", "content": b64(SAMPLES / "astronaut.jpg")} for i in range(3)]
    post(detection, {"frames": frames})
    queued = tasks(aws)
    assert len(queued) == 3
    assert recognize(recognition, queued) == {"batchItemFailures": []}
    got = results(aws)
    assert sorted(got) == ["b-0", "b-1", "b-2"]
    for r in got.values():
        assert r.status == "ok"
        assert r.weights == "random:0"
        assert r.models.embedder == "vggface2"
        assert r.result == ["unknown"]  # no gallery uploaded yet: everyone is unknown
        assert r.timings_ms["batch_faces"] == 3  # all crops of the batch in one forward pass
        assert "queue_wait" in r.timings_ms
        assert r.faces[0].box[0] > 150


def test_malformed_records_get_an_error_result_or_fail_alone(
    aws: LocalAws, detection: ModuleType, recognition: ModuleType
) -> None:
    """A malformed message whose request_id can be read (its message attribute, or the body's
    field, even in a body cut short) gets a final ``error`` result and counts as done; one whose
    request_id cannot be read fails alone, so SQS redrives it to the DLQ."""
    post(detection, {"request_id": "p-good", "content": b64(SAMPLES / "astronaut.jpg")})
    good = tasks(aws)
    bad_crop = {
        "request_id": "p-bad",
        "width": 1,
        "height": 1,
        "sent_at": 0,
        "faces": [{"box": [0, 0, 1, 1], "probability": 1, "crop_png": "bm90IGEgcG5n"}],
    }
    records = [
        ("poison-1", "not json", None),  # nothing names its request: fails, goes to the DLQ
        ("good", good[0]["Body"], "p-good"),
        ("poison-2", json.dumps(bad_crop), None),  # request_id from the body
        ("poison-3", "not json either", "p-attr"),  # request_id from the message attribute
        ("poison-4", '{"request_id": "p-cut", "width": 1', None),  # a body cut short
        ("poison-5", '{"request_id": "bad id", "width": 1}', None),  # not a valid request_id
    ]
    event = sqs_event(
        [body for _, body, _ in records],
        message_ids=[mid for mid, _, _ in records],
        request_ids=[rid for _, _, rid in records],
    )
    response = recognition.handler(event, FakeContext())
    failed = sorted(f["itemIdentifier"] for f in response["batchItemFailures"])
    assert failed == ["poison-1", "poison-5"]
    got = results(aws)
    assert sorted(got) == ["p-attr", "p-bad", "p-cut", "p-good"]
    assert got["p-good"].status == "ok"
    for rid in ("p-attr", "p-bad", "p-cut"):
        assert got[rid].status == "error"
        assert got[rid].error is not None
        assert got[rid].error.code == "invalid_message"
    assert got["p-bad"].error is not None
    assert "face crop is not a valid PNG" in got["p-bad"].error.message
    assert got["p-cut"].error is not None
    assert "not a valid face task" in got["p-cut"].error.message


def test_a_batch_of_only_unreadable_records_is_reported_not_raised(
    recognition: ModuleType,
) -> None:
    event = sqs_event(["not json", "{}"], message_ids=["u-1", "u-2"])
    response = recognition.handler(event, FakeContext())
    assert sorted(f["itemIdentifier"] for f in response["batchItemFailures"]) == ["u-1", "u-2"]


def test_missing_claim_check_is_an_error_result_but_a_failing_s3_is_retried(
    aws: LocalAws, recognition: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    def task(rid: str) -> str:
        key = f"payloads/{rid}/gone.json"
        return json.dumps(
            {"request_id": rid, "width": 9, "height": 9, "sent_at": 0, "payload_key": key}
        )

    gone = sqs_event([task("cc-gone")], message_ids=["cc-1"])
    assert recognition.handler(gone, FakeContext()) == {"batchItemFailures": []}
    result = results(aws)["cc-gone"]
    assert (result.status, result.error and result.error.code) == ("error", "payload_missing")
    # S3 answering with anything but "no such key" is transient: the record fails, to be retried.
    monkeypatch.setattr(recognition.SERVICE.payloads, "bucket", "no-such-bucket")
    broken = sqs_event([task("cc-retry")], message_ids=["cc-2"])
    response = recognition.handler(broken, FakeContext())
    assert response == {"batchItemFailures": [{"itemIdentifier": "cc-2"}]}
    assert results(aws) == {}


def test_a_payload_key_outside_the_requests_prefix_is_refused(
    aws: LocalAws, recognition: ModuleType
) -> None:
    bucket = aws.outputs["BucketName"]
    aws.s3.put_object(Bucket=bucket, Key="payloads/other/x.json", Body=b"{}")
    body = json.dumps(
        {
            "request_id": "pk-1",
            "width": 9,
            "height": 9,
            "sent_at": 0,
            "payload_key": "payloads/other/x.json",
        }
    )
    response = recognition.handler(sqs_event([body], message_ids=["pk"]), FakeContext())
    assert response == {"batchItemFailures": []}
    result = results(aws)["pk-1"]
    assert result.error is not None
    assert "payloads/pk-1/" in result.error.message
    # Not read, so not deleted either: the object belongs to someone else.
    aws.s3.head_object(Bucket=bucket, Key="payloads/other/x.json")
    aws.s3.delete_object(Bucket=bucket, Key="payloads/other/x.json")


def test_gallery_from_s3_names_the_person(aws: LocalAws, detection: ModuleType) -> None:
    post(detection, {"request_id": "g-1", "content": b64(SAMPLES / "astronaut.jpg")})
    queued = tasks(aws)
    # Enrol the sample's own embedding (same seeded weights) plus a distractor.
    from facepipe.identity.facenet import FacenetEmbedder
    from facepipe.stages.recognize import frame_from_task

    task = FaceTask.model_validate_json(queued[0]["Body"])
    face = frame_from_task(task, task.faces).faces[0]
    emb = FacenetEmbedder(weights="random:0", device="cpu").embed([face.crop])[0]
    rng = np.random.default_rng(0)
    gallery = Gallery(["eileen-collins", "someone-else"], np.stack([emb, rng.normal(size=512)]))
    bucket = aws.outputs["BucketName"]
    aws.s3.put_object(Bucket=bucket, Key="gallery/gallery.pt", Body=gallery.to_pt_bytes())
    named = load_handler(aws, "RecognitionFunction")
    assert recognize(named, queued) == {"batchItemFailures": []}
    got = results(aws)["g-1"]
    assert got.result == ["eileen-collins"]
    assert got.faces[0].distance is not None
    assert got.faces[0].distance < 0.01
    # The same face against a gallery of strangers only is unknown.
    strangers = Gallery(["x", "y"], rng.normal(size=(2, 512)))
    aws.s3.put_object(Bucket=bucket, Key="gallery/gallery.pt", Body=strangers.to_pt_bytes())
    unnamed = load_handler(aws, "RecognitionFunction")
    # Another request with the same face: g-1 has its one result already (the ledger).
    again = json.loads(queued[0]["Body"]) | {"request_id": "g-2"}
    assert recognize(unnamed, [{"Body": json.dumps(again), "MessageId": "m-g-2"}]) == {
        "batchItemFailures": []
    }
    assert results(aws)["g-2"].result == ["unknown"]
    aws.s3.delete_object(Bucket=bucket, Key="gallery/gallery.pt")


def test_corrupt_gallery_fails_at_init_with_a_clear_error(aws: LocalAws) -> None:
    from facepipe.errors import GalleryError

    bucket = aws.outputs["BucketName"]
    aws.s3.put_object(Bucket=bucket, Key="gallery/gallery.pt", Body=b"not a gallery")
    try:
        with pytest.raises(GalleryError, match=r"gallery/gallery\.pt"):
            load_handler(aws, "RecognitionFunction")
    finally:
        aws.s3.delete_object(Bucket=bucket, Key="gallery/gallery.pt")


def test_handlers_folder_matches_template() -> None:
    assert (ROOT / "functions" / "detection" / "app.py").is_file()

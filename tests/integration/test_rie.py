"""Each function's REAL entrypoint (``python -m awslambdaric app.handler``, the images'
ENTRYPOINT + CMD, or the template's ImageConfig Command: the S3 ingress function's
``ingest_app.handler``) under the Lambda Runtime Interface Emulator, fed the committed ``events/``,
against the template's queues and bucket in moto. Seeded random embedder weights (random:0).

Each function process starts once per module; its first invoke runs the Lambda init.
"""

from __future__ import annotations

import base64
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pytest
from facenet_pytorch import MTCNN
from PIL import Image

from facepipe.identity.facenet import FacenetEmbedder
from facepipe.identity.gallery import Gallery
from facepipe.local.emulator import LocalAws
from facepipe.local.events import sqs_event
from facepipe.local.rie import RieFunction, function_error
from facepipe.messages import FaceTask, Result
from facepipe.stages.recognize import frame_from_task
from tests.conftest import ROOT, SAMPLES, run_facepipe
from tests.integration.conftest import read_all_queues, read_queue

pytestmark = pytest.mark.slow

EVENTS = ROOT / "events"


def load_event(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / name).read_text())


def iou(a: list[float], b: list[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def start(aws: LocalAws, logical_id: str) -> RieFunction:
    env = aws.function_env(logical_id)
    env["FACEPIPE_WEIGHTS"] = "random:0"
    # Module fixtures run before the per-test env isolation: drop the developer's FACEPIPE_*.
    base = {k: v for k, v in os.environ.items() if not k.startswith("FACEPIPE_")}
    return RieFunction(
        aws.function_dir(logical_id), env, aws.function_handler(logical_id), base_env=base
    )


def invoke(function: RieFunction, event: dict[str, Any]) -> dict[str, Any]:
    payload = function.invoke(event, timeout=120)
    error = function_error(payload)
    assert error is None, f"{error}\n--- function log ---\n{function.log_text()}"
    assert isinstance(payload, dict)
    return payload


@pytest.fixture(scope="module")
def detection(local_aws: LocalAws) -> Iterator[RieFunction]:
    with start(local_aws, "DetectionFunction") as function:
        yield function


@pytest.fixture(scope="module")
def astronaut_task() -> FaceTask:
    return FaceTask.parse_json(load_event("recognition-sqs.json")["Records"][0]["body"])


@pytest.fixture(scope="module")
def recognition(local_aws: LocalAws, astronaut_task: FaceTask) -> Iterator[RieFunction]:
    """The recognition function, with a gallery in the bucket where the template points
    FACEPIPE_GALLERY: the astronaut's own embedding (random:0) and one unrelated vector."""
    crop = frame_from_task(astronaut_task, astronaut_task.faces).faces[0].crop
    own = FacenetEmbedder(weights="random:0", device="cpu").embed([crop])[0]
    other = np.random.default_rng(0).normal(size=own.shape).astype(np.float32)
    gallery = Gallery(["astronaut", "someone-else"], np.stack([own, other]), "vggface2")
    uri = urlparse(local_aws.function_env("RecognitionFunction")["FACEPIPE_GALLERY"])
    local_aws.s3.put_object(Bucket=uri.netloc, Key=uri.path.lstrip("/"), Body=gallery.to_pt_bytes())
    with start(local_aws, "RecognitionFunction") as function:
        yield function


@pytest.fixture(autouse=True)
def _empty_queues(local_aws: LocalAws) -> None:
    for url in local_aws.queue_urls().values():
        local_aws.drain(url, wait_seconds=0)


# --- detection ------------------------------------------------------------------------------
def test_detection_single_frame_queues_the_face(
    local_aws: LocalAws, detection: RieFunction
) -> None:
    event = load_event("detection-single.json")
    response = invoke(detection, event)

    assert response["statusCode"] == 202, response
    body = json.loads(response["body"])
    assert body["request_id"] == "sample-astronaut"
    assert body["frames"] == [
        {
            "request_id": "sample-astronaut",
            "filename": "astronaut.jpg",
            "status": "queued",
            "faces": 1,
        }
    ]
    queued = read_queue(local_aws, "RequestQueueUrl")
    assert len(queued) == 1
    assert queued[0]["MessageAttributes"]["request_id"]["StringValue"] == "sample-astronaut"
    task = FaceTask.parse_json(queued[0]["Body"])
    assert task.request_id == "sample-astronaut"
    assert (task.width, task.height) == (512, 512)
    assert task.payload_key is None
    assert len(task.faces) == 1
    # The same box as plain facenet-pytorch on the very image the event carries.
    content = json.loads(event["body"])["content"]
    image = Image.open(io.BytesIO(base64.b64decode(content))).convert("RGB")
    boxes, _ = MTCNN(keep_all=True, device="cpu").detect(image)
    assert boxes is not None and len(boxes) == 1
    assert iou(task.faces[0].box, [float(v) for v in boxes[0]]) >= 0.99
    assert read_queue(local_aws, "ResponseQueueUrl") == []
    report = detection.last_report()
    assert report is not None and report.duration_ms is not None and report.duration_ms > 0


def test_detection_multi_frame_queues_one_and_answers_no_face(
    local_aws: LocalAws, detection: RieFunction
) -> None:
    response = invoke(detection, load_event("detection-multi.json"))

    assert response["statusCode"] == 202, response
    frames = json.loads(response["body"])["frames"]
    assert [(f["request_id"], f["status"], f["faces"]) for f in frames] == [
        ("sample-multi-1", "queued", 1),
        ("sample-multi-2", "no_face", 0),
    ]
    tasks = [FaceTask.parse_json(m["Body"]) for m in read_queue(local_aws, "RequestQueueUrl")]
    assert [(t.request_id, t.filename, len(t.faces)) for t in tasks] == [
        ("sample-multi-1", "astronaut.jpg", 1)
    ]
    results = [
        Result.model_validate_json(m["Body"]) for m in read_queue(local_aws, "ResponseQueueUrl")
    ]
    assert [(r.request_id, r.filename, r.status, r.faces) for r in results] == [
        ("sample-multi-2", "rocket.jpg", "no_face", [])
    ]


def test_detection_bad_content_is_a_400_and_queues_nothing(
    local_aws: LocalAws, detection: RieFunction
) -> None:
    response = invoke(detection, load_event("detection-bad.json"))

    assert response["statusCode"] == 400, response
    assert response["headers"]["content-type"] == "application/json"
    body = json.loads(response["body"])
    assert body["error"] == "invalid_request"
    assert "base64" in body["message"]
    assert read_all_queues(local_aws) == {
        "RequestQueue": [],
        "RequestDeadLetterQueue": [],
        "ResponseQueue": [],
        "IngestQueue": [],
        "IngestDeadLetterQueue": [],
    }


# --- recognition ----------------------------------------------------------------------------
def test_recognition_sqs_event_posts_the_result(
    local_aws: LocalAws, recognition: RieFunction, astronaut_task: FaceTask
) -> None:
    response = invoke(recognition, load_event("recognition-sqs.json"))

    assert response == {"batchItemFailures": []}
    messages = read_queue(local_aws, "ResponseQueueUrl")
    assert len(messages) == 1
    assert messages[0]["MessageAttributes"]["request_id"]["StringValue"] == "sample-astronaut"
    result = Result.model_validate_json(messages[0]["Body"])
    assert result.request_id == "sample-astronaut"
    assert result.status == "ok"
    assert result.weights == "random:0"
    assert len(result.faces) == 1
    face = result.faces[0]
    assert face.box == astronaut_task.faces[0].box
    # The gallery was read from S3 (FACEPIPE_GALLERY from the template): the face is found.
    assert face.name == "astronaut"
    assert face.distance is not None and face.distance < 1e-3
    assert result.result == ["astronaut"]
    assert read_queue(local_aws, "RequestQueueUrl") == []


def test_recognition_fails_only_the_poisoned_record(
    local_aws: LocalAws, recognition: RieFunction, astronaut_task: FaceTask
) -> None:
    good = astronaut_task.model_copy(update={"request_id": "sample-poison-good"})
    event = sqs_event([good.model_dump_json(), "not json"])
    good_id, poisoned_id = (r["messageId"] for r in event["Records"])

    response = invoke(recognition, event)

    assert response == {"batchItemFailures": [{"itemIdentifier": poisoned_id}]}
    assert good_id != poisoned_id
    results = [
        Result.model_validate_json(m["Body"]) for m in read_queue(local_aws, "ResponseQueueUrl")
    ]
    assert [(r.request_id, r.status, len(r.faces)) for r in results] == [
        ("sample-poison-good", "ok", 1)
    ]


# --- S3 ingress: the detection image's other handler module ---------------------------------
def test_ingest_handler_module_detects_an_uploaded_photo(local_aws: LocalAws) -> None:
    """IngestFunction runs ``ingest_app.handler`` (its ImageConfig Command), not ``app.*``."""
    assert local_aws.function_handler("IngestFunction") == "ingest_app.handler"
    env = local_aws.function_env("IngestFunction")
    bucket, key = local_aws.outputs["BucketName"], env["FACEPIPE_INGEST_PREFIX"] + "rie/a.jpg"
    put = local_aws.s3.put_object(
        Bucket=bucket, Key=key, Body=(SAMPLES / "astronaut.jpg").read_bytes()
    )
    detail = {
        "bucket": {"name": bucket},
        "object": {"key": key, "etag": put["ETag"].strip('"'), "version-id": put.get("VersionId")},
    }
    body = json.dumps({"detail-type": "Object Created", "source": "aws.s3", "detail": detail})
    try:
        with start(local_aws, "IngestFunction") as ingest:
            response = invoke(ingest, sqs_event([body]))

        assert response == {"batchItemFailures": []}
        tasks = [FaceTask.parse_json(m["Body"]) for m in read_queue(local_aws, "RequestQueueUrl")]
        assert [(t.filename, len(t.faces)) for t in tasks] == [(key, 1)]
        assert tasks[0].request_id.startswith("s3-")
        assert read_queue(local_aws, "ResponseQueueUrl") == []
    finally:
        local_aws.drain(local_aws.outputs["IngestQueueUrl"], wait_seconds=0)  # moto's own event
        local_aws.s3.delete_object(Bucket=bucket, Key=key)


# --- the CLI (what `make invoke-*` runs without Docker), in its own process -------------------
def test_cli_invokes_detection_and_shows_the_queues() -> None:
    done = run_facepipe("invoke", "detection", "events/detection-multi.json")

    assert done.returncode == 0, done.stderr
    response, queues = done.stdout.split("\n--- ", 1)
    assert json.loads(response)["statusCode"] == 202
    lines = queues.splitlines()
    assert lines[0] == "RequestQueue: 1 message(s)"
    task = json.loads(lines[1])
    assert task["request_id"] == "sample-multi-1"
    assert task["faces"][0]["crop_png"].endswith(" base64 chars>")  # crops elided
    assert lines[2] == "--- RequestDeadLetterQueue: 0 message(s)"
    assert lines[3] == "--- ResponseQueue: 1 message(s)"
    assert json.loads(lines[4])["status"] == "no_face"
    assert "detection: init" in done.stderr


def _shown_queues(stdout: str) -> dict[str, list[str]]:
    """What ``facepipe invoke`` printed after the answer: ``--- NAME: ...`` headers (queues
    and written objects) → the lines under each."""
    shown: dict[str, list[str]] = {}
    for block in stdout.split("\n--- ")[1:]:
        header, *lines = block.splitlines()
        shown[header.split(": ")[0]] = lines
    return shown


def test_cli_invokes_ingest_on_an_uploaded_object(tmp_path: Path) -> None:
    # The committed event names no version; an event from a versioned bucket names one, which
    # must become the local upload's, or the function would find no such version.
    event = load_event("ingest-sqs.json")
    body = json.loads(event["Records"][0]["body"])
    body["detail"]["object"]["version-id"] = "a-version-of-another-bucket"
    event["Records"][0]["body"] = json.dumps(body)
    versioned = tmp_path / "versioned.json"
    versioned.write_text(json.dumps(event))

    for path in ("events/ingest-sqs.json", str(versioned)):
        done = run_facepipe("invoke", "ingest", path, "--object", "samples/astronaut.jpg")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout.split("\n--- ", 1)[0]) == {"batchItemFailures": []}
        shown = _shown_queues(done.stdout)
        (line,) = shown["RequestQueue"]
        task = FaceTask.parse_json(line)
        assert line.count('"crop_png": "<') == 1  # the one face, its crop elided
        assert (task.filename, task.output_key) == (
            "input/astronaut.jpg",
            "output/astronaut.jpg.json",
        )
        assert task.request_id.startswith("s3-")
        assert shown["ResponseQueue"] == [] and shown["IngestQueue"] == []
        assert "ingest: init" in done.stderr


def test_cli_invokes_ingest_without_the_object() -> None:
    done = run_facepipe("invoke", "ingest", "events/ingest-sqs.json")

    assert done.returncode == 0, done.stderr
    shown = _shown_queues(done.stdout)
    assert shown["RequestQueue"] == []
    (line,) = shown["ResponseQueue"]
    result = Result.model_validate_json(line)
    assert result.status == "error" and result.error is not None
    assert result.error.code == "object_missing"
    # The result's copy next to where the photo was expected, as for any ingested photo.
    (copy,) = shown["s3://facepipe-local-data/output/astronaut.jpg.json"]
    assert Result.model_validate_json(copy) == result


def test_cli_refuses_an_object_it_cannot_use() -> None:
    for args, words in [
        (("detection", "events/detection-single.json"), "--object is for `facepipe invoke ingest`"),
        (("ingest", "events/ingest-sqs.json"), "no such file"),
    ]:
        done = run_facepipe("invoke", *args, "--object", "samples/no-such-photo.jpg")
        assert done.returncode == 2 and words in done.stderr, done.stderr
        assert done.stdout == ""  # refused before any stack or function started


def test_cli_surfaces_an_init_failure(tmp_path: Path) -> None:
    """A gallery the function cannot read fails its init inside the RIE: the CLI shows the
    function's error and its log."""
    broken = tmp_path / "gallery.pt"
    broken.write_bytes(b"not a gallery")
    done = run_facepipe(
        "invoke", "recognition", "events/recognition-sqs.json",
        "--weights", "random:0", "--gallery", str(broken),
    )  # fmt: skip

    assert done.returncode == 1
    assert json.loads(done.stdout.split("\n---", 1)[0])["errorType"] == "GalleryError"
    assert "INIT RTDONE(status: error)" in done.stderr  # and the function's log


def test_cli_stops_before_the_rie_when_the_weights_are_missing(tmp_path: Path) -> None:
    """Missing weights are one line naming the choices, before any RIE starts (not the init
    failure's JSON and 60 lines of RIE log)."""
    missing = tmp_path / "no-such-weights.pt"
    done = run_facepipe(
        "invoke", "recognition", "events/recognition-sqs.json", "--weights", str(missing)
    )

    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert f"FACEPIPE_WEIGHTS={missing} does not exist" in done.stderr
    assert "--embedder dlib" in done.stderr

"""The data-loss paths an adversarial review found, each reproduced against the real handlers on
local AWS (moto: the template's queues, bucket and ledger table), then closed:

* a re-POSTed request_id: answered 202 and then never again (a camera whose counter restarted);
* a result too large for the response queue: retried into the DLQ, never delivered;
* a request over the limits the function's memory allows (all frames decoded at once);
* the claim-check objects of duplicate tasks left behind;
* album faces indexed again by a retried record.
"""

from __future__ import annotations

import base64
import io
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from PIL import Image

from facepipe.aws.s3 import S3Objects
from facepipe.client.results import ResultPoller
from facepipe.client.stack import Endpoints
from facepipe.identity.albums import AlbumEntry, AlbumStore
from facepipe.local.emulator import LocalAws
from facepipe.messages import FaceTask
from tests.conftest import SAMPLES
from tests.integration.test_handlers import (
    _empty_queues,  # noqa: F401  (autouse: every test starts with empty queues)
    b64,
    load_handler,
    post,
    recognize,
    results,
    tasks,
    tiled,
)

pytestmark = pytest.mark.usefixtures("own_observability")


@pytest.fixture(scope="module")
def aws() -> Iterator[LocalAws]:
    with LocalAws(stack="facepipe-loss") as local:
        yield local


@pytest.fixture(scope="module")
def detection(aws: LocalAws) -> ModuleType:
    # At most 4 faces a frame, and tasks of more than 64 KiB (4 faces' crops) claim-checked.
    return load_handler(
        aws, "DetectionFunction", FACEPIPE_MAX_FACES="4", FACEPIPE_MAX_MESSAGE_BYTES="65536"
    )


@pytest.fixture(scope="module")
def recognition(aws: LocalAws) -> ModuleType:
    return load_handler(aws, "RecognitionFunction")


def rid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def frame(request_id: str, sample: str = "astronaut.jpg", **extra: Any) -> dict[str, Any]:
    return {"request_id": request_id, "filename": sample, "content": b64(SAMPLES / sample)} | extra


def answer(aws: LocalAws, detection: ModuleType, recognition: ModuleType, request_id: str) -> None:
    """POST the astronaut under ``request_id`` and let recognition post its result."""
    assert post(detection, frame(request_id))[0] == 202
    assert recognize(recognition, tasks(aws)) == {"batchItemFailures": []}
    assert set(results(aws)) == {request_id}


# --- a request_id names one frame -------------------------------------------------------------
def test_another_frame_under_an_answered_request_id_is_a_409(
    aws: LocalAws, detection: ModuleType, recognition: ModuleType
) -> None:
    """Before: 202, then recognition dropped the task as a duplicate: no result, ever."""
    request_id = rid("reused")
    answer(aws, detection, recognition, request_id)
    status, body = post(detection, frame(request_id, "frames/obama-and-biden.jpg"))
    assert (status, body["error"]) == (409, "duplicate_request_id")
    assert request_id in body["message"] and "new request_id" in body["message"]
    assert tasks(aws) == []
    assert results(aws) == {}


def test_another_frame_under_a_request_id_in_flight_is_a_409(
    aws: LocalAws, detection: ModuleType
) -> None:
    request_id = rid("in-flight")
    assert post(detection, frame(request_id))[0] == 202
    assert len(tasks(aws)) == 1  # queued, not answered yet
    status, body = post(detection, frame(request_id, "frames/obama-and-biden.jpg"))
    assert (status, body["error"]) == (409, "duplicate_request_id")
    assert tasks(aws) == []


def test_the_same_frame_again_is_a_retry_not_a_conflict(
    aws: LocalAws, detection: ModuleType, recognition: ModuleType
) -> None:
    """A client that lost the answer sends the same frame again: in flight it is queued again
    (recognition posts one result), answered it is reported ``duplicate`` and nothing is sent."""
    request_id = rid("retry")
    for _ in range(2):
        status, body = post(detection, frame(request_id))
        assert (status, body["frames"][0]["status"]) == (202, "queued")
    queued = tasks(aws)
    assert len(queued) == 2
    assert recognize(recognition, queued) == {"batchItemFailures": []}
    assert set(results(aws)) == {request_id}  # one result for the two tasks
    status, body = post(detection, frame(request_id))
    assert (status, body["frames"][0]["status"]) == (202, "duplicate")
    assert tasks(aws) == []
    assert results(aws) == {}


def test_a_conflict_refuses_the_whole_request_and_frees_its_other_ids(
    aws: LocalAws, detection: ModuleType, recognition: ModuleType
) -> None:
    used, fresh = rid("used"), rid("fresh")
    answer(aws, detection, recognition, used)
    frames = [frame(fresh), frame(used, "frames/obama-and-biden.jpg")]
    status, body = post(detection, {"frames": frames})
    assert (status, body["error"]) == (409, "duplicate_request_id")
    assert used in body["message"] and fresh not in body["message"]
    assert tasks(aws) == [] and results(aws) == {}
    # Nothing of the refused request stays: its other request_id takes any frame afterwards.
    status, body = post(detection, frame(fresh, "frames/obama-and-biden.jpg"))
    assert (status, body["frames"][0]["status"]) == (202, "queued")


# --- limits that fit the function -------------------------------------------------------------
def _png(width: int, height: int) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (90, 120, 150)).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_a_request_over_the_pixel_budget_is_refused_before_decoding(
    aws: LocalAws, detection: ModuleType
) -> None:
    """Sixteen 12 MP frames fit in a small body (flat PNGs): they were all decoded at once and
    crashed the function. The request's pixels are counted from the headers first."""
    frames = [{"request_id": rid("px"), "content": _png(4000, 3000)} for _ in range(5)]
    status, body = post(detection, {"frames": frames})
    assert (status, body["error"]) == (413, "request_too_large")
    assert "FACEPIPE_MAX_REQUEST_PIXELS" in body["message"]
    assert tasks(aws) == [] and results(aws) == {}


def test_faces_beyond_the_cap_are_dropped_and_counted(
    aws: LocalAws, detection: ModuleType, recognition: ModuleType
) -> None:
    request_id = rid("crowd")
    status, body = post(
        detection, {"request_id": request_id, "content": tiled(SAMPLES / "astronaut.jpg", 3)}
    )
    assert status == 202
    assert (body["frames"][0]["faces"], body["frames"][0]["faces_dropped"]) == (4, 5)
    queued = tasks(aws)
    assert FaceTask.model_validate_json(queued[0]["Body"]).faces_dropped == 5
    assert recognize(recognition, queued) == {"batchItemFailures": []}
    result = results(aws)[request_id]
    assert (len(result.faces), result.faces_dropped) == (4, 5)


# --- results too large for the queue ----------------------------------------------------------
def test_a_result_too_large_for_the_queue_is_claim_checked_and_read_back(
    aws: LocalAws, detection: ModuleType
) -> None:
    """Before: the send failed, the record was retried (embedding again) and dead-lettered."""
    small = load_handler(aws, "RecognitionFunction", FACEPIPE_MAX_MESSAGE_BYTES="2048")
    request_id = rid("big-result")
    post(detection, {"request_id": request_id, "content": tiled(SAMPLES / "astronaut.jpg", 2)})
    assert recognize(small, tasks(aws)) == {"batchItemFailures": []}
    messages = aws.drain(aws.outputs["ResponseQueueUrl"])
    (message,) = messages
    assert len(message["Body"]) < 1024
    stub = json.loads(message["Body"])
    assert stub["faces"] == [] and stub["payload_uri"].startswith("s3://")
    assert f"/payloads/{request_id}/" in stub["payload_uri"]
    # The client reads the whole result back, as `facepipe poll` does.
    queue = aws.outputs["ResponseQueueUrl"]
    aws.sqs.send_message(
        QueueUrl=queue,
        MessageBody=message["Body"],
        MessageAttributes={"request_id": {"DataType": "String", "StringValue": request_id}},
    )
    endpoints = Endpoints(response_queue_url=queue, endpoint_url=aws.endpoint_url)
    report = ResultPoller(aws.sqs, queue, fetch=endpoints.fetch_result).poll(
        [request_id], timeout=10
    )
    whole = report.results[request_id].result
    assert (whole.status, len(whole.faces), whole.payload_uri) == ("ok", 4, None)
    assert aws.drain(aws.outputs["DeadLetterQueueUrl"], wait_seconds=0) == []


def test_the_client_reads_results_from_s3_only() -> None:
    with pytest.raises(ValueError, match="s3://"):
        Endpoints().fetch_result("/etc/passwd")


# --- leftovers --------------------------------------------------------------------------------
def test_a_duplicate_tasks_claim_check_is_deleted_too(
    aws: LocalAws, detection: ModuleType, recognition: ModuleType
) -> None:
    """Before: 20 claim-check objects were left for 30 POSTs of 10 request_ids."""
    request_id = rid("dup-payload")
    bucket = aws.outputs["BucketName"]
    for _ in range(3):  # the same frame three times: three tasks, three claim checks
        post(detection, {"request_id": request_id, "content": tiled(SAMPLES / "astronaut.jpg", 3)})
    queued = tasks(aws)
    assert len(queued) == 3
    for message in queued:  # one at a time: the 2nd and 3rd are duplicates of an answer
        assert recognize(recognition, [message]) == {"batchItemFailures": []}
    assert len(results(aws)) == 1
    listed = aws.s3.list_objects_v2(Bucket=bucket, Prefix=f"payloads/{request_id}/")
    assert listed.get("KeyCount", 0) == 0


def test_a_retried_album_record_indexes_its_faces_once(
    aws: LocalAws, detection: ModuleType, recognition: ModuleType
) -> None:
    """A record whose result could not be posted is retried, and indexes its frame again
    (the album write comes before the post): its faces still count once."""
    album = f"trip-{uuid.uuid4().hex[:6]}"
    request_id = rid("album")
    post(detection, frame(request_id, album={"name": album, "mode": "index"}))
    queued = tasks(aws)
    sink = recognition.SERVICE.sink
    real, calls = sink.sink.send_result, []

    def fail_once(result: Any) -> Any:
        calls.append(result.request_id)
        if len(calls) == 1:
            raise ConnectionError("response queue unavailable")
        return real(result)

    sink.sink.send_result = fail_once
    try:
        first = recognize(recognition, queued)
        assert len(first["batchItemFailures"]) == 1
        assert recognize(recognition, queued) == {"batchItemFailures": []}
    finally:
        sink.sink.send_result = real
    store = AlbumStore(S3Objects(aws.s3, aws.outputs["BucketName"]))
    assert len(store.shards(album)) == 2  # written twice
    assert store.load(album).photos == ["astronaut.jpg"]  # counted once
    assert results(aws)[request_id].album.indexed == 1  # type: ignore[union-attr]


def test_album_shards_keep_one_copy_of_each_request(tmp_path: Any) -> None:
    from facepipe.identity.objects import LocalObjects

    store = AlbumStore(LocalObjects(tmp_path))
    face = np.ones(4, np.float32) / 2
    store.add("a", [AlbumEntry("p.jpg", [0, 0, 1, 1], face, "r1")], "dlib")
    store.add(
        "a",
        [
            AlbumEntry("p.jpg", [0, 0, 1, 1], face, "r1"),
            AlbumEntry("q.jpg", [0, 0, 1, 1], face, "r2"),
        ],
        "dlib",
    )
    store.add(
        "a",
        [AlbumEntry("cli.jpg", [0, 0, 1, 1], face), AlbumEntry("cli.jpg", [0, 0, 1, 1], face)],
        "dlib",
    )
    index = store.load("a")
    # r1 once; the CLI's entries carry no request_id and are all kept
    assert sorted(index.photos) == ["cli.jpg", "cli.jpg", "p.jpg", "q.jpg"]


# --- a redrive after the claim check's old lifetime -------------------------------------------
def test_a_task_redriven_from_the_dlq_days_later_still_finds_its_crops(
    aws: LocalAws, detection: ModuleType, recognition: ModuleType
) -> None:
    """Claim checks expired after a day, while a task may wait 4 days in the request queue and
    14 in the DLQ: every large task redriven after a day was a ``payload_missing`` error. The
    bucket's lifecycle rules (the template's, applied by the emulator at a later date) now keep
    them longer than any task lives."""
    request_id = rid("redrive")
    post(detection, {"request_id": request_id, "content": tiled(SAMPLES / "astronaut.jpg", 3)})
    (queued,) = tasks(aws)
    task = FaceTask.model_validate_json(queued["Body"])
    assert task.payload_key is not None
    dlq, source = aws.outputs["DeadLetterQueueUrl"], aws.outputs["RequestQueueUrl"]
    aws.sqs.send_message(  # dead-lettered, as after MaxReceiveCount failed receives
        QueueUrl=dlq, MessageBody=queued["Body"], MessageAttributes=_attributes(request_id)
    )
    later = datetime.now(UTC) + timedelta(days=13)  # fixed, redriven on the DLQ's 13th day
    assert aws.expire_objects("DataBucket", later) == []
    assert aws.redrive(dlq, source) == 1
    assert recognize(recognition, tasks(aws)) == {"batchItemFailures": []}
    result = results(aws)[request_id]
    assert (result.status, len(result.faces)) == ("ok", 4)


def test_the_lifecycle_rule_still_removes_abandoned_claim_checks(
    aws: LocalAws, detection: ModuleType
) -> None:
    request_id = rid("abandoned")
    post(detection, {"request_id": request_id, "content": tiled(SAMPLES / "astronaut.jpg", 3)})
    (queued,) = tasks(aws)
    key = FaceTask.model_validate_json(queued["Body"]).payload_key
    expired = aws.expire_objects("DataBucket", datetime.now(UTC) + timedelta(days=20))
    assert key in expired


def _attributes(request_id: str) -> dict[str, Any]:
    return {"request_id": {"DataType": "String", "StringValue": request_id}}

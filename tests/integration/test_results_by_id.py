"""Results by request_id through the real handlers on local AWS (moto: the template's queues,
bucket and ledger table): what `GET /results/<id>` and `POST /results` answer is the result the
response queue got, kept in the ledger, and reading it leaves the queue's copy alone.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

from facepipe.client.stack import Endpoints
from facepipe.client.url_results import UrlResultPoller
from facepipe.local.emulator import LocalAws
from facepipe.local.events import function_url_event
from facepipe.messages import Result
from facepipe.stages.ledger import MAX_KEPT_RESULT_BYTES
from tests.conftest import SAMPLES
from tests.integration import test_handlers as handlers
from tests.integration.test_handlers import (
    FakeContext,
    _empty_queues,  # noqa: F401  (autouse: every test starts with empty queues)
    b64,
    load_handler,
    post,
    recognize,
    tasks,
    tiled,
)

pytestmark = pytest.mark.usefixtures("own_observability")
detection = handlers.detection  # the handlers' fixtures, on this module's aws
recognition = handlers.recognition


@pytest.fixture(scope="module")
def aws() -> Iterator[LocalAws]:
    with LocalAws(stack="facepipe-results") as local:
        yield local


def rid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def lookup(detection: ModuleType, request_id: str) -> tuple[int, dict[str, Any]]:
    event = function_url_event("", method="GET", path=f"/results/{request_id}")
    response = detection.handler(event, FakeContext())
    return response["statusCode"], json.loads(response["body"])


def queue_copies(aws: LocalAws) -> dict[str, tuple[str, int]]:
    """request_id → (the body, times it was received before) of each response-queue message,
    all deleted."""
    return {
        m["MessageAttributes"]["request_id"]["StringValue"]: (
            m["Body"],
            int(m["Attributes"]["ApproximateReceiveCount"]) - 1,
        )
        for m in aws.drain(aws.outputs["ResponseQueueUrl"])
    }


def test_a_no_face_result_is_there_at_once_as_the_queue_got_it(
    aws: LocalAws, detection: ModuleType
) -> None:
    request_id = rid("none")
    post(detection, {"request_id": request_id, "content": b64(SAMPLES / "rocket.jpg")})

    status, body = lookup(detection, request_id)
    again, _ = lookup(detection, request_id)

    assert (status, again, body["state"]) == (200, 200, "done")
    copies = queue_copies(aws)
    assert list(copies) == [request_id]
    queued, receives = copies[request_id]
    assert Result.model_validate(body["result"]) == Result.model_validate_json(queued)
    assert receives == 0  # reading by request_id never touched the queue's copy


def test_a_frame_with_faces_is_pending_until_recognised(
    aws: LocalAws, detection: ModuleType, recognition: ModuleType
) -> None:
    request_id, other = rid("face"), rid("never-sent")
    post(detection, {"request_id": request_id, "content": b64(SAMPLES / "astronaut.jpg")})

    assert lookup(detection, request_id)[0] == 202
    assert recognize(recognition, tasks(aws)) == {"batchItemFailures": []}
    event = function_url_event(json.dumps({"request_ids": [other, request_id]}), path="/results")
    response = detection.handler(event, FakeContext())

    assert response["statusCode"] == 200
    states = json.loads(response["body"])["results"]
    assert [(s["request_id"], s["state"]) for s in states] == [
        (other, "unknown"),
        (request_id, "done"),
    ]
    result = Result.model_validate(states[1]["result"])
    assert (result.status, len(result.faces), result.models.embedder) == ("ok", 1, "vggface2")
    queued, receives = queue_copies(aws)[request_id]
    assert Result.model_validate_json(queued) == result and receives == 0


def test_a_large_result_is_kept_claim_checked_and_the_client_reads_it_whole(
    aws: LocalAws, detection: ModuleType
) -> None:
    """A result too large for the queue (or for a ledger item: the queue's limit is the smaller
    of FACEPIPE_MAX_MESSAGE_BYTES and what an item holds) is kept as the queue got it, its short
    form naming the S3 copy, and read back whole."""
    small = load_handler(aws, "RecognitionFunction", FACEPIPE_MAX_MESSAGE_BYTES="2048")
    request_id = rid("big")
    post(detection, {"request_id": request_id, "content": tiled(SAMPLES / "astronaut.jpg", 2)})
    assert recognize(small, tasks(aws)) == {"batchItemFailures": []}

    status, body = lookup(detection, request_id)

    assert status == 200
    assert body["result"]["faces"] == [] and body["result"]["payload_uri"].startswith("s3://")
    endpoints = Endpoints(endpoint_url=aws.endpoint_url)
    poller = UrlResultPoller(
        "http://127.0.0.1:9/", fetch=endpoints.fetch_result, sign="never"
    )  # not asked: the answer is given to it
    whole = poller.received(request_id, body["result"]).result
    assert (whole.status, len(whole.faces), whole.payload_uri) == ("ok", 4, None)
    large = load_handler(aws, "RecognitionFunction", FACEPIPE_MAX_MESSAGE_BYTES="1048576")
    queue_sink = large.SERVICE.sink.sink.sink  # ledger → S3 ingress copies → response queue
    assert queue_sink.max_message_bytes == MAX_KEPT_RESULT_BYTES


# --- "reply": "by_id": kept by request_id only, nothing on the response queue ----------------
def test_by_id_results_are_kept_and_the_response_queue_gets_none(
    aws: LocalAws, detection: ModuleType, recognition: ModuleType
) -> None:
    """Before: every result went to the response queue too, where a client that reads by
    request_id left it unread (4 days' retention), and a client that sifts the queue handed
    back all such orphans before it reached its own."""
    face, none = rid("face"), rid("none")
    status, body = post(
        detection,
        {
            "frames": [
                {"request_id": face, "content": b64(SAMPLES / "astronaut.jpg"), "reply": "by_id"},
                {"request_id": none, "content": b64(SAMPLES / "rocket.jpg"), "reply": "by_id"},
            ]
        },
    )
    assert status == 202, body
    queued = tasks(aws)
    assert [json.loads(m["Body"])["reply"] for m in queued] == ["by_id"]
    assert recognize(recognition, queued) == {"batchItemFailures": []}

    states = {r: lookup(detection, r) for r in (face, none)}

    assert {r: (s, b["state"]) for r, (s, b) in states.items()} == {
        face: (200, "done"),
        none: (200, "done"),
    }
    assert Result.model_validate(states[face][1]["result"]).status == "ok"
    assert Result.model_validate(states[none][1]["result"]).status == "no_face"
    assert queue_copies(aws) == {}


def test_a_malformed_by_id_task_gets_its_error_result_kept_not_posted(
    aws: LocalAws, recognition: ModuleType
) -> None:
    """A task that is not one still tells how its error result is wanted."""
    request_id = rid("bad")
    body = json.dumps({"request_id": request_id, "width": "wide", "reply": "by_id"})
    messages = [{"Body": body, "MessageId": "m-bad"}]

    assert recognize(recognition, messages) == {"batchItemFailures": []}

    [state] = recognition.SERVICE.sink.ledger.lookup([request_id]).values()
    error = Result.model_validate_json(state.result or "")
    assert (error.status, error.error and error.error.code) == ("error", "invalid_message")
    assert queue_copies(aws) == {}


def test_a_stack_that_offers_no_results_by_id_refuses_by_id_requests(aws: LocalAws) -> None:
    """A public Function URL (FACEPIPE_RESULTS_BY_ID=false) serves no /results: a result kept
    only there would be lost, so the request is refused, and nothing is admitted or queued."""
    public = load_handler(aws, "DetectionFunction", FACEPIPE_RESULTS_BY_ID="false")
    request_id = rid("public")
    frame = {"request_id": request_id, "content": b64(SAMPLES / "rocket.jpg")}

    status, body = post(public, {**frame, "reply": "by_id"})

    assert (status, body["error"]) == (400, "results_by_id_off")
    assert request_id in body["message"] and "FACEPIPE_RESULTS_BY_ID" in body["message"]
    assert public.SERVICE.ledger.lookup([request_id]) == {}
    assert queue_copies(aws) == {} and tasks(aws) == []
    assert post(public, frame)[0] == 202  # the default still goes to the queue
    assert list(queue_copies(aws)) == [request_id]

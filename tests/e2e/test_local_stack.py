"""The whole pipeline through ``facepipe local up``'s stack: real HTTP on 127.0.0.1 into the
Function URL server, the detection function, the request queue (moto), the SQS event source
mapping, the recognition function and the response queue; for both runtimes (in-process, and
the real awslambdaric entrypoints under the Lambda RIE). Seeded random weights (random:0).
"""

from __future__ import annotations

import base64
import json
import signal
import socket
import subprocess
import threading
import time
from http.client import HTTPConnection
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest

from facepipe.local.stack import INFO_KEYS, LocalStack
from facepipe.local.url_server import MAX_BODY_BYTES, FunctionUrlServer, http_response, is_text
from tests.conftest import FACEPIPE, ROOT
from tests.e2e.conftest import collect, frame, http, new_id, post_json, queue_counts

slow = pytest.mark.slow


# --- through the stack ----------------------------------------------------------------------
@slow
def test_frame_with_a_face_gives_one_ok_result(local: LocalStack) -> None:
    info = local.info()
    rid = new_id("face")

    status, body = post_json(info["function_url"], frame("astronaut.jpg", rid))

    assert status == 202, body
    assert body["frames"] == [
        {"request_id": rid, "filename": "astronaut.jpg", "status": "queued", "faces": 1}
    ]
    got, extra = collect(local.aws.sqs, info["response_queue_url"], [rid])
    assert extra == []
    (result,) = got[rid]
    assert (result.status, len(result.faces), result.weights) == ("ok", 1, "random:0")
    assert result.result == ["unknown"]  # the local bucket has no gallery: everyone is unknown
    assert "queue_wait" in result.timings_ms


@slow
def test_frame_without_a_face_gives_one_no_face_result(local: LocalStack) -> None:
    info = local.info()
    rid = new_id("noface")

    status, body = post_json(info["function_url"], frame("rocket.jpg", rid))

    assert (status, body["frames"][0]["status"]) == (202, "no_face")
    got, extra = collect(local.aws.sqs, info["response_queue_url"], [rid])
    assert extra == []
    assert [(r.status, r.faces) for r in got[rid]] == [("no_face", [])]


@slow
def test_three_frames_give_one_result_each(local: LocalStack) -> None:
    info = local.info()
    ids = [new_id("multi") for _ in range(3)]
    samples = ["astronaut.jpg", "rocket.jpg", "astronaut.jpg"]

    status, body = post_json(
        info["function_url"],
        {"frames": [frame(s, rid) for s, rid in zip(samples, ids, strict=True)]},
    )

    assert status == 202, body
    assert [f["request_id"] for f in body["frames"]] == ids
    got, extra = collect(local.aws.sqs, info["response_queue_url"], ids)
    assert extra == []
    assert {rid: [r.status for r in results] for rid, results in got.items()} == {
        ids[0]: ["ok"],
        ids[1]: ["no_face"],
        ids[2]: ["ok"],
    }


@slow
def test_bad_base64_is_a_400_and_queues_nothing(local: LocalStack) -> None:
    info = local.info()
    source = local.event_sources[0]
    batches = source.batches

    status, body = post_json(
        info["function_url"], {"request_id": new_id("bad"), "content": "%%% not base64 %%%"}
    )

    assert status == 400
    assert body["error"] == "invalid_request"
    assert "base64" in body["message"]
    got, extra = collect(local.aws.sqs, info["response_queue_url"], [], deadline_s=0)
    assert (got, extra) == ({}, [])
    assert queue_counts(local.aws.sqs, info["request_queue_url"]) == (0, 0)
    assert source.batches == batches


@slow
def test_get_is_a_405(local: LocalStack) -> None:
    status, headers, raw = http(local.info()["function_url"] + "some/path?x=1", method="GET")

    assert status == 405
    assert headers["content-type"] == "application/json"
    assert json.loads(raw)["error"] == "method_not_allowed"
    assert headers["x-amzn-requestid"]


@slow
def test_body_over_6_mb_is_a_413_from_the_url(local: LocalStack) -> None:
    url = local.info()["function_url"]

    # Just under the limit, the function answers (the body is not JSON: its own 400) ...
    status, _, raw = http(url, b"x" * (MAX_BODY_BYTES - 100_000))
    assert (status, json.loads(raw)["error"]) == (400, "invalid_request")
    # ... one byte over, the Function URL does, without invoking it.
    status, headers, raw = http(url, b"x" * (MAX_BODY_BYTES + 1))
    assert status == 413
    assert headers["content-type"] == "application/json"
    body = json.loads(raw)
    assert body["error"] == "payload_too_large"
    assert str(MAX_BODY_BYTES + 1) in body["message"]
    assert "send fewer frames per request" in body["message"]
    assert "`facepipe upload`" in body["message"]  # where a single frame this large can go


@slow
@pytest.mark.filterwarnings("ignore:No application metrics:UserWarning")  # a poison-only batch
def test_poisoned_message_goes_to_the_dlq_and_the_good_ones_still_finish(
    local: LocalStack,
) -> None:
    """Lambda's ESM semantics with ReportBatchItemFailures: a poisoned record nobody can be
    answered for (no request_id anywhere) is reported, never deleted, received maxReceiveCount
    times and then moved to the DLQ by SQS; the good records of its batches are deleted and get
    their results. A malformed record whose request_id can be read gets an ``error`` result
    instead, once, and is deleted."""
    info = local.info()
    sqs = local.aws.sqs
    queue = info["request_queue_url"]
    source = local.event_sources[0]
    max_receive = int(local.aws.intrinsics.ref("MaxReceiveCount"))
    template_timeout = local.aws.template["Resources"]["RequestQueue"]["Properties"][
        "VisibilityTimeout"
    ]
    answered_rid, good = new_id("malformed"), [new_id("good"), new_id("good")]
    # As an operator could: a short visibility timeout (still above the 1 s batching window),
    # so failures come back in seconds.
    sqs.set_queue_attributes(QueueUrl=queue, Attributes={"VisibilityTimeout": "2"})
    # moto takes the queue's timeout when a long poll starts: let the poller's current one end.
    time.sleep(source.poll_wait_seconds + 0.5)
    try:
        poison_id = sqs.send_message(
            QueueUrl=queue,
            MessageBody="not json",
            MessageAttributes={"origin": {"DataType": "String", "StringValue": "e2e"}},
        )["MessageId"]
        sqs.send_message(
            QueueUrl=queue,
            MessageBody="not json either",
            MessageAttributes={"request_id": {"DataType": "String", "StringValue": answered_rid}},
        )
        status, _ = post_json(
            info["function_url"], {"frames": [frame("astronaut.jpg", rid) for rid in good]}
        )
        assert status == 202

        got, extra = collect(sqs, info["response_queue_url"], [*good, answered_rid])
        assert {rid: [r.status for r in rs] for rid, rs in got.items()} == {
            good[0]: ["ok"],
            good[1]: ["ok"],
            answered_rid: ["error"],
        }
        error = got[answered_rid][0].error
        assert error is not None
        assert error.code == "invalid_message"
        dead: list[dict[str, Any]] = []
        deadline = time.monotonic() + 60
        while not dead and time.monotonic() < deadline:
            dead = local.aws.drain(info["dead_letter_queue_url"])
    finally:
        sqs.set_queue_attributes(
            QueueUrl=queue, Attributes={"VisibilityTimeout": str(template_timeout)}
        )

    assert extra == []  # no result for the poisoned record, one for the malformed one
    assert [(m["MessageId"], m["Body"]) for m in dead] == [(poison_id, "not json")]
    assert dead[0]["MessageAttributes"]["origin"]["StringValue"] == "e2e"
    seen = [o for o in source.outcomes if poison_id in o.message_ids]
    assert [o.receive_counts[poison_id] for o in seen] == list(range(1, max_receive + 1))
    for outcome in seen:
        assert poison_id in outcome.failed
        assert poison_id not in outcome.deleted
        assert outcome.error is None  # a reported item failure, even alone in its batch
    good_outcomes = [o for o in source.outcomes if set(o.deleted) - {poison_id}]
    assert good_outcomes, "the good records were deleted"
    assert queue_counts(sqs, queue) == (0, 0)


# --- the Function URL's response mapping (no stack) -----------------------------------------
def test_response_mapping_is_lambdas() -> None:
    assert http_response({"errorType": "Boom", "errorMessage": "x"}) == (
        502,
        [("content-type", "application/json")],
        b'{"message": "Internal Server Error"}',
    )
    assert http_response("hello")[::2] == (200, b'"hello"')
    assert http_response({"message": "no statusCode"})[::2] == (
        200,
        b'{"message": "no statusCode"}',
    )
    status, headers, raw = http_response(
        {
            "statusCode": 201,
            "headers": {"x-a": "1", "content-length": "999"},
            "cookies": ["c=1"],
            "body": "aGk=",
            "isBase64Encoded": True,
        }
    )
    assert (status, headers, raw) == (201, [("x-a", "1"), ("set-cookie", "c=1")], b"hi")
    assert http_response({"statusCode": "abc"})[0] == 502


def test_binary_bodies_are_base64_encoded_like_lambda() -> None:
    assert is_text("application/json", b'{"a": 1}')
    assert is_text("text/plain; charset=utf-8", "é".encode())
    assert is_text("application/vnd.api+json", b"{}")
    assert not is_text("image/jpeg", b"\xff\xd8")
    assert not is_text("application/json", b"\xff\xfe")  # not UTF-8
    assert not is_text(None, b"data")


class RecordingFunction:
    """An invoker that records each event and answers ``answer``."""

    name = "Recorder"

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.events: list[dict[str, Any]] = []

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def invoke(self, event: dict[str, Any]) -> Any:
        self.events.append(event)
        return self.answer


def test_url_server_builds_lambdas_event_and_maps_the_answer() -> None:
    answer = {"statusCode": 201, "headers": {"x-made": "here"}, "body": "made"}
    function = RecordingFunction(answer)
    with FunctionUrlServer(function) as server:
        assert server.url.startswith("http://127.0.0.1:")
        status, headers, raw = http(
            server.url + "a/b?x=1&x=2&y=",
            b"\xff\xd8binary",
            headers={"content-type": "image/jpeg", "cookie": "c1=v1; c2=v2", "x-two": "a"},
        )
        assert (status, headers["x-made"], raw) == (201, "here", b"made")
        event = function.events[0]
        assert event["requestContext"]["http"]["method"] == "POST"
        assert (event["rawPath"], event["rawQueryString"]) == ("/a/b", "x=1&x=2&y=")
        assert event["queryStringParameters"] == {"x": "1,2", "y": ""}
        assert event["cookies"] == ["c1=v1", "c2=v2"]
        assert event["headers"]["x-two"] == "a"
        assert event["isBase64Encoded"] is True
        assert base64.b64decode(event["body"]) == b"\xff\xd8binary"

        # A chunked upload is read whole; over the limit it is a 413 and no invocation.
        connection = HTTPConnection("127.0.0.1", server.port, timeout=30)
        connection.request(
            "PUT", "/", body=iter([b'{"a": ', b"1}"]), headers={"content-type": "application/json"}
        )
        response = connection.getresponse()
        assert (response.status, response.read()) == (201, b"made")
        connection.close()
        assert (function.events[-1]["body"], function.events[-1]["isBase64Encoded"]) == (
            '{"a": 1}',
            False,
        )
        invoked = len(function.events)
        connection = HTTPConnection("127.0.0.1", server.port, timeout=30)
        chunk = b"x" * (1 << 20)
        connection.request("POST", "/", body=iter([chunk] * 7))
        response = connection.getresponse()
        assert response.status == 413
        assert json.loads(response.read())["error"] == "payload_too_large"
        connection.close()
        assert len(function.events) == invoked

    function.answer = {"errorType": "Boom", "errorMessage": "x"}
    with FunctionUrlServer(function) as server:
        status, _, raw = http(server.url, "{}")
        assert (status, json.loads(raw)) == (502, {"message": "Internal Server Error"})
    assert not port_open(server.url)


# --- the CLI, as a person runs it -----------------------------------------------------------
def read_line(process: subprocess.Popen[str], timeout: float) -> str:
    stdout = process.stdout
    assert stdout is not None
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    assert line, f"no line on stdout within {timeout} s"
    return line[0]


def port_open(url: str) -> bool:
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname, parts.port), timeout=1).close()
    except OSError:
        return False
    return True


@slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_cli_local_up_prints_its_info_serves_and_stops_cleanly(
    tmp_path: Path, signum: signal.Signals
) -> None:
    stderr_path = tmp_path / "stderr.log"
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(
            [*FACEPIPE, "local", "up", "--weights", "random:0"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    try:
        info = json.loads(read_line(process, timeout=120))
        assert tuple(info) == INFO_KEYS
        assert info["function_url"].startswith("http://127.0.0.1:")
        assert info["endpoint_url"].startswith("http://127.0.0.1:")
        assert info["runtime"] == "inprocess"

        rid = new_id("cli")
        status, body = post_json(info["function_url"], frame("astronaut.jpg", rid))
        assert status == 202, body
        sqs = boto3.session.Session().client(
            "sqs",
            endpoint_url=info["endpoint_url"],
            region_name=info["region"],
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        got, extra = collect(sqs, info["response_queue_url"], [rid])
        assert ([r.status for r in got[rid]], extra) == (["ok"], [])

        process.send_signal(signum)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.stdout is not None
    assert process.stdout.read() == ""  # exactly one line on stdout
    log = stderr_path.read_text()
    assert "seeded random weights (random:0)" in log
    assert f"{signum.name}, shutting down" in log
    assert not port_open(info["function_url"])
    assert not port_open(info["endpoint_url"])


@slow
@pytest.mark.parametrize("runtime", ["inprocess", "rie"])
def test_cli_local_up_without_weights_says_so_and_exits_2(tmp_path: Path, runtime: str) -> None:
    missing = tmp_path / "no-such-weights.pt"
    start = time.monotonic()
    done = subprocess.run(
        [*FACEPIPE, "local", "up", "--runtime", runtime, "--weights", str(missing)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert f"FACEPIPE_WEIGHTS={missing} does not exist" in done.stderr
    assert time.monotonic() - start < 60

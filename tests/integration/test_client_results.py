"""The client's results side against the template's response queue in LocalAws: the poller takes
exactly its own results and leaves others'; annotated images; and ``facepipe get`` / ``send`` |
``poll`` end to end against a stand-in Function URL on 127.0.0.1 that posts results to the queue.
"""

from __future__ import annotations

import base64
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import cv2
import numpy as np
import pytest
from botocore.config import Config
from botocore.exceptions import EndpointConnectionError, ReadTimeoutError
from PIL import Image

from facepipe.aws.sqs import SqsResultSink
from facepipe.client.annotate import UNKNOWN, draw_result, label_origin, write_annotated
from facepipe.client.results import Received, ReceiveFailed, ResultPoller
from facepipe.local.emulator import DUMMY_CREDENTIALS, LocalAws
from facepipe.messages import ErrorInfo, FaceResult, Result
from facepipe.vision.frames import decode_image
from tests.conftest import SAMPLES, run_facepipe

BOX = [10.0, 12.0, 40.0, 44.0]


@pytest.fixture(scope="module")
def aws() -> Iterator[LocalAws]:
    with LocalAws(stack="facepipe-client-test") as local:
        yield local


@pytest.fixture
def queue(aws: LocalAws) -> Iterator[str]:
    url = aws.outputs["ResponseQueueUrl"]
    yield url
    aws.drain(url, wait_seconds=0)


def result(request_id: str, status: str = "ok", name: str = "alice") -> Result:
    faces = (
        [FaceResult(box=BOX, probability=0.999, name=name, distance=0.7, similarity=0.755)]
        if status == "ok"
        else []
    )
    return Result(request_id=request_id, filename=f"{request_id}.jpg", status=status, faces=faces)  # type: ignore[arg-type]


def post(aws: LocalAws, queue: str, *results: Result) -> None:
    sink = SqsResultSink(aws.sqs, queue)
    for r in results:
        sink.send_result(r)


def test_the_poller_takes_its_own_results_and_leaves_others(aws: LocalAws, queue: str) -> None:
    mine = ["me.a", "me.b", "me.c"]
    theirs = ["other.x", "other.y"]
    post(aws, queue, result("other.x"), result("me.a"), result("me.b", "no_face"))
    post(aws, queue, result("other.y", "error"), result("me.c"))
    arrived: list[str] = []

    report = ResultPoller(aws.sqs, queue).poll(
        mine, timeout=10, on_result=lambda r: arrived.append(r.result.request_id)
    )

    assert sorted(report.results) == mine and sorted(arrived) == mine
    assert report.missing == [] and report.duplicates == 0
    assert report.counts() == {"ok": 2, "no_face": 1, "error": 0}
    assert report.results["me.a"].result.faces[0].name == "alice"
    # the other client's results are still there for it, and only they are
    other = ResultPoller(aws.sqs, queue).poll(theirs, timeout=10)
    assert sorted(other.results) == theirs and other.missing == []
    assert aws.drain(queue, wait_seconds=0) == []  # both pollers deleted what they took


def test_duplicates_are_deleted_and_counted_once(aws: LocalAws, queue: str) -> None:
    post(aws, queue, result("dup.a"), result("dup.a"))
    # one result without the message attribute: matched by the body's request_id
    aws.sqs.send_message(QueueUrl=queue, MessageBody=result("dup.c").to_json())
    later = threading.Timer(1.0, post, (aws, queue, result("dup.b")))
    later.start()
    arrived: list[str] = []

    report = ResultPoller(aws.sqs, queue).poll(
        ["dup.a", "dup.b", "dup.c"],
        timeout=10,
        on_result=lambda r: arrived.append(r.result.request_id),
    )
    later.join()

    assert sorted(arrived) == ["dup.a", "dup.b", "dup.c"]  # dup.a reported once
    assert report.duplicates == 1 and report.missing == []
    assert aws.drain(queue, wait_seconds=0) == []


def test_timeout_reports_missing_ids_quickly_and_keeps_others(aws: LocalAws, queue: str) -> None:
    post(aws, queue, result("late.other"))
    start = time.monotonic()

    report = ResultPoller(aws.sqs, queue).poll(["late.a", "late.b"], timeout=1.5)

    assert time.monotonic() - start < 3.5
    assert report.missing == ["late.a", "late.b"] and report.results == {}
    assert report.released >= 1  # it saw the other result and gave it back…
    left = aws.drain(queue, wait_seconds=0)
    assert [json.loads(m["Body"])["request_id"] for m in left] == ["late.other"]  # …undeleted


def test_an_unparseable_result_of_ours_is_an_error_result(aws: LocalAws, queue: str) -> None:
    aws.sqs.send_message(
        QueueUrl=queue,
        MessageBody="{not json",
        MessageAttributes={"request_id": {"DataType": "String", "StringValue": "bad.a"}},
    )

    report = ResultPoller(aws.sqs, queue).poll(["bad.a"], timeout=5)

    assert report.results["bad.a"].result.status == "error"
    assert report.results["bad.a"].result.error is not None
    assert report.results["bad.a"].result.error.code == "invalid_result"


# --- a queue that fails now and then -------------------------------------------------------------
def flaky_receive(sqs: Any, failures: list[Exception]) -> list[dict[str, Any]]:
    """Make ``sqs.receive_message`` raise the ``failures`` in turn, then receive for real;
    returns the calls' arguments."""
    calls: list[dict[str, Any]] = []
    real = sqs.receive_message

    def receive(**kwargs: Any) -> Any:
        calls.append(kwargs)
        if failures:
            raise failures.pop(0)
        return real(**kwargs)

    sqs.receive_message = receive
    return calls


def test_a_receive_that_times_out_is_tried_again_and_the_result_arrives(
    aws: LocalAws, queue: str
) -> None:
    """Before: the ReadTimeoutError ended the poll (and a poller thread with it), so a result on
    the queue was counted lost."""
    post(aws, queue, result("flaky.a"))
    sqs = aws.client("sqs")
    timeout = ReadTimeoutError(endpoint_url=aws.endpoint_url)
    calls = flaky_receive(sqs, [timeout, EndpointConnectionError(endpoint_url=aws.endpoint_url)])

    report = ResultPoller(sqs, queue).poll(["flaky.a"], timeout=20)

    assert list(report.results) == ["flaky.a"] and report.missing == []
    assert len(calls) == 3


def test_no_long_poll_outlasts_the_clients_read_timeout(aws: LocalAws, queue: str) -> None:
    """A receive the client gave up on (read timeout 10 s in facepipe's clients; 20 s long polls
    before) could take a result, hidden then for the visibility timeout: counted lost."""
    sqs = boto3.session.Session().client(  # type: ignore[call-overload]
        "sqs",
        endpoint_url=aws.endpoint_url,
        region_name="us-east-1",
        config=Config(read_timeout=2, retries={"max_attempts": 1}),
        **DUMMY_CREDENTIALS,
    )
    calls = flaky_receive(sqs, [])
    later = threading.Timer(2.5, post, (aws, queue, result("late.result")))
    later.start()

    report = ResultPoller(sqs, queue).poll(["late.result"], timeout=12)
    later.join()

    assert list(report.results) == ["late.result"] and report.missing == []
    assert max(call["WaitTimeSeconds"] for call in calls) == 1  # half the read timeout


def test_a_queue_that_keeps_failing_is_an_error_not_a_hang(aws: LocalAws, queue: str) -> None:
    sqs = aws.client("sqs")
    flaky_receive(sqs, [EndpointConnectionError(endpoint_url=aws.endpoint_url)] * 10)
    waits: list[float] = []

    with pytest.raises(ReceiveFailed, match=r"cannot receive results from .* \(4 tries in a row\)"):
        ResultPoller(sqs, queue, sleep=waits.append).poll(["gone.a"], timeout=60)
    assert waits == [0.5, 1.0, 2.0]

    absent = queue.rsplit("/", 1)[0] + "/no-such-queue"  # not transient: at once
    with pytest.raises(ReceiveFailed, match=r"NonExistentQueue|does not exist"):
        ResultPoller(aws.client("sqs"), absent, sleep=waits.append).poll(["x.a"], timeout=60)
    assert len(waits) == 3


# --- annotation -------------------------------------------------------------------------------
def test_annotation_keeps_the_size_and_draws_inside_the_box(tmp_path: Path) -> None:
    data = (SAMPLES / "astronaut.jpg").read_bytes()
    original = decode_image(data, max_pixels=10**8)
    box = [160.0, 40.0, 300.0, 200.0]
    r = Result(
        request_id="ann.astronaut",
        status="ok",
        faces=[FaceResult(box=box, probability=0.99, name="eileen", similarity=0.81)],
    )

    drawn = draw_result(original, r)

    assert drawn.size == original.size
    before, after = np.asarray(original), np.asarray(drawn)
    x1, y1, x2, y2 = (int(v) for v in box)
    assert (before[y1 : y2 + 1, x1 : x2 + 1] != after[y1 : y2 + 1, x1 : x2 + 1]).any()
    assert (
        before[y1 + 60 : y2 - 60, x1 + 60 : x2 - 60] == after[y1 + 60 : y2 - 60, x1 + 60 : x2 - 60]
    ).all()
    assert (before[300:, :] == after[300:, :]).all()  # far from the box and its label: untouched
    assert (np.asarray(original) == before).all()  # the caller's image is not drawn on

    path = write_annotated(tmp_path, data, r)
    assert path == tmp_path / "ann.astronaut.jpg"
    with Image.open(path) as saved:
        assert saved.size == original.size and saved.format == "JPEG"


def test_labels_and_boxes_stay_whole_inside_the_image() -> None:
    """A face at the right edge (its box running off the image, as MTCNN's boxes may) gets its
    whole label, moved left, and its box clipped; a label never leaves the image."""
    assert label_origin((200.0, 30.0, 239.0, 110.0), (100.0, 20.0), (240, 120)) == (140.0, 10.0)
    assert label_origin((0.0, 0.0, 50.0, 50.0), (60.0, 20.0), (240, 120)) == (0.0, 0.0)
    assert label_origin((5.0, 110.0, 9.0, 119.0), (60.0, 20.0), (240, 120)) == (5.0, 90.0)
    assert label_origin((5.0, 10.0, 9.0, 119.0), (300.0, 20.0), (240, 120)) == (0.0, 10.0)
    white = Image.new("RGB", (240, 120), "white")
    face = FaceResult(box=[200.0, 40.0, 300.0, 110.0], probability=0.99, name="unknown")
    face.similarity = 0.91
    drawn = np.asarray(draw_result(white, Result(request_id="edge", status="ok", faces=[face])))
    columns = np.nonzero((drawn[:38] == UNKNOWN).all(axis=2).any(axis=0))[0]  # the label's rows
    assert columns.max() == 239 and columns.min() < 200  # whole: moved left from the box's x


def test_a_frame_without_faces_is_marked_with_its_status() -> None:
    white = Image.new("RGB", (320, 200), "white")
    for result in (
        Result(request_id="nf", status="no_face"),
        Result(request_id="er", status="error", error=ErrorInfo(code="bad_image", message="x")),
    ):
        drawn = np.asarray(draw_result(white, result))
        assert (drawn[:20, :60] != 255).any()  # the status, top left
        assert (drawn[60:, 100:] == 255).all()  # nothing else


# --- the commands end to end -----------------------------------------------------------------
class FakeStack:
    """A stand-in Function URL on 127.0.0.1: accepts frames (400 for ``bad*`` files) and posts
    an ``ok`` result with one face for each to the response queue, as the real stack would."""

    def __init__(self, aws: LocalAws, queue: str) -> None:
        self.seen: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                frames = body.get("frames", [body])
                fake.seen.extend(f["request_id"] for f in frames)
                if any(f["filename"].startswith("bad") for f in frames):
                    status, answer = 400, {"error": "invalid_image", "message": "not an image"}
                else:
                    for f in frames:
                        assert base64.b64decode(f["content"])
                        post(aws, queue, result(f["request_id"]))
                    answer = {
                        "frames": [
                            {**{k: f[k] for k in ("request_id", "filename")}, "status": "queued"}
                            | {"faces": 1}
                            for f in frames
                        ]
                    }
                    status = 202
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def stack(aws: LocalAws, queue: str) -> Iterator[tuple[FakeStack, str]]:
    fake = FakeStack(aws, queue)
    info = json.dumps(
        {
            "function_url": fake.url,
            "endpoint_url": aws.endpoint_url,
            "request_queue_url": aws.outputs["RequestQueueUrl"],
            "response_queue_url": queue,
            "bucket": aws.outputs["BucketName"],
        }
    )
    yield fake, info
    fake.close()


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "astronaut.jpg").write_bytes((SAMPLES / "astronaut.jpg").read_bytes())
    (folder / "rocket.jpg").write_bytes((SAMPLES / "rocket.jpg").read_bytes())
    writer = cv2.VideoWriter(
        str(folder / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48)
    )
    for n in range(30):
        writer.write(np.full((48, 64, 3), n * 8, np.uint8))
    writer.release()
    return folder


def facepipe(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return run_facepipe(*args, stdin=stdin, timeout=120)


def test_get_sends_polls_orders_and_annotates(
    stack: tuple[FakeStack, str], inputs: Path, tmp_path: Path, aws: LocalAws, queue: str
) -> None:
    fake, info = stack
    post(aws, queue, result("someone-else.1"))  # another client's result on the same queue
    out = tmp_path / "annotated"

    proc = facepipe(
        "get",
        str(inputs / "rocket.jpg"),
        str(inputs / "astronaut.jpg"),
        str(inputs / "clip.avi"),
        "--video-every",
        "10",
        "--run-id",
        "t1",
        "--local-info",
        info,
        "--ordered",
        "--annotate",
        str(out),
        "--concurrency",
        "3",
        "--poll-timeout",
        "20",
    )

    assert proc.returncode == 0, proc.stderr
    ids = ["t1.rocket", "t1.astronaut", "t1.clip.f000000", "t1.clip.f000010", "t1.clip.f000020"]
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [line["request_id"] for line in lines] == ids  # send order, with --ordered
    assert all(line["status"] == "ok" and line["faces"][0]["name"] == "alice" for line in lines)
    assert sorted(fake.seen) == sorted(ids)
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{i}.jpg" for i in ids)
    with Image.open(out / "t1.clip.f000010.jpg") as frame:
        assert frame.size == (64, 48)
    assert "accepted 5" in proc.stderr and "results 5 (ok 5" in proc.stderr
    assert "missing 0" in proc.stderr
    left = aws.drain(queue, wait_seconds=0)
    assert [m["MessageAttributes"]["request_id"]["StringValue"] for m in left] == ["someone-else.1"]


def test_send_then_poll_and_rejections_fail_the_run(
    stack: tuple[FakeStack, str], inputs: Path, tmp_path: Path, aws: LocalAws
) -> None:
    _, info = stack
    (inputs / "bad.jpg").write_bytes(b"not a jpeg")

    sent = facepipe(
        "send", str(inputs / "rocket.jpg"), str(inputs / "bad.jpg"), "--run-id", "t2",
        "--local-info", info,
    )  # fmt: skip

    assert sent.returncode == 1  # one request rejected
    assert "rejected t2.bad (bad.jpg): HTTP 400 invalid_image: not an image" in sent.stderr
    [line] = [json.loads(x) for x in sent.stdout.splitlines()]
    assert {k: line[k] for k in ("request_id", "filename", "status", "faces")} == {
        "request_id": "t2.rocket",
        "filename": "rocket.jpg",
        "status": "queued",
        "faces": 1,
    }

    polled = facepipe(
        "poll", "--ids", "-", "--local-info", info, "--poll-timeout", "3",
        "--annotate", str(tmp_path / "ann"),
        stdin=sent.stdout + "t2.never-sent\n",
    )  # fmt: skip

    assert polled.returncode == 1  # t2.never-sent has no result
    assert [json.loads(x)["request_id"] for x in polled.stdout.splitlines()] == ["t2.rocket"]
    assert "no result within 3 s for: t2.never-sent" in polled.stderr
    assert (tmp_path / "ann" / "t2.rocket.jpg").is_file()  # re-read from the send line's source


def test_received_lines_are_the_posted_bodies() -> None:
    body = result("x.1").to_json()
    from facepipe.client.output import ResultWriter

    written: list[str] = []
    writer = ResultWriter(written.append, order=["x.0", "x.1"], ordered=True)
    writer.add(Received(result("x.1"), body))
    assert written == []  # held back until x.0 comes or the poll ends
    writer.finish()
    assert written == [body]

"""The sender against a tiny HTTP server on 127.0.0.1: retries, errors, concurrency, frames too
large for a request body, signing; and where the client finds its endpoints (local info line, a
deployed stack's Outputs)."""

from __future__ import annotations

import base64
import io
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest
import requests
from botocore.credentials import Credentials
from botocore.stub import Stubber
from PIL import Image

from facepipe.client.http import (
    EVENT_HEADROOM,
    NoStack,
    RetryPolicy,
    Sender,
    is_loopback,
    parse_retry_after,
    region_from_url,
    should_sign,
)
from facepipe.client.sources import Frame
from facepipe.client.stack import read_local_info, resolve_endpoints, stack_outputs
from facepipe.config import Settings
from facepipe.errors import ConfigError

FAST = RetryPolicy(retries=3, base_delay=0.1, max_delay=1.0)
Reply = tuple[int, dict[str, str], Any]  # status, headers, JSON body


@dataclass
class Seen:
    at: float
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FakeFunctionUrl:
    """A Function URL stand-in: ``reply(n, body)`` answers the n-th request (0-based)."""

    reply: Callable[[int, dict[str, Any]], Reply]
    delay: float = 0.0
    seen: list[Seen] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""


def accepted(body: dict[str, Any], status: str = "queued") -> Reply:
    frames = body.get("frames", [body])
    return (
        202,
        {},
        {
            "frames": [
                {
                    "request_id": f["request_id"],
                    "filename": f["filename"],
                    "status": status,
                    "faces": 1,
                }
                for f in frames
            ]
        },
    )


@pytest.fixture
def server() -> Iterator[FakeFunctionUrl]:
    fake = FakeFunctionUrl(reply=lambda n, body: accepted(body))

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with fake.lock:
                number = len(fake.seen)
                fake.seen.append(Seen(time.monotonic(), dict(self.headers.items()), body))
                fake.in_flight += 1
                fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
            try:
                time.sleep(fake.delay)
                status, headers, answer = fake.reply(number, body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            finally:
                with fake.lock:
                    fake.in_flight -= 1

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{httpd.server_address[1]}/"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield fake
    httpd.shutdown()
    httpd.server_close()


def frames(n: int) -> list[Frame]:
    return [
        Frame(f"t.f{i}", f"f{i}.jpg", b"\xff\xd8" + bytes([i]), f"/x/f{i}.jpg") for i in range(n)
    ]


def test_503_twice_then_202_is_retried_with_backoff_and_accepted(server: FakeFunctionUrl) -> None:
    server.reply = lambda n, body: (503, {}, {"message": "busy"}) if n < 2 else accepted(body)

    with Sender(server.url, retry=FAST) as sender:
        [outcome] = list(sender.send_all(frames(1)))

    assert outcome.status == "queued" and outcome.faces == 1 and outcome.attempts == 3
    assert sender.summary.retried == 2 and sender.summary.accepted == 1
    first_wait = server.seen[1].at - server.seen[0].at
    second_wait = server.seen[2].at - server.seen[1].at
    # equal jitter: retry n waits between half and all of base·2ⁿ
    assert 0.05 <= first_wait < 0.5
    assert 0.1 <= second_wait < 0.6
    body = server.seen[0].body
    assert body == {
        "request_id": "t.f0",
        "filename": "f0.jpg",
        "content": base64.b64encode(b"\xff\xd8\x00").decode(),
    }


def test_429_waits_as_long_as_retry_after_says(server: FakeFunctionUrl) -> None:
    server.reply = lambda n, body: (429, {"Retry-After": "1"}, {}) if n == 0 else accepted(body)

    with Sender(server.url, retry=FAST) as sender:
        [outcome] = list(sender.send_all(frames(1)))

    assert outcome.accepted and outcome.attempts == 2
    assert server.seen[1].at - server.seen[0].at >= 0.95  # not FAST's 0.05-0.1 s


def test_400_is_final_and_reported_with_the_servers_error(server: FakeFunctionUrl) -> None:
    server.reply = lambda n, body: (
        400,
        {},
        {"error": "invalid_image", "message": "the bytes are not a JPEG, PNG or WebP image"},
    )

    with Sender(server.url, retry=FAST) as sender:
        [outcome] = list(sender.send_all(frames(1)))

    assert len(server.seen) == 1  # not retried
    assert outcome.status == "rejected" and outcome.http_status == 400
    assert outcome.error == "invalid_image"
    assert outcome.reason() == "HTTP 400 invalid_image: the bytes are not a JPEG, PNG or WebP image"
    assert sender.summary.rejected == 1 and sender.summary.retried == 0
    assert "rejected 1 (invalid_image ×1)" in sender.summary.line()


def test_5xx_until_retries_run_out_is_rejected(server: FakeFunctionUrl) -> None:
    server.reply = lambda n, body: (502, {}, {"message": "bad gateway"})
    policy = RetryPolicy(retries=2, base_delay=0.01)

    with Sender(server.url, retry=policy) as sender:
        [outcome] = list(sender.send_all(frames(1)))

    assert len(server.seen) == 3
    assert outcome.status == "rejected" and outcome.http_status == 502 and outcome.attempts == 3


def closed_port() -> int:
    """A loopback port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def hang_up() -> Iterator[str]:
    """A loopback URL that accepts connections and closes them at once (a stack restarting)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/"
    done.set()
    thread.join()
    listener.close()


def test_connection_errors_are_retried_then_reported(hang_up: str) -> None:
    waits: list[float] = []
    policy = RetryPolicy(retries=2, base_delay=0.01)

    with Sender(hang_up, retry=policy, sleep=waits.append) as sender:
        [outcome] = list(sender.send_all(frames(1)))

    assert outcome.status == "rejected" and outcome.error == "connection_error"
    assert outcome.attempts == 3 and len(waits) == 2


def test_a_refused_loopback_url_is_no_stack_at_once() -> None:
    waits: list[float] = []
    for host in ("127.0.0.1", "localhost"):
        url = f"http://{host}:{closed_port()}/"
        no_stack = pytest.raises(NoStack, match=f"no stack at {url}: is `facepipe local up`")
        with Sender(url, retry=FAST, sleep=waits.append) as sender, no_stack:
            list(sender.send_all(frames(3)))
    assert waits == []  # not retried


def test_a_refused_remote_url_is_still_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except ConnectionRefusedError as exc:
            raise requests.ConnectionError("Failed to establish a new connection") from exc

    waits: list[float] = []
    url = "https://abc.lambda-url.eu-west-1.on.aws/"
    with Sender(url, retry=FAST, sign="never", sleep=waits.append) as sender:
        monkeypatch.setattr(sender.session, "send", refuse)
        [outcome] = list(sender.send_all(frames(1)))

    assert outcome.error == "connection_error" and outcome.attempts == 4 and len(waits) == 3
    assert not is_loopback(url)
    assert is_loopback("http://[::1]:9/") and is_loopback("http://127.1.2.3/")


def test_send_and_poll_without_a_local_stack_stop_at_once_with_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    """Before: 14.7 s of retries, then a raw ``HTTPConnectionPool ... Connection refused``
    (``send``), or some 20 s and a botocore traceback (``poll``)."""
    from facepipe.cli.main import main

    port = closed_port()
    image = tmp_path / "a.jpg"
    image.write_bytes(b"\xff\xd8 not looked at")
    info = json.dumps(
        {
            "function_url": f"http://127.0.0.1:{port}/",
            "endpoint_url": f"http://127.0.0.1:{port}",
            "response_queue_url": f"http://127.0.0.1:{port}/123456789012/q-resp",
        }
    )
    ids = tmp_path / "ids.txt"
    ids.write_text("t.a\n")
    for argv, url in (
        (["send", str(image)], f"http://127.0.0.1:{port}/"),
        # get picks its poller (the URL's, with the queue's behind it) before it sends
        (["get", str(image)], f"http://127.0.0.1:{port}"),
        (["poll", "--ids", str(ids)], f"http://127.0.0.1:{port}"),
    ):
        start = time.monotonic()
        code = main([*argv, "--local-info", info, "--quiet"])
        elapsed = time.monotonic() - start

        err = capsys.readouterr().err
        assert code == 2, err
        assert f"facepipe: error: no stack at {url}: is `facepipe local up` running?" in err
        assert elapsed < 5.0, argv


def test_no_more_requests_in_flight_than_concurrency(server: FakeFunctionUrl) -> None:
    server.delay = 0.15

    with Sender(server.url, concurrency=3) as sender:
        outcomes = list(sender.send_all(frames(12)))

    assert sorted(o.request_id for o in outcomes) == sorted(f"t.f{i}" for i in range(12))
    assert server.max_in_flight == 3


def test_frames_per_request_packs_frames(server: FakeFunctionUrl) -> None:
    server.reply = lambda n, body: accepted(body, status="no_face")

    with Sender(server.url, frames_per_request=2) as sender:
        outcomes = list(sender.send_all(frames(5)))

    assert [len(s.body["frames"]) for s in server.seen if "frames" in s.body] == [2, 2]
    assert sum("frames" not in s.body for s in server.seen) == 1  # the last, single frame
    assert {o.status for o in outcomes} == {"no_face"}
    assert sender.summary.requests == 3 and sender.summary.no_face == 5


def test_results_wanted_by_id_say_so_in_every_frame_and_the_default_says_nothing(
    server: FakeFunctionUrl,
) -> None:
    """``"reply": "by_id"`` goes with each frame, single or packed; the default (the queue) is
    not sent at all, so a stack that knows no ``reply`` takes the request as before."""
    with Sender(server.url, frames_per_request=2, reply="by_id") as sender:
        list(sender.send_all(frames(3)))
    with Sender(server.url, fields={"album": {"name": "a", "mode": "index"}}) as sender:
        list(sender.send_all(frames(1)))

    by_id, default = server.seen[:-1], server.seen[-1]
    sent = [f for s in by_id for f in s.body.get("frames", [s.body])]
    assert [f["reply"] for f in sent] == ["by_id"] * 3
    assert "reply" not in default.body and default.body["album"]["name"] == "a"


def test_a_202_that_does_not_list_a_frame_rejects_it(server: FakeFunctionUrl) -> None:
    server.reply = lambda n, body: (202, {}, {"frames": []})

    with Sender(server.url) as sender:
        [outcome] = list(sender.send_all(frames(1)))

    assert outcome.status == "rejected" and outcome.error == "invalid_response"


def test_retry_after_forms() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


# --- a frame too large for one request body ---------------------------------------------------
LIMIT = EVENT_HEADROOM + 200_000  # about 150 kB of image per request


def encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()


def noise(width: int, height: int) -> Image.Image:
    """Pixels no codec can squeeze: 720 kB as PNG, 216 kB as JPEG at 600 x 400."""
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def smooth(width: int, height: int) -> Image.Image:
    """A gradient with a little grain: 378 kB as PNG, 31 kB as JPEG at 600 x 400."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 255 // width, y * 255 // height, (x + y) * 255 // (width + height)], -1)
    grain = rng.normal(0, 3, pixels.shape)
    return Image.fromarray(np.clip(pixels + grain, 0, 255).astype(np.uint8))


def sent_image(item: dict[str, object]) -> Image.Image:
    data = base64.b64decode(str(item["content"]))
    image = Image.open(io.BytesIO(data))
    assert image.format == "JPEG"
    return image


def test_a_frame_over_the_body_limit_is_sent_downscaled_with_its_original_size(
    server: FakeFunctionUrl, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = encoded(noise(600, 400), "PNG")
    small = b"\xff\xd8 small enough"
    frames = [Frame("t.big", "big.png", big, "/x/big.png"), Frame("t.small", "s.jpg", small, "s")]

    notes: list[str] = []
    monkeypatch.setattr(logging.getLogger("facepipe.client.http"), "warning", notes.append)
    with Sender(server.url, max_body_bytes=LIMIT) as sender:
        outcomes = {o.request_id: o for o in sender.send_all(frames)}

    bodies = {seen.body["request_id"]: seen for seen in server.seen}
    item = bodies["t.big"].body
    assert item["original_size"] == [600, 400]
    width, height = sent_image(item).size
    assert 300 <= width < 600 and abs(width / height - 1.5) < 0.01  # aspect kept
    assert int(bodies["t.big"].headers["Content-Length"]) <= LIMIT - EVENT_HEADROOM
    assert base64.b64decode(bodies["t.small"].body["content"]) == small  # as it was
    assert "original_size" not in bodies["t.small"].body
    assert outcomes["t.big"].status == "queued"
    assert outcomes["t.big"].frame.data == big  # the outcome is of the frame as read
    [note] = notes  # once, for the frame that was downscaled
    assert note.startswith("t.big (big.png): 721409 bytes, more than the")
    assert note.endswith("downscaled from 600x400 (boxes in the original's pixels)")


def test_a_frame_that_fits_as_a_jpeg_is_sent_at_full_size(server: FakeFunctionUrl) -> None:
    png = encoded(smooth(600, 400), "PNG")
    assert len(png) > LIMIT

    with Sender(server.url, max_body_bytes=LIMIT) as sender:
        [outcome] = list(sender.send_all([Frame("t.png", "a.png", png, "a.png")]))

    [seen] = server.seen
    assert outcome.status == "queued"
    assert sent_image(seen.body).size == (600, 400)
    assert "original_size" not in seen.body  # same size: nothing to map back


def test_the_original_size_is_that_of_the_upright_frame(server: FakeFunctionUrl) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° to view: detection sees a 400 x 600 frame
    rotated = encoded(noise(600, 400), "JPEG", quality=100, exif=exif)

    with Sender(server.url, max_body_bytes=LIMIT) as sender:
        [outcome] = list(sender.send_all([Frame("t.rot", "r.jpg", rotated, "r.jpg")]))

    [seen] = server.seen
    assert outcome.status == "queued" and seen.body["original_size"] == [400, 600]
    width, height = sent_image(seen.body).size
    assert width < height


def test_a_frame_that_cannot_fit_is_rejected_before_sending(server: FakeFunctionUrl) -> None:
    garbage = b"\xff\xd8" + bytes(range(256)) * 1000
    fine = Frame("t.fine", "f.jpg", b"\xff\xd8 fine", "f.jpg")
    frames = [Frame("t.garbage", "g.jpg", garbage, "g.jpg"), fine]

    with Sender(server.url, max_body_bytes=LIMIT, frames_per_request=2) as sender:
        first, second = sender.post(frames)

    assert (first.request_id, first.status, first.error) == (
        "t.garbage",
        "rejected",
        "frame_too_large",
    )
    assert "cannot be decoded" in first.message and "`facepipe upload FILE`" in first.message
    assert (second.request_id, second.status) == ("t.fine", "queued")
    assert [seen.body["request_id"] for seen in server.seen] == ["t.fine"]  # sent alone

    tiny = EVENT_HEADROOM + 6_000  # even a quarter of the sides is more than this holds
    noisy = Frame("t.noisy", "n.png", encoded(noise(600, 400), "PNG"), "n.png")
    with Sender(server.url, max_body_bytes=tiny) as sender:
        [outcome] = sender.post([noisy])

    assert outcome.error == "frame_too_large" and "downscaled to 150x100" in outcome.message
    assert "a quarter of its sides" in outcome.message and "`facepipe upload" in outcome.message
    assert len(server.seen) == 1


# --- signing (prepared requests only: no network) ----------------------------------------------
DUMMY = Credentials("AKIDTESTING", "secret")


def test_sign_always_adds_a_sigv4_signature_for_lambda() -> None:
    sender = Sender("http://127.0.0.1:9/", sign="always", region="us-east-1", credentials=DUMMY)

    request = sender.prepare(frames(1))

    auth = request.headers["Authorization"]
    assert auth.startswith("AWS4-HMAC-SHA256 Credential=AKIDTESTING/")
    assert auth.split(",")[0].endswith("/us-east-1/lambda/aws4_request")
    assert "SignedHeaders=content-type;host;x-amz-date" in auth
    assert request.headers["X-Amz-Date"].endswith("Z")
    assert request.body == sender.body(frames(1))


def test_sign_auto_signs_aws_function_urls_only() -> None:
    local = Sender("http://127.0.0.1:9/", sign="auto", credentials=DUMMY)
    aws = Sender("https://abc.lambda-url.eu-west-1.on.aws/", sign="auto", credentials=DUMMY)

    assert "Authorization" not in local.prepare(frames(1)).headers
    assert "X-Amz-Date" not in local.prepare(frames(1)).headers
    auth = aws.prepare(frames(1)).headers["Authorization"]
    assert "/eu-west-1/lambda/aws4_request" in auth  # region read from the host
    assert should_sign("https://abc.lambda-url.eu-west-1.on.aws/", "never") is False
    assert region_from_url("https://abc.lambda-url.ap-south-2.on.aws/") == "ap-south-2"


def test_signing_uses_the_default_credential_chain() -> None:
    """conftest puts AWS_ACCESS_KEY_ID=testing in the environment."""
    sender = Sender("https://abc.lambda-url.eu-west-1.on.aws/")

    assert "Credential=testing/" in sender.prepare(frames(1)).headers["Authorization"]


# --- endpoints ------------------------------------------------------------------------------
LOCAL_LINE = {
    "function_url": "http://127.0.0.1:9000/",
    "endpoint_url": "http://127.0.0.1:5000",
    "request_queue_url": "http://127.0.0.1:5000/123456789012/q-req",
    "response_queue_url": "http://127.0.0.1:5000/123456789012/q-resp",
    "bucket": "facepipe-local-data",
}


def test_local_info_inline_or_as_the_last_json_line_of_a_file(tmp_path: Any) -> None:
    path = tmp_path / "local.txt"
    path.write_text("starting the local stack...\n" + json.dumps(LOCAL_LINE) + "\n")

    for value in (json.dumps(LOCAL_LINE), str(path)):
        endpoints = resolve_endpoints(Settings.from_env({}), local_info=value)
        assert endpoints.function_url == "http://127.0.0.1:9000/"
        assert endpoints.response_queue_url.endswith("/q-resp")
        assert endpoints.endpoint_url == "http://127.0.0.1:5000"
        assert endpoints.region == "us-east-1"
    path.write_text("starting the local stack...\n")
    with pytest.raises(ConfigError, match="no JSON line"):
        read_local_info(str(path))
    with pytest.raises(ConfigError, match="No such file"):
        read_local_info(str(tmp_path / "absent.txt"))


def test_explicit_settings_win_over_local_info() -> None:
    settings = Settings.from_env({}, function_url="http://127.0.0.1:7/")

    endpoints = resolve_endpoints(settings, local_info=json.dumps(LOCAL_LINE))

    assert endpoints.function_url == "http://127.0.0.1:7/"
    assert endpoints.response_queue_url.endswith("/q-resp")


def _stubbed_cloudformation(outputs: dict[str, str]) -> tuple[Any, Stubber]:
    import boto3

    cfn = boto3.session.Session().client("cloudformation", region_name="eu-west-1")
    stubber = Stubber(cfn)
    stubber.add_response(
        "describe_stacks",
        {
            "Stacks": [
                {
                    "StackName": "facepipe",
                    "CreationTime": "2026-01-01T00:00:00Z",
                    "StackStatus": "CREATE_COMPLETE",
                    "Outputs": [{"OutputKey": k, "OutputValue": v} for k, v in outputs.items()],
                }
            ]
        },
        {"StackName": "facepipe"},
    )
    return cfn, stubber


def test_stack_name_reads_the_deployed_stacks_outputs() -> None:
    outputs = {
        "FunctionUrl": "https://abc.lambda-url.eu-west-1.on.aws/",
        "ResponseQueueUrl": "https://sqs.eu-west-1.amazonaws.com/1/facepipe-ResponseQueue",
    }
    cfn, stubber = _stubbed_cloudformation(outputs)

    with stubber:
        endpoints = resolve_endpoints(
            Settings.from_env({}, stack_name="facepipe"), cloudformation=cfn
        )

    stubber.assert_no_pending_responses()
    assert endpoints.function_url == outputs["FunctionUrl"]
    assert endpoints.response_queue_url == outputs["ResponseQueueUrl"]
    assert endpoints.endpoint_url == ""


def test_a_missing_stack_is_a_config_error() -> None:
    import boto3

    cfn = boto3.session.Session().client("cloudformation", region_name="eu-west-1")
    stubber = Stubber(cfn)
    stubber.add_client_error(
        "describe_stacks", "ValidationError", "Stack with id nope does not exist"
    )
    with stubber, pytest.raises(ConfigError, match="does not exist"):
        stack_outputs("nope", Settings.from_env({}), cfn)


def test_missing_endpoints_name_the_flags() -> None:
    with pytest.raises(ConfigError, match="--function-url"):
        resolve_endpoints(Settings.from_env({})).require("function_url")

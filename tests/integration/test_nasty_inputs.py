"""A corpus of nasty files and bodies, POSTed to the real detection handler (Function URL
payload 2.0 events, the template's queues and bucket in moto).

Every one must get a clear 4xx JSON answer with its own error code and a message that says what
is wrong, queue nothing, and cost next to nothing (a decompression bomb is refused from its
header). The few that are accepted (whitespace in base64, a data: URL, a 1x1 image) are
accepted on purpose; README "Limits" lists what is accepted and what is not.
"""

from __future__ import annotations

import base64
import contextlib
import gc
import io
import json
import logging
import resource
import struct
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from PIL import Image

from facepipe.errors import InvalidImage
from facepipe.local.emulator import LocalAws
from facepipe.local.events import function_url_event
from facepipe.vision.frames import decode_image
from tests.integration.test_handlers import FakeContext, load_handler

ERROR_CODES = {
    "invalid_request",
    "invalid_image",
    "payload_too_large",
    "too_many_frames",
    "request_too_large",
    "duplicate_request_id",  # a request_id sent before with another frame
    "method_not_allowed",
}


@pytest.fixture(scope="module")
def aws() -> Iterator[LocalAws]:
    with LocalAws(stack="facepipe-nasty") as local:
        yield local


@pytest.fixture(scope="module")
def detection(aws: LocalAws) -> ModuleType:
    return load_handler(aws, "DetectionFunction")


@pytest.fixture(autouse=True)
def _empty_queues(aws: LocalAws) -> None:
    for url in aws.queue_urls().values():
        aws.drain(url, wait_seconds=0)


# --- the corpus -------------------------------------------------------------------------------
def encode(image: Image.Image, fmt: str, **kw: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def png_chunk(kind: bytes, body: bytes) -> bytes:
    crc = struct.pack(">I", zlib.crc32(kind + body))
    return struct.pack(">I", len(body)) + kind + body + crc


def png_header_only(width: int, height: int) -> bytes:
    """A 60-byte PNG whose header claims width x height RGB pixels (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + png_chunk(b"IEND", b"")
    )


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small real JPEG whose SOF0 header is patched to claim width x height."""
    data = bytearray(encode(noise(16, 16), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def animated(fmt: str) -> bytes:
    frames = [noise(32, 32, seed) for seed in range(3)]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


def multipage_tiff() -> bytes:
    pages = [noise(32, 32, seed) for seed in range(2)]
    return encode(pages[0], "TIFF", save_all=True, append_images=pages[1:])


def corrupt_png() -> bytes:
    """A valid PNG with its pixel data (IDAT) overwritten by garbage."""
    data = bytearray(encode(noise(64, 64), "PNG"))
    idat = data.index(b"IDAT")
    data[idat + 20 : idat + 120] = b"\x00" * 100
    return bytes(data)


SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><circle r="9"/></svg>'
JPEG = encode(noise(256, 256), "JPEG")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def with_plus_and_slash() -> bytes:
    """Image bytes whose standard base64 holds both + and / (so the URL-safe one differs)."""
    for seed in range(100):
        data = encode(noise(8, 8, seed), "PNG")
        text = b64(data)
        if "+" in text and "/" in text and len(data) % 3:
            return data
    raise AssertionError("no such image")  # pragma: no cover


SMALL = with_plus_and_slash()  # an 8x8 PNG: no face fits, so it is accepted as no_face

# (name, content bytes or a ready base64 string, status, code, words the message must hold)
FILES: list[tuple[str, bytes | str, int, str, str]] = [
    ("truncated-jpeg", JPEG[: len(JPEG) // 2], 400, "invalid_image", "truncated"),
    ("jpeg-header-only", JPEG[:200], 400, "invalid_image", "is the file complete"),
    ("zero-byte", b"", 400, "invalid_request", "content"),
    ("whitespace-only", "\n  \n", 400, "invalid_image", "empty (0 bytes)"),
    ("png-100000x100000", png_header_only(100_000, 100_000), 413, "payload_too_large", "pixels"),
    ("png-over-max-pixels", png_header_only(8_000, 6_000), 413, "payload_too_large", "48000000"),
    ("jpeg-65000x65000", jpeg_claiming(65_000, 65_000), 413, "payload_too_large", "pixels"),
    ("png-0x0", png_header_only(0, 0), 400, "invalid_image", "accepted format"),
    ("png-corrupt-pixels", corrupt_png(), 400, "invalid_image", "could not be decoded"),
    ("animated-gif", animated("GIF"), 400, "invalid_image", "JPEG, PNG, WebP"),
    ("animated-png", animated("PNG"), 400, "invalid_image", "animated"),
    ("animated-webp", animated("WEBP"), 400, "invalid_image", "animated"),
    ("multi-page-tiff", multipage_tiff(), 400, "invalid_image", "accepted format"),
    ("bmp", encode(noise(16, 16), "BMP"), 400, "invalid_image", "accepted format"),
    ("svg", SVG, 400, "invalid_image", "accepted format"),
    ("text-named-jpg", b"this is not a photo, whatever the name says\n", 400, "invalid_image", ""),
    ("pdf", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj <<>> endobj\n", 400, "invalid_image", ""),
    ("base64-url-safe", b64(SMALL).replace("+", "-").replace("/", "_"), 400, "", "URL-safe"),
    ("base64-no-padding", b64(SMALL).rstrip("="), 400, "invalid_request", "multiple of 4"),
    ("base64-cut-short", b64(JPEG)[:1001], 400, "invalid_request", "cut short"),
    ("base64-padding-inside", "aGk=" + b64(SMALL), 400, "invalid_request", "padding"),
    ("base64-too-much-padding", b64(SMALL) + "===", 400, "invalid_request", "padding"),
    ("base64-stray-character", b64(SMALL)[:8] + "*" + b64(SMALL)[9:], 400, "", "alphabet"),
    ("base64-mixed-alphabets", "ab-+" + b64(SMALL), 400, "invalid_request", "alphabet"),
    ("data-url-not-base64", "data:image/png," + b64(SMALL), 400, "invalid_request", ";base64"),
]


def post(detection: ModuleType, body: str | bytes, **kw: Any) -> tuple[int, dict[str, Any]]:
    response = detection.handler(function_url_event(body, **kw), FakeContext())
    assert response["headers"]["content-type"] == "application/json"
    return response["statusCode"], json.loads(response["body"])


def assert_refused(aws: LocalAws, status: int, body: dict[str, Any], want: int, code: str) -> None:
    assert status == want, body
    assert set(body) == {"error", "message"}
    assert body["error"] in ERROR_CODES
    if code:
        assert body["error"] == code, body
    assert isinstance(body["message"], str)
    assert len(body["message"]) > 20
    assert "Traceback" not in body["message"]
    for url in aws.queue_urls().values():
        assert aws.drain(url, wait_seconds=0) == []  # nothing queued, no result posted


@pytest.mark.parametrize(
    ("content", "status", "code", "words"),
    [pytest.param(content, *rest, id=name) for name, content, *rest in FILES],
)
def test_nasty_file_gets_a_clear_4xx(
    aws: LocalAws,
    detection: ModuleType,
    content: bytes | str,
    status: int,
    code: str,
    words: str,
) -> None:
    text = content if isinstance(content, str) else b64(content)
    got_status, body = post(
        detection, json.dumps({"request_id": "nasty", "filename": "x.jpg", "content": text})
    )
    assert_refused(aws, got_status, body, status, code)
    assert words in body["message"]
    assert body["message"].startswith("content (nasty): ") or code == "invalid_request"


def test_decompression_bomb_is_refused_from_its_header_in_milliseconds(
    aws: LocalAws, detection: ModuleType
) -> None:
    """100000 x 100000 RGB would be 30 GB decoded: refused before a pixel is allocated."""
    body = json.dumps({"content": b64(png_header_only(100_000, 100_000))})
    post(detection, body)  # warm up (first-call imports and allocations)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    peaks = []
    for _ in range(3):
        # tracemalloc counts every thread's allocations and whatever the finalizers of earlier
        # tests' garbage allocate when a collection happens to run inside the window. Collect
        # first, and keep the smallest of three refusals (decoding the pixels would be 30 GB
        # every time). And the function's log line: Powertools keeps the stream that was
        # sys.stdout when its logger was made, an earlier test's capture buffer by now, whose
        # growth past 10 MB reallocates all of it inside the window (full runs saw 10 MB peaks).
        gc.collect()
        with _fresh_log_streams():
            tracemalloc.start()
            start = time.perf_counter()
            try:
                status, answer = post(detection, body)
                elapsed = time.perf_counter() - start
                peaks.append(tracemalloc.get_traced_memory()[1])
            finally:
                tracemalloc.stop()
        assert (status, answer["error"]) == (413, "payload_too_large")
        assert elapsed < 0.5  # it takes about a millisecond; the margin is for a loaded CI machine
    rss_growth_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert min(peaks) < 5 * 2**20, peaks  # Python-side: the body and its decoding, no pixels
    assert rss_growth_mib < 100  # native allocations (Pillow's) too: nothing like 30 GB


@contextlib.contextmanager
def _fresh_log_streams() -> Iterator[None]:
    """Every logging stream handler writes to a new, empty buffer meanwhile."""
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    handlers = [
        h
        for log in loggers
        for h in getattr(log, "handlers", [])
        if isinstance(h, logging.StreamHandler)
    ]
    kept = [h.setStream(io.StringIO()) for h in handlers]
    try:
        yield
    finally:
        for handler, stream in zip(handlers, kept, strict=True):
            if stream is not None:
                handler.setStream(stream)


@pytest.mark.parametrize(
    ("content", "label"),
    [
        pytest.param(b64(SMALL), "standard", id="standard"),
        pytest.param("\n".join(b64(SMALL)[i : i + 8] for i in range(0, 999, 8)), "", id="wrapped"),
        pytest.param(" " + b64(SMALL) + "\r\n", "", id="spaces-and-crlf"),
        pytest.param("data:image/png;base64," + b64(SMALL), "", id="data-url"),
        pytest.param(b64(encode(noise(1, 1), "PNG")), "", id="1x1-png"),
        pytest.param(b64(encode(noise(300, 4), "WEBP")), "", id="300x4-webp"),
    ],
)
def test_what_is_accepted_leniently(
    aws: LocalAws, detection: ModuleType, content: str, label: str
) -> None:
    """Whitespace anywhere in the base64 and a data: URL prefix are tolerated; a tiny image is
    a valid frame without a face (no face can fit: MTCNN is not even run)."""
    status, body = post(detection, json.dumps({"content": content}))
    assert status == 202, body
    assert body["frames"][0]["status"] == "no_face"
    assert len(aws.drain(aws.outputs["ResponseQueueUrl"], wait_seconds=0)) == 1


LONG = "x" * 256
BAD_BODIES: list[tuple[str, str | bytes, dict[str, Any], int, str, str]] = [
    ("not-json", "{not json", {}, 400, "invalid_request", "not valid JSON"),
    ("json-array", "[1, 2]", {}, 400, "invalid_request", "JSON object"),
    ("json-string", '"frames"', {}, 400, "invalid_request", "JSON object"),
    ("deeply-nested", "[" * 100_000, {}, 400, "invalid_request", "nested too deeply"),
    ("binary-body", JPEG, {"is_base64": True}, 400, "invalid_request", "not valid JSON"),
    ("utf16-junk", "\ufeff{}".encode("utf-16"), {"is_base64": True}, 400, "invalid_request", ""),
    ("empty", "", {}, 400, "invalid_request", "empty"),
    ("get", '{"content": "aGk="}', {"method": "GET"}, 405, "method_not_allowed", "POST"),
    ("unknown-field", '{"content": "aGk=", "colour": 1}', {}, 400, "", "colour"),
    ("content-number", '{"content": 42}', {}, 400, "invalid_request", "content"),
    ("no-frames", '{"frames": []}', {}, 400, "invalid_request", "frames"),
    ("frames-not-list", '{"frames": {"content": "aGk="}}', {}, 400, "", "frames"),
    ("bad-request-id", '{"request_id": "a b", "content": "aGk="}', {}, 400, "", "request_id"),
    ("request-id-newline", '{"request_id": "ab\\n", "content": "aGk="}', {}, 400, "", "request_id"),
    ("request-id-129", json.dumps({"request_id": "r" * 129, "content": "aGk="}), {}, 400, "", ""),
    ("filename-256", json.dumps({"filename": LONG, "content": "aGk="}), {}, 400, "", "255"),
    ("filename-control", '{"filename": "a\\u0000.jpg", "content": "aGk="}', {}, 400, "", "contr"),
    ("filename-nonchar", '{"filename": "a\\uffff", "content": "aGk="}', {}, 400, "", "control"),
    ("lone-surrogate", '{"filename": "\\udc80", "content": "aGk="}', {}, 400, "", "filename"),
    ("album-bad-name", '{"content": "aGk=", "album": {"name": "../x", "mode": "index"}}', {}, 400,
     "invalid_request", "album"),
    ("duplicate-ids", json.dumps({"frames": [{"request_id": "d", "content": "aGk="}] * 2}), {},
     400, "invalid_request", "unique"),
    ("17-frames", json.dumps({"frames": [{"content": "aGk="}] * 17}), {}, 413, "too_many_frames",
     "FACEPIPE_MAX_FRAMES"),
    ("over-6-mb", json.dumps({"content": "A" * 6_300_000}), {}, 413, "payload_too_large",
     "FACEPIPE_MAX_BODY_BYTES): send fewer frames per request; a single frame this large must be "
     "downscaled (`facepipe send` does it"),
    ("original-size-zero", '{"content": "aGk=", "original_size": [0, 5]}', {}, 400,
     "invalid_request", "original_size.0: Input should be greater than or equal to 1"),
    ("original-size-one-number", '{"content": "aGk=", "original_size": [5]}', {}, 400,
     "invalid_request", "original_size: List should have at least 2 items"),
    ("original-size-float", '{"content": "aGk=", "original_size": [5.5, 5]}', {}, 400,
     "invalid_request", "original_size.0: Input should be a valid integer"),
    ("original-size-text", '{"content": "aGk=", "original_size": "640x480"}', {}, 400,
     "invalid_request", "original_size"),
    ("original-size-huge", '{"content": "aGk=", "original_size": [5, 1000001]}', {}, 400,
     "invalid_request", "original_size.1: Input should be less than or equal to 1000000"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "kw", "status", "code", "words"),
    [pytest.param(body, *rest, id=name) for name, body, *rest in BAD_BODIES],
)
def test_bad_body_gets_a_clear_4xx(
    aws: LocalAws,
    detection: ModuleType,
    body: str | bytes,
    kw: dict[str, Any],
    status: int,
    code: str,
    words: str,
) -> None:
    got_status, answer = post(detection, body, **kw)
    assert_refused(aws, got_status, answer, status, code or "invalid_request")
    assert words in answer["message"]


@pytest.mark.parametrize(
    ("fmt", "data", "error"),
    [
        ("GIF", encode(noise(8, 8), "GIF"), None),
        ("GIF", animated("GIF"), "animated or multi-page"),
        ("TIFF", encode(noise(8, 8), "TIFF"), None),
        ("TIFF", multipage_tiff(), "animated or multi-page"),
        ("BMP", encode(noise(8, 8), "BMP"), None),
    ],
)
def test_other_formats_only_when_configured(fmt: str, data: bytes, error: str | None) -> None:
    """FACEPIPE_FORMATS may add GIF, BMP or TIFF; multi-frame files stay refused."""
    with pytest.raises(InvalidImage, match="accepted format"):
        decode_image(data, max_pixels=10_000)
    formats = {"JPEG", "PNG", "WEBP", fmt}
    if error is None:
        assert decode_image(data, max_pixels=10_000, formats=formats).size == (8, 8)
    else:
        with pytest.raises(InvalidImage, match=error):
            decode_image(data, max_pixels=10_000, formats=formats)

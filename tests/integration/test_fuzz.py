"""Fuzzing both handlers with hypothesis: 10,000 generated malformed requests against detection
and 10,000 generated malformed queue records against recognition, in-process against the
template's queues and bucket in moto, with seeded random embedder weights.

Nothing in the validation path is stubbed: each event goes through the real handler, the real
service, the real ledger. The inputs are mostly invalid (random JSON shapes, wrong types, bad
base64, random bytes and broken images, oversized fields, truncated or mutated tasks, odd
crops), so MTCNN and the embedder rarely run. Results are checked against what SQS accepts
(size, characters) as they are posted, and every 20th is really sent to the moto queue: a moto
round trip costs ~15 ms here, which would make 10,000 examples take minutes.

What must hold for every input:

* detection answers a JSON 2xx, or a 4xx ``{"error": <known code>, "message": ...}``: never a
  5xx, never an exception;
* recognition never raises; every record either yields exactly one result (for a request_id
  the record carries) or is listed in ``batchItemFailures``; a record whose request_id can be
  read but whose body is not a valid task is answered (an ``error`` result), not retried.

``FUZZ_EXAMPLES=500 pytest tests/integration/test_fuzz.py`` runs a shorter round.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import os
import random
import re
import struct
import zlib
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from facepipe.aws.sqs import SqsResultSink
from facepipe.local.emulator import LocalAws
from facepipe.local.events import function_url_event, sqs_event
from facepipe.messages import REQUEST_ID_PATTERN, FaceTask, Result
from tests.integration.test_handlers import FakeContext, load_handler
from tests.integration.test_nasty_inputs import ERROR_CODES

pytestmark = pytest.mark.fuzz

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "10000"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,  # no .hypothesis/ folder; a failure prints its reproducing example
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.large_base_example,
    ],
)
ID_RE = re.compile(REQUEST_ID_PATTERN)
# What SQS refuses in a message body (it allows #x9 #xA #xD #x20-#xD7FF #xE000-#xFFFD and above).
SQS_BAD_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
SQS_MAX_BYTES = 262_144
_serial = itertools.count()


class PostedResults:
    """What reached ``SqsResultSink.send_result`` (so went past the ledger), checked against
    what SQS accepts (``problems``; an exception here would only fail the record); every
    ``every``-th is really sent."""

    def __init__(self, every: int = 20) -> None:
        self.every = every
        self.results: list[Result] = []
        self.problems: list[str] = []
        self.count = 0
        self._send = SqsResultSink.send_result

    def clear(self) -> None:
        self.results.clear()
        self.problems.clear()

    def __call__(self, sink: SqsResultSink, result: Result) -> None:
        body = result.to_json()
        if len(body.encode()) > SQS_MAX_BYTES:
            self.problems.append(f"result over SQS's size limit: {body[:300]}")
        if SQS_BAD_CHARS.search(body):
            self.problems.append(f"characters SQS refuses: {body!r}")
        if not ID_RE.fullmatch(result.request_id):  # it is also the message attribute
            self.problems.append(f"result for an invalid request_id: {body!r}")
        self.results.append(result)
        self.count += 1
        if self.count % self.every == 0:
            self._send(sink, result)


@pytest.fixture(scope="module")
def aws() -> Iterator[LocalAws]:
    with LocalAws(stack="facepipe-fuzz") as local:
        yield local


@pytest.fixture(scope="module")
def posted() -> Iterator[PostedResults]:
    spy = PostedResults()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(SqsResultSink, "send_result", lambda sink, result: spy(sink, result))
        yield spy


def _handler(aws: LocalAws, logical_id: str) -> ModuleType:
    # The in-memory ledger: one result per request_id as with DynamoDB, without its round trips.
    return load_handler(aws, logical_id, FACEPIPE_LEDGER_TABLE="")


@pytest.fixture(scope="module")
def detection(aws: LocalAws) -> ModuleType:
    return _handler(aws, "DetectionFunction")


@pytest.fixture(scope="module")
def recognition(aws: LocalAws) -> ModuleType:
    return _handler(aws, "RecognitionFunction")


# --- building blocks --------------------------------------------------------------------------
def encode(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 8))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --- generating malformed input ---------------------------------------------------------------
# Hypothesis draws a few choices and a seed per example; a seeded random.Random builds the bulk
# (random JSON, text, bytes) from it. Drawing all of that from hypothesis itself costs ~10 ms an
# example on a 2-core machine, which 10,000 examples cannot afford. A failure still reproduces
# exactly: hypothesis prints the seed and the choices.
TEXT_PALETTE = (
    "abcXYZ019 ._:#@=+-/\\\"'{}[],:;!?*%&$~`^|<>"
    "\t\n\r\x00\x01\x1f\x7f\x85\xa0é中\u200b\u2028\ufeff\ufffd\ufffe\uffff\U0001f600\U0010ffff"
)


def rand_text(rng: random.Random, most: int = 20) -> str:
    return "".join(rng.choice(TEXT_PALETTE) for _ in range(rng.randint(0, most)))


def rand_json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 3 else 7)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.choice([0, -1, 1, 2**31, -(2**63), 10**30, rng.randint(-999, 999)])
    if kind == 3:
        return rng.choice([0.0, -0.0, 1e308, -1e-308, 0.5, rng.uniform(-1e6, 1e6)])
    if kind in (4, 5, 6):
        return rand_text(rng)
    if kind == 7:
        return [rand_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {rand_text(rng, 6): rand_json(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def _tiny(width: int, height: int, mode: str, fmt: str, seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    image = Image.fromarray(pixels, "RGB")
    try:
        return encode(image.convert(mode), fmt)
    except (OSError, ValueError, KeyError):  # a mode the format cannot hold
        return encode(image, fmt)


# Real images of every format and mode, mostly too small for a face (so MTCNN is skipped).
_SIZES = [(1, 1), (3, 2), (19, 24), (20, 20), (24, 7), (7, 24)]
_MODES = ["RGB", "L", "RGBA", "P", "1", "CMYK", "I;16"]
_FORMATS = ["PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"]
IMAGES = [
    _tiny(w, h, mode, fmt, seed)
    for seed, ((w, h), mode, fmt) in enumerate(itertools.product(_SIZES, _MODES, _FORMATS))
]
MAGIC = [b"GIF89a", b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"RIFF\0\0\0\0WEBP", b"<svg", b"II*\0"]


def rand_image_bytes(rng: random.Random) -> bytes:
    kind = rng.randrange(6)
    if kind == 0:
        return rng.randbytes(rng.randint(0, 200))
    if kind == 1:
        return rng.choice(IMAGES)
    if kind == 2:  # a real image cut short
        data = rng.choice(IMAGES)
        return data[: rng.randint(0, len(data))]
    if kind == 3:  # a real image with a few bytes overwritten
        raw = bytearray(rng.choice(IMAGES))
        for _ in range(rng.randint(1, 4)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        return bytes(raw)
    if kind == 4:  # a header announcing anything, up to a decompression bomb
        return png_header(rng.choice([0, 1, rng.randint(0, 2**31 - 1)]), rng.randint(0, 2**31 - 1))
    return rng.choice(MAGIC) + rng.randbytes(rng.randint(0, 50))


def rand_base64(rng: random.Random) -> str:
    """The base64 of some bytes, often broken the ways clients break it."""
    text = b64(rand_image_bytes(rng))
    at = rng.randint(0, len(text))
    how = rng.randrange(14)  # 0 and 7..13: left as it is
    if how == 1:
        text = text.replace("+", "-").replace("/", "_")
    elif how == 2:
        text = text.rstrip("=")
    elif how == 3:
        text = "\n ".join(text[i : i + 7] for i in range(0, len(text), 7))
    elif how == 4:
        text = text[:at] + rand_text(rng, 3) + text[at:]
    elif how == 5:
        text = text[:at]
    elif how == 6:
        text = rng.choice(["data:image/png;base64,", "data:,", "data:image/png,"]) + text
    return text


ODD_IDS = ["a\n", "-x", "x" * 129, "", " a", "a b", "é", "a/b", "r1\x00", "r" * 128]


def rand_request_id(rng: random.Random) -> Any:
    kind = rng.randrange(5)
    if kind == 0:
        return "".join(rng.choice("abcXYZ019._:#@=+-") for _ in range(rng.randint(1, 40)))
    if kind == 1:
        return rng.choice(ODD_IDS)
    if kind == 2:
        return rand_text(rng)
    if kind == 3:
        return rand_json(rng)
    return "r" + str(rng.randrange(10**6))


def rand_frame(rng: random.Random) -> dict[str, Any]:
    """One frame of a POST body, any of its fields missing, odd or of the wrong type."""
    frame: dict[str, Any] = {}
    if rng.random() < 0.7:
        frame["request_id"] = rand_request_id(rng) if rng.random() < 0.4 else f"r{rng.random()}"
    if rng.random() < 0.5:
        odd = [rand_text(rng), "x" * 256, "a\x00b", "a\uffff", rand_json(rng)]
        frame["filename"] = rng.choice(odd) if rng.random() < 0.4 else "p.jpg"
    if rng.random() < 0.9:
        frame["content"] = rand_base64(rng) if rng.random() < 0.8 else rand_json(rng)
    if rng.random() < 0.1:
        frame["album"] = rng.choice(
            [
                {"name": rand_text(rng, 8), "mode": rng.choice(["index", "find", "x"])},
                rand_json(rng),
            ]
        )
    if rng.random() < 0.1:
        frame[rand_text(rng, 8)] = rand_json(rng)
    return frame


def http_body(seed: int, kind: str) -> str | bytes:
    rng = random.Random(seed)
    if kind == "frame":
        return json.dumps(rand_frame(rng))
    if kind == "frames":
        frame_list = [rand_frame(rng) for _ in range(rng.choice([0, 1, 2, 5, 16, 17]))]
        return json.dumps({"frames": frame_list if rng.random() < 0.9 else rand_json(rng)})
    if kind == "json":
        return json.dumps(rand_json(rng))
    if kind == "text":
        return rand_text(rng, 200)
    if kind == "binary":
        return rand_image_bytes(rng)
    whole = json.dumps(rand_frame(rng))
    return whole[: rng.randint(0, len(whole))]


@FUZZ
@given(
    seed=st.integers(0, 2**32 - 1),
    kind=st.sampled_from(["frame", "frame", "frame", "frames", "json", "text", "binary", "cut"]),
    is_base64=st.booleans(),
    method=st.sampled_from(["POST"] * 30 + ["GET", "PUT", "DELETE", "OPTIONS", "HEAD"]),
)
def test_detection_answers_every_malformed_request_with_json_2xx_or_4xx(
    detection: ModuleType, posted: PostedResults, seed: int, kind: str, is_base64: bool, method: str
) -> None:
    body = http_body(seed, kind)
    # Lambda base64-encodes binary bodies; text ones may come either way.
    event = function_url_event(body, is_base64=is_base64 or isinstance(body, bytes), method=method)
    posted.clear()
    response = detection.handler(event, FakeContext())
    assert posted.problems == []
    assert response["headers"]["content-type"] == "application/json"
    status = response["statusCode"]
    answer = json.loads(response["body"])
    assert 200 <= status < 300 or 400 <= status < 500, (status, answer)
    if status >= 400:
        assert set(answer) == {"error", "message"}, answer
        assert answer["error"] in ERROR_CODES, answer
        assert isinstance(answer["message"], str)
        assert answer["message"]
        assert "Traceback" not in answer["message"]
    else:
        assert status == 202
        # duplicate: the same frame again under a request_id an earlier example used
        assert all(f["status"] in ("queued", "no_face", "duplicate") for f in answer["frames"])


# --- recognition ------------------------------------------------------------------------------
def _crop(width: int, height: int) -> str:
    """A smooth width x height crop: a few hundred bytes of PNG."""
    ys, xs = np.mgrid[0:height, 0:width]
    pixels = np.stack([xs * 255 // width, ys * 255 // height, (xs + ys) % 256], axis=-1)
    return b64(encode(Image.fromarray(pixels.astype(np.uint8), "RGB"), "PNG"))


GOOD_CROP = _crop(160, 160)
EMBEDDABLE = [GOOD_CROP, _crop(90, 90)]  # 90x90 too, in a forward pass of its own
ODD_CROPS = [
    _crop(1, 1),
    _crop(8, 8),
    _crop(74, 74),  # one pixel under what InceptionResnetV1 can take
    _crop(160, 74),
    _crop(2000, 80),
    b64(png_header(60_000, 60_000)),  # a decompression bomb as a crop
    b64(png_header(160, 160)),  # the right size, no pixel data
    b64(encode(Image.new("RGB", (160, 160)), "JPEG")),  # not a PNG
    "bm90IGEgcG5n",
    "",
    "%%%",
]
TASK_FIELDS = [
    "version", "request_id", "filename", "width", "height", "detector", "embedder", "faces",
    "timings_ms", "sent_at", "payload_key", "album", "colour",
]  # fmt: skip
FACE_FIELDS = ["box", "probability", "landmarks", "crop_png", "colour"]
# Values that break a field's type or range, beside random JSON.
ODD_VALUES = [
    -1, 0, 2**63, 1e308, float("nan"), float("inf"), "", "x" * 300, [], {}, None, True,
    [1, 2, 3], [[1]], [float("nan")] * 4, "dlib", "casia-webface", "resnet", 2,
    "payloads/MISSING/x.json", "gallery/gallery.pt", "payloads/", "a\uffff", "a\x00",
    {"name": "a", "mode": "find"}, {"name": "../a", "mode": "index"}, [[1, 2]] * 101,
]  # fmt: skip


def _face(crop: str) -> dict[str, Any]:
    return {
        "box": [10.0, 12.0, 90.0, 110.0],
        "probability": 0.99,
        "landmarks": [[30.0, 40.0], [60.0, 40.0], [45.0, 60.0], [35.0, 80.0], [55.0, 80.0]],
        "crop_png": crop,
    }


def _odd(rng: random.Random) -> Any:
    return rng.choice(ODD_VALUES) if rng.random() < 0.6 else rand_json(rng)


def _unique(value: Any, serial: int) -> Any:
    """The request_ids a test produces, made unique (the ledger would swallow a repeat)."""
    if isinstance(value, str) and ID_RE.fullmatch(value):
        return f"{value[:100]}.{serial}"
    return value


def queue_record(seed: int, shape: str, attribute: str, embed: bool) -> tuple[str, dict, set[str]]:
    """(body, messageAttributes, the request_ids the record can be answered under)."""
    rng = random.Random(seed)
    serial = next(_serial)
    body_id = "fz" if rng.random() < 0.6 else rand_request_id(rng)
    crops = [rng.choice(ODD_CROPS) for _ in range(rng.choice([0, 0, 1, 1, 2]))]
    if embed:  # now and then crops the embedder really embeds
        crops += EMBEDDABLE[: rng.randint(1, 2)]
    task: dict[str, Any] = {
        "version": 1,
        "request_id": body_id,
        "filename": "f.jpg",
        "width": 640,
        "height": 480,
        "detector": "mtcnn",
        "embedder": "vggface2",
        "faces": [_face(crop) for crop in crops],
        "timings_ms": {"detect": 1.5},
        "sent_at": 1.7e9,
    }
    if task["faces"] and rng.random() < 0.25:
        rng.choice(task["faces"])[rng.choice(FACE_FIELDS)] = _odd(rng)
    for _ in range(rng.choice([0, 0, 1, 1, 2])):
        task[rng.choice(TASK_FIELDS)] = _odd(rng)
    if rng.random() < 0.1:
        task.pop("request_id")
    else:
        task["request_id"] = _unique(task["request_id"], serial)
        if isinstance(task["request_id"], str) and rng.random() < 0.03:  # a vanished claim check
            task["payload_key"] = f"payloads/{task['request_id']}/gone.json"
    whole = json.dumps(task)  # NaN and Infinity written as the json module does
    body = {
        "task": whole,
        "cut": whole[: rng.randint(0, len(whole))],
        "json": json.dumps(rand_json(rng)),
        "text": rand_text(rng, 100),
    }[shape]
    value = {
        "same": task.get("request_id"),
        "none": None,
        "other": _unique(rand_request_id(rng), serial + 10**9),
    }[attribute]
    attributes: dict[str, Any] = {}
    if isinstance(value, str):
        attributes["request_id"] = {"stringValue": value, "dataType": "String"}
    elif value is not None and rng.random() < 0.5:
        attributes["request_id"] = {"binaryValue": "AAAA", "dataType": "Binary"}
    names = {value} if isinstance(value, str) else set()
    body_id = task.get("request_id")
    if isinstance(body_id, str) and f'"request_id": {json.dumps(body_id)}' in body:
        names.add(body_id)  # still in the body, whole (a cut body may have lost it)
    return body, attributes, {n for n in names if ID_RE.fullmatch(n)}


def _is_task(body: str) -> bool:
    try:
        FaceTask.model_validate_json(body)
    except ValueError:
        return False
    return True


records = st.lists(
    st.tuples(
        st.integers(0, 2**32 - 1),
        st.sampled_from(["task", "task", "task", "cut", "json", "text"]),
        st.sampled_from(["same", "none", "none", "other"]),
        st.integers(0, 999).map(lambda n: n == 0),  # 1 in 1000: crops that are embedded
    ),
    min_size=1,
    max_size=2,
)


@FUZZ
@given(specs=records)
def test_recognition_answers_or_fails_every_malformed_record(
    recognition: ModuleType, posted: PostedResults, specs: list[tuple[int, str, str, bool]]
) -> None:
    built = [queue_record(*spec) for spec in specs]
    ids = [f"m{i}" for i in range(len(built))]
    event = sqs_event(
        [body for body, _, _ in built],
        message_ids=ids,
        message_attributes=[attributes for _, attributes, _ in built],
    )
    posted.clear()
    response = recognition.handler(event, FakeContext())
    assert posted.problems == []
    assert set(response) == {"batchItemFailures"}
    failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
    assert failed <= set(ids)
    answered = [r.request_id for r in posted.results]
    assert len(answered) == len(set(answered)) == len(ids) - len(failed)
    for mid, (body, _, names) in zip(ids, built, strict=True):
        if mid in failed:
            # Only a record nobody can be answered for, or a well-formed task (an embedder
            # mismatch, a transient error), may be failed into retries.
            assert not names or _is_task(body), (body, names)
            continue
        matches = [r for r in posted.results if r.request_id in names]
        assert len(matches) == 1, (body, names, answered)
        if not _is_task(body):
            assert matches[0].status == "error"
            assert matches[0].error is not None
            assert matches[0].error.code in ("invalid_message", "payload_missing")

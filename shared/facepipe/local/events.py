"""Lambda events as AWS delivers them, and the sample ``events/`` files made from them.

* :func:`function_url_event`: a Function URL request (payload format 2.0), the detection
  function's event; the local Function URL server builds its events with it too.
* :func:`sqs_event`: a batch as the SQS event source mapping hands it to the recognition function.
* :func:`generate_events`: ``events/*.json`` from the public-domain images in ``samples/``; the
  recognition event carries the real task the detection stage makes of ``astronaut.jpg``. Ids and
  times are fixed, so ``make events`` rewrites byte-identical files.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from facepipe.local.emulator import DEFAULT_STACK, REGION, bucket_name, find_template

ACCOUNT_ID = "123456789012"  # moto's default account, as in the local queues' ARNs
REQUEST_QUEUE_ARN = f"arn:aws:sqs:{REGION}:{ACCOUNT_ID}:{DEFAULT_STACK}-RequestQueue"
INGEST_QUEUE_ARN = f"arn:aws:sqs:{REGION}:{ACCOUNT_ID}:{DEFAULT_STACK}-IngestQueue"
DATA_BUCKET = bucket_name(DEFAULT_STACK, "DataBucket")
INGEST_KEY = "input/astronaut.jpg"  # the object events/ingest-sqs.json announces
URL_ID = "facepipelocal0000000000000000000"  # a Function URL id is 32 characters [a-z0-9]
SENT_AT = 1767225600.0  # 2026-01-01T00:00:00Z: the fixed time of every sample event
USER_AGENT = "facepipe-events"
MAX_EVENT_BYTES = 150_000  # larger sample events get their images shrunk to SHRUNK_WIDTH
SHRUNK_WIDTH = 256
SAMPLES = {"astronaut.jpg": 1, "rocket.jpg": 0}  # sample → faces it must show (checked)
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _fixed_uuid(*parts: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "facepipe:" + "/".join(parts)))


def _clf_time(epoch_ms: int) -> str:
    """``01/Jan/2026:00:00:00 +0000``: the requestContext.time format, locale-independent."""
    t = time.gmtime(epoch_ms / 1000)
    return (
        f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:"
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"
    )


def function_url_event(
    body: str | bytes,
    *,
    method: str = "POST",
    path: str = "/",
    query: str = "",
    headers: Mapping[str, str] | None = None,
    is_base64: bool = False,
    source_ip: str = "127.0.0.1",
    request_id: str | None = None,
    time_epoch_ms: int | None = None,
    url_id: str = URL_ID,
) -> dict[str, Any]:
    """A Lambda Function URL event (payload format 2.0), shaped as Lambda sends it.

    Args:
        body: the request body as the client sent it.
        is_base64: deliver the body base64-encoded (Lambda does so for binary content types).
        headers: the client's headers (names are lower-cased, a ``cookie`` header becomes the
            ``cookies`` list, as Lambda does); default ``content-type: application/json``.
        query: the raw query string, without ``?``.
        request_id / time_epoch_ms: fixed values for reproducible events; default a new uuid4
            and now.

    Example:
        >>> event = function_url_event('{"frames": []}')
        >>> event["requestContext"]["http"]["method"], event["isBase64Encoded"]
        ('POST', False)
    """
    raw = body if isinstance(body, bytes) else body.encode()
    epoch_ms = int(time.time() * 1000) if time_epoch_ms is None else time_epoch_ms
    request_id = request_id or str(uuid.uuid4())
    domain = f"{url_id}.lambda-url.{REGION}.on.aws"
    given = headers if headers is not None else {"content-type": "application/json"}
    lowered = {name.lower(): value for name, value in given.items()}
    cookie_header = lowered.pop("cookie", "")
    lowered.setdefault("user-agent", USER_AGENT)
    trace = hashlib.sha256(request_id.encode()).hexdigest()[:24]
    lowered.update(
        {
            "host": domain,
            "x-amzn-trace-id": f"Root=1-{epoch_ms // 1000:08x}-{trace}",
            "x-forwarded-for": source_ip,
            "x-forwarded-port": "443",
            "x-forwarded-proto": "https",
        }
    )
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
    }
    if cookie_header:
        event["cookies"] = [c.strip() for c in cookie_header.split(";") if c.strip()]
    event["headers"] = dict(sorted(lowered.items()))
    if query:
        params: dict[str, list[str]] = {}
        for name, value in parse_qsl(query, keep_blank_values=True):
            params.setdefault(name, []).append(value)
        event["queryStringParameters"] = {k: ",".join(v) for k, v in params.items()}
    event["requestContext"] = {
        "accountId": "anonymous",
        "apiId": url_id,
        "domainName": domain,
        "domainPrefix": url_id,
        "http": {
            "method": method.upper(),
            "path": path,
            "protocol": "HTTP/1.1",
            "sourceIp": source_ip,
            "userAgent": lowered["user-agent"],
        },
        "requestId": request_id,
        "routeKey": "$default",
        "stage": "$default",
        "time": _clf_time(epoch_ms),
        "timeEpoch": epoch_ms,
    }
    event["body"] = base64.b64encode(raw).decode("ascii") if is_base64 else raw.decode()
    event["pathParameters"] = None
    event["isBase64Encoded"] = is_base64
    event["stageVariables"] = None
    return event


def sqs_event(
    bodies: Sequence[str],
    *,
    queue_arn: str = REQUEST_QUEUE_ARN,
    request_ids: Sequence[str | None] | None = None,
    message_ids: Sequence[str] | None = None,
    sent_timestamp_ms: int | None = None,
    sender_id: str = ACCOUNT_ID,
    receipt_handles: Sequence[str] | None = None,
    attributes: Sequence[Mapping[str, str]] | None = None,
    message_attributes: Sequence[Mapping[str, Mapping[str, Any]]] | None = None,
) -> dict[str, Any]:
    """An SQS event as Lambda's event source mapping delivers a batch.

    Args:
        bodies: the message bodies, one record each.
        request_ids: each message's ``request_id`` message attribute (what detection sets);
            default: the body's ``request_id`` when the body is a JSON object with one.
        message_ids: default ids derived from the queue, position and body (reproducible).
        sent_timestamp_ms: ``SentTimestamp``; default now.
        receipt_handles / attributes / message_attributes: the real values of received
            messages (the local event source mapping passes them): each record's receipt
            handle, system attributes (``ApproximateReceiveCount``, ``SentTimestamp``, ...) and
            message attributes in Lambda's shape (``stringValue``, ``dataType``, ...); they
            replace the generated ones (and ``request_ids``).

    Example:
        >>> record = sqs_event(['{"request_id": "r1"}'])["Records"][0]
        >>> record["messageAttributes"]["request_id"]["stringValue"], record["eventSource"]
        ('r1', 'aws:sqs')
    """
    sent = int(time.time() * 1000) if sent_timestamp_ms is None else sent_timestamp_ms
    region = queue_arn.split(":")[3]
    records = []
    for index, body in enumerate(bodies):
        md5 = hashlib.md5(body.encode(), usedforsecurity=False).hexdigest()
        message_id = message_ids[index] if message_ids else _fixed_uuid(queue_arn, str(index), md5)
        request_id = request_ids[index] if request_ids is not None else _request_id_of(body)
        message_attrs: dict[str, Any] = {}
        if message_attributes is not None:
            message_attrs = {k: dict(v) for k, v in message_attributes[index].items()}
        elif request_id is not None:
            message_attrs["request_id"] = {
                "stringValue": request_id,
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": "String",
            }
        if receipt_handles is not None:
            receipt_handle = receipt_handles[index]
        else:
            receipt = base64.b64encode(hashlib.sha256(f"{message_id}{sent}".encode()).digest())
            receipt_handle = "AQEB" + receipt.decode("ascii")
        system = (
            dict(attributes[index])
            if attributes is not None
            else {
                "ApproximateReceiveCount": "1",
                "SentTimestamp": str(sent),
                "SenderId": sender_id,
                "ApproximateFirstReceiveTimestamp": str(sent + 1),
            }
        )
        records.append(
            {
                "messageId": message_id,
                "receiptHandle": receipt_handle,
                "body": body,
                "attributes": system,
                "messageAttributes": message_attrs,
                "md5OfBody": md5,
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": region,
            }
        )
    return {"Records": records}


def object_created_event(
    bucket: str,
    key: str,
    *,
    size: int,
    etag: str,
    version_id: str | None = None,
    time_epoch_s: float | None = None,
    source_ip: str = "127.0.0.1",
) -> dict[str, Any]:
    """The EventBridge ``Object Created`` event S3 sends for an upload: what ``IngestRule``
    forwards to the ingest queue, so the body of each ingest queue message. ``version_id`` only
    on a versioned bucket (the template's is); ids are derived from the object (reproducible).

    Example:
        >>> event = object_created_event("b", "input/a.jpg", size=3, etag="e", time_epoch_s=0)
        >>> event["detail-type"], event["detail"]["object"]["key"], event["time"]
        ('Object Created', 'input/a.jpg', '1970-01-01T00:00:00Z')
    """
    seconds = time.time() if time_epoch_s is None else time_epoch_s
    digest = hashlib.sha256(f"{bucket}/{key}/{etag}/{version_id}".encode()).hexdigest()
    obj: dict[str, Any] = {"key": key, "size": size, "etag": etag}
    if version_id is not None:
        obj["version-id"] = version_id
    obj["sequencer"] = digest[:16].upper()
    return {
        "version": "0",
        "id": _fixed_uuid("object-created", digest),
        "detail-type": "Object Created",
        "source": "aws.s3",
        "account": ACCOUNT_ID,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds)),
        "region": REGION,
        "resources": [f"arn:aws:s3:::{bucket}"],
        "detail": {
            "version": "0",
            "bucket": {"name": bucket},
            "object": obj,
            "request-id": digest[16:32].upper(),
            "requester": ACCOUNT_ID,
            "source-ip-address": source_ip,
            "reason": "PutObject",
        },
    }


def _request_id_of(body: str) -> str | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    value = data.get("request_id") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


# --- the sample events ------------------------------------------------------------------------
def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _shrink(data: bytes) -> bytes:
    from PIL import Image

    from facepipe.vision.frames import decode_image, encode_image

    image = decode_image(data, max_pixels=1 << 30)
    height = round(image.height * SHRUNK_WIDTH / image.width)
    return encode_image(image.resize((SHRUNK_WIDTH, height), Image.Resampling.LANCZOS), "JPEG", 90)


def _images(samples: Path, names: Sequence[str]) -> list[bytes]:
    """The sample files, shrunk when their base64 would make the event over MAX_EVENT_BYTES."""
    originals = [(samples / name).read_bytes() for name in names]
    if sum(len(data) * 4 // 3 for data in originals) + 2_000 <= MAX_EVENT_BYTES:
        return originals
    return [_shrink(data) for data in originals]


def _url_event(name: str, request: Mapping[str, Any]) -> dict[str, Any]:
    return function_url_event(
        json.dumps(request),
        request_id=_fixed_uuid("events", name),
        time_epoch_ms=int(SENT_AT * 1000),
    )


def _write(path: Path, event: Mapping[str, Any]) -> Path:
    path.write_text(json.dumps(event, indent=2) + "\n", encoding="utf-8", newline="\n")
    return path


def generate_events(out_dir: str | Path, samples: str | Path | None = None) -> list[Path]:
    """Write the sample events into ``out_dir``; returns the files written.

    * ``detection-single.json``: astronaut.jpg (one face) as one frame;
    * ``detection-multi.json``: astronaut.jpg and rocket.jpg (no face) in one request;
    * ``detection-bad.json``: a frame whose ``content`` is not base64 (HTTP 400);
    * ``recognition-sqs.json``: the task detection queues for detection-single's frame;
    * ``ingest-sqs.json``: the ingest queue's record of astronaut.jpg uploaded to
      ``input/astronaut.jpg`` of the local stack's bucket (EventBridge ``Object Created``).

    Detection runs with the default settings (the template's values), not the caller's
    ``FACEPIPE_*`` variables, so the files do not depend on who generates them; each image is
    checked to show the faces it is meant to.
    """
    from facepipe.app.wiring import make_detector
    from facepipe.config import Settings
    from facepipe.stages.detect import Detection
    from facepipe.vision.frames import decode_image

    samples = Path(samples) if samples else find_template().parent / "samples"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = Settings.from_env({})
    detection = Detection(settings, make_detector(settings))

    def detect(request_id: str, filename: str, data: bytes) -> Any:
        image = decode_image(data, max_pixels=settings.max_pixels)
        found = detection.image(request_id, filename, image)
        if len(found.faces) != SAMPLES[filename]:
            raise RuntimeError(
                f"{filename}: {len(found.faces)} faces detected, expected {SAMPLES[filename]}"
            )
        return found

    (astronaut,) = _images(samples, ["astronaut.jpg"])
    single = {
        "request_id": "sample-astronaut",
        "filename": "astronaut.jpg",
        "content": _b64(astronaut),
    }
    frame = detect("sample-astronaut", "astronaut.jpg", astronaut)
    multi_images = _images(samples, ["astronaut.jpg", "rocket.jpg"])
    multi = []
    for index, (name, data) in enumerate(
        zip(["astronaut.jpg", "rocket.jpg"], multi_images, strict=True)
    ):
        detect(f"sample-multi-{index + 1}", name, data)
        multi.append(
            {"request_id": f"sample-multi-{index + 1}", "filename": name, "content": _b64(data)}
        )
    bad = {
        "request_id": "sample-bad",
        "filename": "not-an-image.jpg",
        "content": "this is not base64!",
    }
    # The task exactly as the detection stage queues it, minus what changes run to run.
    task = replace(frame, timings_ms={}).to_task().model_copy(update={"sent_at": SENT_AT})
    original = (samples / "astronaut.jpg").read_bytes()
    uploaded = object_created_event(
        DATA_BUCKET,
        INGEST_KEY,
        size=len(original),
        etag=hashlib.md5(original, usedforsecurity=False).hexdigest(),  # a single-part upload's
        time_epoch_s=SENT_AT,
    )
    ingest = sqs_event(
        [json.dumps(uploaded)], queue_arn=INGEST_QUEUE_ARN, sent_timestamp_ms=int(SENT_AT * 1000)
    )
    return [
        _write(out / "detection-single.json", _url_event("detection-single", single)),
        _write(out / "detection-multi.json", _url_event("detection-multi", {"frames": multi})),
        _write(out / "detection-bad.json", _url_event("detection-bad", bad)),
        _write(
            out / "recognition-sqs.json",
            sqs_event([task.model_dump_json()], sent_timestamp_ms=int(SENT_AT * 1000)),
        ),
        _write(out / "ingest-sqs.json", ingest),
    ]

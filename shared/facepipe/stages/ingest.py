"""S3 ingress: a photo uploaded under ``input/`` → the same detection as a POSTed frame.

The bucket's ``Object Created`` events reach the ingest queue (through EventBridge in AWS; a plain
S3 event notification body is understood too). For every object the stage derives a stable
request_id from bucket, key and version (or ETag), so S3's at-least-once events give one result;
reads the object within ``FACEPIPE_MAX_OBJECT_BYTES``; decodes it with the POST path's own
format and pixel limits (:meth:`~facepipe.stages.detect.Detection.decode_bytes`); detects with
the same :class:`~facepipe.stages.detect.Detection`; and hands the task (or the final ``no_face``
/ ``error`` result) to the same :class:`~facepipe.stages.detect.Dispatcher`. Every task and
result carries ``output_key`` (``output/<key without input/>.json``), where the final result is
also written. Nothing here knows about AWS: the object comes through an :class:`ObjectReader`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import unquote_plus

from pydantic import ValidationError

from facepipe.errors import ConfigError, FacepipeError, InvalidMessage, InvalidRequest
from facepipe.messages import ErrorInfo, Filename, Result, check_printable, describe_validation
from facepipe.stages.batch import Ingested, IngestSummary, Message
from facepipe.stages.detect import Detection, Dispatcher

_log = logging.getLogger(__name__)
REQUEST_ID_PREFIX = "s3-"


class ObjectMissing(FacepipeError):
    """The object (or its version) was deleted before it could be read: nothing to process."""

    code = "object_missing"
    status = 404


@dataclass(frozen=True)
class S3Object:
    """One uploaded object as its event names it. ``etag`` is unquoted; ``version_id`` is
    ``None`` on an unversioned bucket."""

    bucket: str
    key: str
    etag: str = ""
    version_id: str | None = None
    size: int | None = None

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def request_id(self) -> str:
        """The same id for every event about this very object version (S3 and EventBridge
        deliver at least once), a new one when the key is written again.

        >>> S3Object("b", "input/a.jpg", "abc", "v1").request_id()
        's3-606912dc1bd13b55ea7b2785c895986e'
        """
        version = self.version_id or f"etag:{self.etag}"
        digest = hashlib.sha256(f"{self.bucket}\n{self.key}\n{version}".encode()).hexdigest()
        return REQUEST_ID_PREFIX + digest[:32]


def _version(value: Any) -> str | None:
    text = str(value) if value not in (None, "") else ""
    return None if text in ("", "null") else text


def objects_in_message(body: str) -> list[S3Object]:
    """The objects an ingest queue message announces: an EventBridge ``Object Created`` event
    (``detail.bucket.name``, ``detail.object.key``/``etag``/``version-id``) or an S3 event
    notification (``Records[].s3``, keys URL-encoded). S3's ``s3:TestEvent`` (sent when a
    notification is configured) announces none. Anything else is :class:`InvalidMessage`."""
    try:
        event = json.loads(body)
    except ValueError as exc:
        raise InvalidMessage(f"the ingest message is not JSON ({exc})") from exc
    if not isinstance(event, dict):
        raise InvalidMessage("the ingest message is not a JSON object")
    try:
        if event.get("Event") == "s3:TestEvent":
            return []
        if "detail" in event:
            detail = event["detail"]
            obj = detail["object"]
            return [
                S3Object(
                    bucket=str(detail["bucket"]["name"]),
                    key=str(obj["key"]),
                    etag=str(obj.get("etag", obj.get("eTag", ""))).strip('"'),
                    version_id=_version(obj.get("version-id")),
                    size=obj.get("size"),
                )
            ]
        return [
            S3Object(
                bucket=str(record["s3"]["bucket"]["name"]),
                key=unquote_plus(str(record["s3"]["object"]["key"])),
                etag=str(record["s3"]["object"].get("eTag", "")).strip('"'),
                version_id=_version(record["s3"]["object"].get("versionId")),
                size=record["s3"]["object"].get("size"),
            )
            for record in event["Records"]
            if str(record.get("eventName", "ObjectCreated")).startswith("ObjectCreated")
        ]
    except (KeyError, TypeError, AttributeError) as exc:
        raise InvalidMessage(
            f"the ingest message is neither an EventBridge S3 event nor an S3 event "
            f"notification (missing {exc})"
        ) from exc


def output_key_for(key: str, ingest_prefix: str, output_prefix: str) -> str:
    """``input/batch/a.jpg`` → ``output/batch/a.jpg.json`` (the extension kept: ``a.jpg`` and
    ``a.png`` of one batch get two results).

    >>> output_key_for("input/b1/a.jpg", "input/", "output/")
    'output/b1/a.jpg.json'
    """
    return output_prefix + key.removeprefix(ingest_prefix) + ".json"


def check_prefixes(ingest_prefix: str, output_prefix: str) -> None:
    """Results must never land where uploads are processed (each would trigger the next)."""
    if ingest_prefix.startswith(output_prefix) or output_prefix.startswith(ingest_prefix):
        raise ConfigError(
            f"FACEPIPE_INGEST_PREFIX ({ingest_prefix}) and FACEPIPE_OUTPUT_PREFIX "
            f"({output_prefix}) overlap: a result written under the ingest prefix would be "
            "ingested again; choose disjoint prefixes"
        )


class ObjectReader(Protocol):
    """Reads an uploaded object (S3 in AWS)."""

    def read(self, obj: S3Object, max_bytes: int) -> bytes:
        """The object's bytes; :class:`~facepipe.errors.PayloadTooLarge` over ``max_bytes``
        (without downloading it), :class:`ObjectMissing` when it is gone."""
        ...


class IngestService:
    """S3 objects → detection → tasks / final results, through the POST path's own pieces.

    Args:
        detection: the detection function's :class:`Detection` (decode limits, MTCNN, crops).
        dispatcher: where tasks and results go (the request / response queues).
        reader: reads the objects.
        ingest_prefix / output_prefix: keys processed, and where results are written.
        max_object_bytes: larger objects get a ``payload_too_large`` result.
        finished: request_ids whose final result is already out (the result ledger), so a
            repeated event does no work.
    """

    def __init__(
        self,
        detection: Detection,
        dispatcher: Dispatcher,
        reader: ObjectReader,
        *,
        ingest_prefix: str = "input/",
        output_prefix: str = "output/",
        max_object_bytes: int = 20_971_520,
        finished: Callable[[Iterable[str]], set[str]] | None = None,
    ) -> None:
        check_prefixes(ingest_prefix, output_prefix)
        self.detection = detection
        self.dispatcher = dispatcher
        self.reader = reader
        self.ingest_prefix = ingest_prefix
        self.output_prefix = output_prefix
        self.max_object_bytes = max_object_bytes
        self.finished = finished

    def handle(self, obj: S3Object) -> Ingested:
        """Process one object. Raises (→ the record is retried, then dead-lettered) only for
        what may pass: S3 or SQS errors; a bad object gets its final ``error`` result."""
        request_id = obj.request_id()
        if not obj.key.startswith(self.ingest_prefix):
            _log.warning("%s is not under %s: ignored", obj.uri, self.ingest_prefix)
            return Ingested(request_id, obj.key, "skipped")
        if self.finished is not None and request_id in self.finished([request_id]):
            _log.info("duplicate event: %s already has its result", obj.uri)
            return Ingested(request_id, obj.key, "duplicate")
        # A key SQS could not carry (control characters) still gets its result on the queue.
        printable = _printable(obj.key)
        output_key = (
            output_key_for(obj.key, self.ingest_prefix, self.output_prefix)
            if printable == obj.key
            else None
        )
        try:
            filename = _filename(obj.key, self.detection.settings.max_filename)
            data = self.reader.read(obj, self.max_object_bytes)
            image, decode_ms = self.detection.decode_bytes(data)
        except (InvalidRequest, ObjectMissing) as exc:
            self.dispatcher.send_result(
                Result(
                    request_id=request_id,
                    filename=printable[: self.detection.settings.max_filename],
                    status="error",
                    error=ErrorInfo(code=exc.code, message=f"{obj.uri}: {exc.message}"),
                    output_key=output_key,
                )
            )
            return Ingested(request_id, obj.key, "error", error=exc.code)
        found = self.detection.image(request_id, filename, image)
        found.timings_ms["decode"] = decode_ms
        found.output_key = output_key
        if found.faces:
            self.dispatcher.send_task(found.to_task())
            return Ingested(request_id, obj.key, "queued", faces=len(found.faces))
        self.dispatcher.send_result(found.no_face_result())
        return Ingested(request_id, obj.key, "no_face")

    def prepare(self, messages: Sequence[Message]) -> IngestBatch:
        """A batch of ingest-queue messages; each message's objects are detected at its
        finish (no shared batch step: MTCNN runs per photo)."""
        return IngestBatch(self, messages)


class IngestBatch:
    """An ingest batch (:class:`~facepipe.stages.batch.Batch`): a message fails at its first
    object that raises (an S3 or SQS error), and is retried whole."""

    def __init__(self, service: IngestService, messages: Sequence[Message]) -> None:
        self.service = service
        self.messages = {m.message_id: m for m in messages}
        self.failing: dict[str, S3Object] = {}  # message id → the object it failed on
        self.report = IngestSummary()

    def finish(self, message_id: str) -> None:
        for obj in objects_in_message(self.messages[message_id].body):
            self.failing[message_id] = obj
            self.report.done.append(self.service.handle(obj))
            del self.failing[message_id]

    def log_keys(self, message_id: str) -> dict[str, Any]:
        obj = self.failing.get(message_id)
        return {} if obj is None else {"request_id": obj.request_id(), "key": obj.key}

    def summary(self) -> IngestSummary:
        return self.report


def _printable(key: str) -> str:
    """``key`` without the characters no filename (and no SQS message) may hold."""
    return "".join(c for c in key if _is_printable(c))


def _is_printable(char: str) -> bool:
    try:
        check_printable(char)
    except ValueError:
        return False
    return True


def _filename(key: str, max_filename: int) -> str:
    """The key as the result's ``filename``, under the same rules as a POSTed filename."""
    from pydantic import TypeAdapter

    if len(key) > max_filename:
        raise InvalidRequest(
            f"the key is {len(key)} characters; results name their photo by its key, which "
            f"may have at most {max_filename} (FACEPIPE_MAX_FILENAME): use a shorter key"
        )
    try:
        return str(TypeAdapter(Filename).validate_python(key))
    except ValidationError as exc:
        raise InvalidRequest(f"key: {describe_validation(exc)}") from exc

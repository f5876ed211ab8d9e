"""S3: claim-check payloads, reading objects by ``s3://`` URI, uploaded photos and result copies
(S3 ingress)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from facepipe.errors import PayloadMissing

if TYPE_CHECKING:  # the detection function's cold start imports this module, not identity/
    from facepipe.identity.objects import Fresh

_log = logging.getLogger(__name__)


class S3PayloadStore:
    """Objects under ``prefix`` of ``bucket``; keys are ``<prefix><request_id>/<name>``."""

    def __init__(self, s3: Any, bucket: str, prefix: str) -> None:
        self.s3 = s3
        self.bucket = bucket
        self.prefix = prefix

    def key_for(self, request_id: str, name: str) -> str:
        return f"{self.prefix}{request_id}/{name}"

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def put(self, key: str, data: bytes, content_type: str = "application/json") -> None:
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)

    def get(self, key: str) -> bytes:
        """The object's bytes; :class:`PayloadMissing` when there is none (expired after a day,
        or deleted after its result was posted). Other errors (throttling, 5xx) propagate."""
        from botocore.exceptions import ClientError

        try:
            return bytes(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())
        except ClientError as exc:
            # Not NoSuchBucket: a bucket that is not there is a deployment fault, retried.
            if _code(exc) != "NoSuchBucket" and absent(self.s3, self.bucket, key, exc):
                raise PayloadMissing(
                    f"claim-check payload s3://{self.bucket}/{key} does not exist (payloads "
                    "expire after 19 days and are deleted once their result is posted); send "
                    "the frame again"
                ) from exc
            raise

    def delete(self, key: str) -> None:
        self.s3.delete_object(Bucket=self.bucket, Key=key)


def read_uri(uri: str, s3: Any | None) -> bytes:
    """Bytes of ``s3://bucket/key`` or of a local path."""
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        if s3 is None:
            raise ValueError(f"{uri}: an S3 client is needed")
        obj = s3.get_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))
        return bytes(obj["Body"].read())
    return Path(uri).expanduser().read_bytes()


def is_missing(exc: Exception) -> bool:
    """A ``ClientError`` that says the object (or bucket) is not there."""
    return _code(exc) in ("NoSuchKey", "404", "NotFound", "NoSuchBucket")


def _code(exc: Exception) -> str | None:
    code = getattr(exc, "response", {}).get("Error", {}).get("Code")
    return str(code) if code is not None else None


def is_denied(exc: Exception) -> bool:
    """A ``ClientError`` of access denied: what S3 answers for a missing key when the caller may
    not list where it would be (the functions may list only the prefixes they read)."""
    return _code(exc) in ("403", "AccessDenied", "Forbidden")


def absent(s3: Any, bucket: str, key: str, exc: Exception) -> bool:
    """Whether ``exc``, from reading ``key``, means the object is not there: a 404, or a 403
    for a key that listing its own prefix does not show (the listing's errors propagate)."""
    if is_missing(exc):
        return True
    if not is_denied(exc):
        return False
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1).get("Contents", [])
    return not any(item.get("Key") == key for item in listed)


class S3Objects:
    """Objects of one bucket by key, including every version of a versioned bucket.

    The gallery store's S3 backend: ``get``/``tag`` answer ``None`` for a missing object;
    ``erase``/``drop_history`` delete object *versions* (and delete markers), which is what
    removes data from a versioned bucket for good.
    """

    def __init__(self, s3: Any, bucket: str) -> None:
        self.s3 = s3
        self.bucket = bucket

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def get(self, key: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            return bytes(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())
        except ClientError as exc:
            if absent(self.s3, self.bucket, key, exc):
                return None
            raise

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)

    def tag(self, key: str) -> str | None:
        """The object's ETag (changes with every write), ``None`` when there is none."""
        from botocore.exceptions import ClientError

        try:
            return str(self.s3.head_object(Bucket=self.bucket, Key=key)["ETag"])
        except ClientError as exc:
            if absent(self.s3, self.bucket, key, exc):
                return None
            raise

    def get_fresh(self, key: str, tag: str | None) -> Fresh:
        """One GET with ``If-None-Match``: 304 (unchanged) costs no transfer."""
        from botocore.exceptions import ClientError

        from facepipe.identity.objects import Fresh

        extra = {"IfNoneMatch": tag} if tag else {}
        try:
            answer = self.s3.get_object(Bucket=self.bucket, Key=key, **extra)
        except ClientError as exc:
            if _code(exc) in ("304", "NotModified"):
                return Fresh(None, tag, False)
            if absent(self.s3, self.bucket, key, exc):
                return Fresh(None, None, True)
            raise
        return Fresh(bytes(answer["Body"].read()), str(answer["ETag"]), True)

    def put_if(self, key: str, data: bytes, tag: str | None) -> bool:
        """S3 conditional write: ``If-Match`` the tag, or ``If-None-Match: *`` for a new key.
        412 (another writer won) and 409 (a concurrent conditional write) answer ``False``."""
        from botocore.exceptions import ClientError

        extra = {"IfMatch": tag} if tag else {"IfNoneMatch": "*"}
        try:
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=data, **extra)
        except ClientError as exc:
            if _code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
                return False
            if tag and is_missing(exc):
                return False  # it was deleted since
            raise
        return True

    def keys(self, prefix: str) -> list[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))

    def versions(self, prefix: str) -> list[dict[str, Any]]:
        """Every version and delete marker under ``prefix``: ``Key``, ``VersionId``,
        ``IsLatest``, ``Marker`` (an unversioned bucket lists each object once, version
        ``null``)."""
        pages = self.s3.get_paginator("list_object_versions").paginate(
            Bucket=self.bucket, Prefix=prefix
        )
        return [
            {"Key": v["Key"], "VersionId": v["VersionId"], "IsLatest": v["IsLatest"], "Marker": m}
            for page in pages
            for m, kind in ((False, "Versions"), (True, "DeleteMarkers"))
            for v in page.get(kind, [])
        ]

    def _delete_versions(self, versions: list[dict[str, Any]]) -> int:
        for start in range(0, len(versions), 1000):  # DeleteObjects takes 1000 at most
            chunk = versions[start : start + 1000]
            answer = self.s3.delete_objects(
                Bucket=self.bucket,
                Delete={
                    "Objects": [{"Key": v["Key"], "VersionId": v["VersionId"]} for v in chunk],
                    "Quiet": True,
                },
            )
            if answer.get("Errors"):
                first = answer["Errors"][0]
                raise OSError(f"cannot delete {self.uri(first['Key'])}: {first.get('Message')}")
        return len(versions)

    def erase_prefix(self, prefix: str) -> int:
        """Delete every version of every object under ``prefix``; the number deleted."""
        return self._delete_versions(self.versions(prefix))

    def drop_history(self, key: str) -> int:
        """Delete every version of ``key`` but the current one; the number deleted."""
        old = [v for v in self.versions(key) if v["Key"] == key and not v["IsLatest"]]
        return self._delete_versions(old)

    def drop_history_under(self, prefix: str) -> int:
        """Delete every version under ``prefix`` but the current objects' (older versions,
        deleted objects' versions and their delete markers); the number deleted."""
        old = [v for v in self.versions(prefix) if v["Marker"] or not v["IsLatest"]]
        return self._delete_versions(old)


class S3ObjectReader:
    """Reads uploaded photos (S3 ingress): the version the event named, within a size limit."""

    def __init__(self, s3: Any) -> None:
        self.s3 = s3

    def read(self, obj: Any, max_bytes: int) -> bytes:
        """``obj`` is a :class:`~facepipe.stages.ingest.S3Object`. The size is checked from
        the response headers, so an oversized object is never downloaded."""
        from botocore.exceptions import ClientError

        from facepipe.errors import PayloadTooLarge
        from facepipe.stages.ingest import ObjectMissing

        extra = {"VersionId": obj.version_id} if obj.version_id else {}
        try:
            answer = self.s3.get_object(Bucket=obj.bucket, Key=obj.key, **extra)
        except ClientError as exc:
            if _code(exc) == "NoSuchVersion" or absent(self.s3, obj.bucket, obj.key, exc):
                raise ObjectMissing(
                    "the object was deleted before it could be processed; upload it again"
                ) from exc
            raise
        body = answer["Body"]
        try:
            size = int(answer.get("ContentLength", 0))
            if size > max_bytes:
                raise PayloadTooLarge(
                    f"the object is {size} bytes, over the limit of {max_bytes} "
                    "(FACEPIPE_MAX_OBJECT_BYTES): upload a smaller photo"
                )
            return bytes(body.read())
        finally:
            body.close()


class S3ResultCopies:
    """A result sink that first writes each S3-ingress result (one with an ``output_key``) to
    that key as JSON, then hands it to ``sink`` (the response queue). Inside
    :class:`~facepipe.stages.ledger.OncePerRequest` the copy is written once per request_id, and a
    failed send releases the claim, so the retry writes it again (same key: idempotent).

    Only keys under ``output_prefix`` are written: a task cannot point the function anywhere
    else (its IAM role allows ``output/*`` only, too); the result still reaches the queue.
    """

    def __init__(self, sink: Any, s3: Any, bucket: str, output_prefix: str) -> None:
        self.sink = sink
        self.s3 = s3
        self.bucket = bucket
        self.output_prefix = output_prefix

    def send_result(self, result: Any) -> Any:
        key = result.output_key
        if key and key.startswith(self.output_prefix) and key.endswith(".json"):
            self.s3.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=result.to_json().encode(),
                ContentType="application/json",
            )
        elif key:
            _log.warning(
                "output_key %s is not under %s: result not written", key, self.output_prefix
            )
        return self.sink.send_result(result)  # the sink's answer (see ResultSink)

"""S3 ingress from the client's side: upload a batch of photos, wait for their results, one CSV.

A batch is a key prefix: ``facepipe upload`` puts every photo at
``<ingest prefix><batch>/<path>`` (a folder's photos keep their path inside it, a file its name),
and the pipeline writes each one's result to ``<output prefix><batch>/<path>.json``. The
request_id a photo gets is derived from its bucket, key and version
(:meth:`~facepipe.stages.ingest.S3Object.request_id`), so the uploader knows it in advance and
never mistakes an older upload's result at the same key for the new one.

The CSV (:func:`write_csv`) has one row per face, and one row with empty face columns for a photo
with no face or an error: ``key, face_index, box, name, similarity, status, error``; ``box`` is
``x1 y1 x2 y2`` in the photo's (EXIF-upright) pixels.
"""

from __future__ import annotations

import csv
import io
import mimetypes
import re
import secrets
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlparse

from pydantic import ValidationError

from facepipe.client.sources import SourceError, expand_inputs
from facepipe.messages import Result
from facepipe.stages.ingest import S3Object, output_key_for

CSV_COLUMNS = ("key", "face_index", "box", "name", "similarity", "status", "error")
MULTIPART_BYTES = 8 * 1024 * 1024  # above this a photo goes up in 8 MiB parts, in parallel
_BATCH_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def new_batch() -> str:
    """``20260101-120000-3f9a``: sorts by time, unique enough for one person's uploads."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def check_batch(batch: str) -> str:
    if not _BATCH_RE.fullmatch(batch):
        raise SourceError(
            f"--batch {batch!r}: use 1-64 letters, digits and ._- starting with a letter or digit"
        )
    return batch


@dataclass(frozen=True)
class Upload:
    """One photo to upload: its file and its key."""

    path: Path
    key: str


def plan_uploads(inputs: Iterable[str], ingest_prefix: str, batch: str) -> list[Upload]:
    """Keys for the inputs: a folder's images keep their path inside the folder, a file (or a
    glob's match) its name. Two photos with one key are refused before anything is uploaded."""
    uploads: dict[str, Upload] = {}
    base = f"{ingest_prefix}{check_batch(batch)}/"
    for text in inputs:
        root = Path(text).expanduser()
        for path in expand_inputs([text]):
            name = path.relative_to(root).as_posix() if root.is_dir() else path.name
            key = base + name
            if key in uploads and uploads[key].path.resolve() != path.resolve():
                raise SourceError(
                    f"{path} and {uploads[key].path} would both be uploaded as {key}: rename one, "
                    "or upload them in two batches"
                )
            uploads.setdefault(key, Upload(path, key))
    if not uploads:
        raise SourceError("nothing to upload")
    return list(uploads.values())


@dataclass(frozen=True)
class Uploaded:
    """A photo in the bucket: the object version and the request_id the pipeline gives it."""

    upload: Upload
    obj: S3Object
    output_key: str

    @property
    def request_id(self) -> str:
        return self.obj.request_id()


def upload_all(
    s3: Any,
    bucket: str,
    uploads: Sequence[Upload],
    *,
    output_of: Callable[[str], str],
    concurrency: int = 4,
    on_bytes: Callable[[int], None] | None = None,
) -> tuple[list[Uploaded], dict[str, str]]:
    """Upload every photo, ``concurrency`` at a time; each large one in parallel parts (boto3's
    managed transfer). → (the uploaded photos in input order, failed key → reason)."""
    from boto3.s3.transfer import TransferConfig
    from botocore.exceptions import BotoCoreError, ClientError

    config = TransferConfig(
        multipart_threshold=MULTIPART_BYTES,
        multipart_chunksize=MULTIPART_BYTES,
        max_concurrency=4,
    )

    def one(upload: Upload) -> Uploaded:
        content_type = mimetypes.guess_type(upload.path.name)[0] or "application/octet-stream"
        s3.upload_file(
            str(upload.path),
            bucket,
            upload.key,
            Config=config,
            Callback=on_bytes,
            ExtraArgs={"ContentType": content_type},
        )
        head = s3.head_object(Bucket=bucket, Key=upload.key)
        version = head.get("VersionId")
        obj = S3Object(
            bucket,
            upload.key,
            etag=str(head.get("ETag", "")).strip('"'),
            version_id=None if version in (None, "null") else str(version),
            size=int(head.get("ContentLength", 0)),
        )
        return Uploaded(upload, obj, output_of(upload.key))

    done: list[Uploaded] = []
    failed: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        futures = [(u, pool.submit(one, u)) for u in uploads]
        for upload, future in futures:
            try:
                done.append(future.result())
            except (BotoCoreError, ClientError, OSError) as exc:
                failed[upload.key] = f"upload failed: {exc}"
    return done, failed


def wait_for_results(
    s3: Any,
    bucket: str,
    photos: Sequence[Uploaded],
    *,
    timeout: float,
    poll_s: float = 1.0,
    on_result: Callable[[Uploaded, Result], None] | None = None,
) -> dict[str, Result]:
    """Wait until every photo's ``output_key`` holds the result of *its* request_id (an older
    upload's result at the same key does not count), or ``timeout`` seconds pass.
    → request_id → result, for the photos that finished."""
    pending = {p.output_key: p for p in photos}
    prefixes = sorted({p.output_key.rsplit("/", 1)[0] + "/" for p in photos})
    found: dict[str, Result] = {}
    deadline = time.monotonic() + timeout
    while pending:
        present = {key for prefix in prefixes for key in _keys(s3, bucket, prefix)}
        for key in sorted(present & set(pending)):
            result = _read_result(s3, bucket, key)
            photo = pending[key]
            if result is not None and result.request_id == photo.request_id:
                found[photo.request_id] = result
                del pending[key]
                if on_result is not None:
                    on_result(photo, result)
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
    return found


def _keys(s3: Any, bucket: str, prefix: str) -> Iterator[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    for page in pages:
        for obj in page.get("Contents", []):
            yield str(obj["Key"])


def _read_result(s3: Any, bucket: str, key: str) -> Result | None:
    """The result at ``key``; ``None`` when it is gone or not a result (reported by callers)."""
    from botocore.exceptions import ClientError

    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError:
        return None
    try:
        return Result.model_validate_json(body)
    except ValidationError:
        return None


def read_results(
    s3: Any, bucket: str, prefix: str, *, skipped: list[str] | None = None
) -> list[Result]:
    """Every result object (``*.json``) under ``prefix``, in key order; keys that hold no
    result are appended to ``skipped``."""
    results = []
    for key in sorted(_keys(s3, bucket, prefix)):
        if not key.endswith(".json"):
            continue
        result = _read_result(s3, bucket, key)
        if result is None:
            if skipped is not None:
                skipped.append(key)
            continue
        results.append(result)
    return results


def csv_rows(results: Iterable[Result]) -> Iterator[dict[str, str]]:
    """One row per face; a photo without faces (``no_face``, ``error``) gets one row with empty
    face columns, so every photo appears."""
    for result in results:
        error = f"{result.error.code}: {result.error.message}" if result.error else ""
        base = {"key": result.filename, "status": result.status, "error": error}
        if not result.faces:
            yield {**base, "face_index": "", "box": "", "name": "", "similarity": ""}
        for index, face in enumerate(result.faces):
            similarity = "" if face.similarity is None else f"{face.similarity:.6g}"
            yield {
                **base,
                "face_index": str(index),
                "box": " ".join(f"{v:g}" for v in face.box),
                "name": face.name,
                "similarity": similarity,
            }


def write_csv(results: Iterable[Result], stream: TextIO) -> int:
    """Write the CSV (header first) → the number of rows."""
    writer = csv.DictWriter(stream, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    rows = 0
    for row in csv_rows(results):
        writer.writerow(row)
        rows += 1
    return rows


def save_csv(results: Iterable[Result], out: str, s3: Any = None) -> int:
    """The CSV to ``out``: a local path, ``-`` (stdout) or ``s3://bucket/key`` (with ``s3``).
    → the number of rows."""
    buffer = io.StringIO()
    rows = write_csv(results, buffer)
    if out == "-":
        sys.stdout.write(buffer.getvalue())
    elif out.startswith("s3://"):
        parsed = urlparse(out)
        if s3 is None or not parsed.netloc or not parsed.path.strip("/"):
            raise SourceError(f"{out}: name the object as s3://bucket/key.csv")
        s3.put_object(
            Bucket=parsed.netloc,
            Key=parsed.path.lstrip("/"),
            Body=buffer.getvalue().encode(),
            ContentType="text/csv",
        )
    else:
        path = Path(out).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(buffer.getvalue(), encoding="utf-8")
    return rows


def outputs_for(ingest_prefix: str, output_prefix: str) -> Callable[[str], str]:
    """The function from an uploaded key to its result's key."""
    return lambda key: output_key_for(key, ingest_prefix, output_prefix)


def by_key(photos: Iterable[Uploaded], results: Mapping[str, Result]) -> list[Result]:
    """The finished photos' results in upload order."""
    return [results[p.request_id] for p in photos if p.request_id in results]

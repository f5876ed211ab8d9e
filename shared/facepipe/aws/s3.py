"""S3: claim-check payloads and reading objects by ``s3://`` URI."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlparse


class S3PayloadStore:
    """Objects under ``prefix`` of ``bucket``; keys are ``<prefix><request_id>/<name>``."""

    def __init__(self, s3: Any, bucket: str, prefix: str) -> None:
        self.s3 = s3
        self.bucket = bucket
        self.prefix = prefix

    def key_for(self, request_id: str, name: str) -> str:
        return f"{self.prefix}{request_id}/{name}"

    def put(self, key: str, data: bytes, content_type: str = "application/json") -> None:
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)

    def get(self, key: str) -> bytes:
        return bytes(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())

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

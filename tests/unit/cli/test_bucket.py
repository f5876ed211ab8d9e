"""``facepipe bucket empty``: a versioned bucket (as the stack's data bucket is) emptied of every
version and delete marker, so it can be deleted; against a moto server."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator

import boto3
import pytest
from moto.server import ThreadedMotoServer

from tests.conftest import run_facepipe


@pytest.fixture
def endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    with contextlib.redirect_stdout(io.StringIO()):
        server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def test_a_versioned_bucket_is_emptied_and_deleted_only_with_yes(endpoint: str) -> None:
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket="data")
    s3.put_bucket_versioning(Bucket="data", VersioningConfiguration={"Status": "Enabled"})
    for n in range(3):
        s3.put_object(Bucket="data", Key="gallery/gallery.pt", Body=f"v{n}".encode())
    s3.put_object(Bucket="data", Key="input/a.jpg", Body=b"x")
    s3.delete_object(Bucket="data", Key="input/a.jpg")  # a delete marker over its version
    with pytest.raises(Exception, match="BucketNotEmpty"):
        s3.delete_bucket(Bucket="data")  # what `aws s3 rm --recursive` leaves: still versions
    flags = ("--endpoint-url", endpoint, "--region", "us-east-1")

    counted = run_facepipe("bucket", "empty", "data", *flags)
    assert counted.returncode == 1
    assert "s3://data: 5 object version(s) and delete marker(s); run again with --yes" in (
        counted.stderr
    )
    emptied = run_facepipe("bucket", "empty", "data", "--yes", "--delete", *flags)
    assert emptied.returncode == 0, emptied.stderr
    assert "deleted 5 object version(s)" in emptied.stderr and "bucket deleted" in emptied.stderr
    assert "data" not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert run_facepipe("bucket", "empty", *flags).returncode == 2  # which bucket?

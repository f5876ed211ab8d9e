"""The managed gallery in the template's versioned bucket (moto): the real recognition handler
picks up a new gallery version without a redeploy, keeps a good gallery over a broken one, and
``facepipe gallery remove`` leaves nothing of a person in any object version."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from facepipe.app.stores import open_gallery_store
from facepipe.aws.s3 import S3Objects
from facepipe.cli.main import main
from facepipe.errors import GalleryError
from facepipe.identity.gallery import Gallery
from facepipe.local.emulator import LocalAws
from facepipe.messages import FaceTask
from tests.conftest import ROOT, SAMPLES
from tests.integration.test_handlers import load_handler, recognize, results

REFRESH = 30  # FACEPIPE_GALLERY_REFRESH_SECONDS of the function under test

pytestmark = pytest.mark.usefixtures("own_observability")


@pytest.fixture(scope="module")
def aws() -> Iterator[LocalAws]:
    with LocalAws(stack="facepipe-gallery") as local:
        yield local


@pytest.fixture
def bucket(aws: LocalAws) -> Iterator[str]:
    name = aws.outputs["BucketName"]
    S3Objects(aws.s3, name).erase_prefix("gallery/")
    yield name
    S3Objects(aws.s3, name).erase_prefix("gallery/")


def _task() -> dict[str, str]:
    """The shipped task under a new request_id each time: the result ledger answers a
    request_id once, and every look at the gallery here is a new request."""
    event = json.loads((ROOT / "events" / "recognition-sqs.json").read_text())
    body = json.loads(event["Records"][0]["body"]) | {"request_id": f"hot-{uuid.uuid4().hex}"}
    return {"Body": json.dumps(body), "MessageId": uuid.uuid4().hex}


def _face_embedding(body: str) -> np.ndarray:
    from facepipe.identity.facenet import FacenetEmbedder
    from facepipe.stages.recognize import frame_from_task

    task = FaceTask.model_validate_json(body)
    face = frame_from_task(task, task.faces).faces[0]
    return FacenetEmbedder(weights="random:0", device="cpu").embed([face.crop])[0]


def _named(aws: LocalAws, handler: object) -> tuple[str, list[str]]:
    assert recognize(handler, [_task()]) == {"batchItemFailures": []}  # type: ignore[arg-type]
    (result,) = results(aws).values()
    face = result.faces[0]
    return face.name, [m.name for m in face.matches]


def test_recognition_picks_up_a_new_gallery_version_without_redeploy(
    aws: LocalAws, bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    task = _task()
    own = _face_embedding(task["Body"])
    stranger = np.random.default_rng(0).normal(size=512)
    store = open_gallery_store(f"s3://{bucket}/gallery/gallery.pt", s3=aws.s3)
    store.save(Gallery(["person-a", "stranger"], np.stack([own, stranger]), "vggface2"))
    handler = load_handler(
        aws, "RecognitionFunction", FACEPIPE_GALLERY_REFRESH_SECONDS=str(REFRESH)
    )
    source = handler.SERVICE.recognition.source
    assert source.refresh_seconds == REFRESH
    now = [time.monotonic()]  # the function's clock, moved by the test: no sleeping
    source.clock = lambda: now[0]
    source._checked = now[0]  # the init's look at the gallery happens "now" on that clock
    assert _named(aws, handler) == ("person-a", ["person-a", "stranger"])

    # v2: person-a removed, person-b added (the same face, so it is named person-b).
    store.save(Gallery(["person-b", "stranger"], np.stack([own, stranger]), "vggface2"))
    now[0] += REFRESH - 1
    assert _named(aws, handler)[0] == "person-a"  # not looked at before the interval
    now[0] += 1
    assert _named(aws, handler) == ("person-b", ["person-b", "stranger"])

    # A corrupt object (no matching manifest) never replaces the good gallery.
    aws.s3.put_object(Bucket=bucket, Key="gallery/gallery.pt", Body=b"not a gallery")
    now[0] += REFRESH
    with caplog.at_level("WARNING"):
        assert _named(aws, handler)[0] == "person-b"
    assert "keeping the loaded one" in caplog.text
    assert source.reloads == 1


def test_gallery_remove_leaves_no_trace_in_any_object_version(
    aws: LocalAws, bucket: str, tmp_path: Path
) -> None:
    uri = f"s3://{bucket}/gallery/gallery.pt"
    flags = ["--gallery", uri, "--endpoint-url", aws.endpoint_url, "--region", "us-east-1"]
    for person in ("barack-obama", "joe-biden"):  # two enrolments: two versions of everything
        shutil.copytree(SAMPLES / "gallery" / person, tmp_path / person / person)
        assert (
            main(["gallery", "enroll", str(tmp_path / person), *flags, "--weights", "random:0"])
            == 0
        )
    objects = S3Objects(aws.s3, bucket)
    keys = [v["Key"] for v in objects.versions("gallery/")]
    assert keys.count("gallery/gallery.pt") == 2
    assert any("/barack-obama/" in key for key in keys)

    assert main(["gallery", "remove", "barack-obama", *flags]) == 0

    versions = objects.versions("gallery/")
    assert not [v for v in versions if "barack-obama" in v["Key"]]
    assert [v["Key"] for v in versions].count("gallery/gallery.pt") == 1
    assert [v["Key"] for v in versions].count("gallery/gallery.pt.manifest.json") == 1
    store = open_gallery_store(uri, s3=aws.s3)
    assert store.load().names == ["joe-biden"]
    assert len(store.crops_of("joe-biden")) == 1
    for version in versions:  # no old bytes anywhere still hold the name
        body = aws.s3.get_object(Bucket=bucket, Key=version["Key"], VersionId=version["VersionId"])
        assert b"barack-obama" not in body["Body"].read()


def test_a_deleted_gallery_never_becomes_an_empty_one(
    aws: LocalAws, bucket: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: a deleted gallery object hot-reloaded as an empty gallery, and every face was
    ``unknown`` with status ``ok`` within a minute, no alarm. Now the function keeps the gallery
    it has and reports ``GalleryStale`` (alarmed) until a good version is back; a new execution
    environment refuses to start on a gallery that was deleted (its manifest is still there)."""
    from tests.integration.test_handlers import handler_metrics

    task = _task()
    own = _face_embedding(task["Body"])
    store = open_gallery_store(f"s3://{bucket}/gallery/gallery.pt", s3=aws.s3)
    store.save(Gallery(["person-a"], own[None, :], "vggface2"))
    handler = load_handler(aws, "RecognitionFunction", FACEPIPE_GALLERY_REFRESH_SECONDS="0")
    assert _named(aws, handler)[0] == "person-a"

    aws.s3.delete_object(Bucket=bucket, Key="gallery/gallery.pt")  # a delete marker
    capsys.readouterr()
    assert _named(aws, handler)[0] == "person-a"  # still named: the loaded gallery is kept
    stale = [b["GalleryStale"] for b in handler_metrics(capsys.readouterr().out)]
    assert stale == [[1.0]]
    assert "gone" in (handler.SERVICE.recognition.source.stale or "")
    with pytest.raises(GalleryError, match="gone"):  # a cold start now: refused, not empty
        load_handler(aws, "RecognitionFunction")

    store.save(Gallery(["person-b"], own[None, :], "vggface2"))  # a good version again
    assert _named(aws, handler)[0] == "person-b"
    stale = [b["GalleryStale"] for b in handler_metrics(capsys.readouterr().out)]
    assert stale == [[0.0]]

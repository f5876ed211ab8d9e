"""The LanceDB gallery and albums in the template's versioned bucket (moto on 127.0.0.1, LanceDB's
own S3 client pointed at it): the real recognition handler names faces from
``FACEPIPE_GALLERY=lancedb+s3://...`` and picks up a new table version, ``facepipe gallery
enroll|list|show|remove`` work on it, and erasure leaves no bytes of the person in any object
version; albums answer as the object-shard albums do."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("lancedb", reason="the vectors extra (lancedb) is not installed")
pytest.importorskip("lance", reason="the vectors extra (pylance) is not installed")

from facepipe.app.stores import open_albums, open_gallery_store
from facepipe.aws.s3 import S3Objects
from facepipe.cli.main import main
from facepipe.config import Settings
from facepipe.identity.albums import AlbumEntry, AlbumStore
from facepipe.identity.gallery import Gallery
from facepipe.identity.vector_store import LanceAlbumStore, LanceGallery
from facepipe.local.emulator import LocalAws
from tests.conftest import SAMPLES
from tests.integration.test_gallery_store_s3 import _face_embedding, _named, _task
from tests.integration.test_handlers import load_handler

PREFIX = "vectors/"

pytestmark = pytest.mark.usefixtures("own_observability")


@pytest.fixture(scope="module")
def aws() -> Iterator[LocalAws]:
    with LocalAws(stack="facepipe-vectors") as local:
        yield local


@pytest.fixture
def bucket(aws: LocalAws) -> Iterator[str]:
    name = aws.outputs["BucketName"]
    assert aws.s3.get_bucket_versioning(Bucket=name)["Status"] == "Enabled"
    S3Objects(aws.s3, name).erase_prefix(PREFIX)
    yield name
    S3Objects(aws.s3, name).erase_prefix(PREFIX)


def _settings(aws: LocalAws) -> Settings:
    return Settings.from_env(endpoint_url=aws.endpoint_url, region="us-east-1")


def _every_version(aws: LocalAws, bucket: str, prefix: str) -> Iterator[tuple[str, bytes]]:
    for version in S3Objects(aws.s3, bucket).versions(prefix):
        if version["Marker"]:
            continue
        body = aws.s3.get_object(Bucket=bucket, Key=version["Key"], VersionId=version["VersionId"])
        yield version["Key"], body["Body"].read()


def test_recognition_names_faces_from_a_lancedb_gallery_in_s3_and_reloads_it(
    aws: LocalAws, bucket: str
) -> None:
    uri = f"lancedb+s3://{bucket}/{PREFIX}people"
    task = _task()
    own = _face_embedding(task["Body"])
    stranger = np.random.default_rng(0).normal(size=512)
    store = open_gallery_store(uri, _settings(aws), aws.s3)
    store.add(Gallery(["person-a", "stranger"], np.stack([own, stranger]), "vggface2"))
    handler = load_handler(
        aws, "RecognitionFunction", FACEPIPE_GALLERY=uri, FACEPIPE_GALLERY_REFRESH_SECONDS="0"
    )
    source = handler.SERVICE.recognition.source
    assert isinstance(source.current(), LanceGallery)
    assert _named(aws, handler) == ("person-a", ["person-a", "stranger"])

    store.remove("person-a")  # a new table version, the old ones erased
    store.add(Gallery(["person-b"], own[None], "vggface2"))
    assert _named(aws, handler) == ("person-b", ["person-b", "stranger"])
    assert source.reloads == 1


def test_gallery_commands_on_lancedb_in_s3_and_erasure_in_every_object_version(
    aws: LocalAws, bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = f"lancedb+s3://{bucket}/{PREFIX}people"
    flags = ["--gallery", uri, "--endpoint-url", aws.endpoint_url, "--region", "us-east-1"]
    for person in ("barack-obama", "joe-biden"):  # two enrolments: two table versions
        shutil.copytree(SAMPLES / "gallery" / person, tmp_path / person / person)
        enrolled = main(
            ["gallery", "enroll", str(tmp_path / person), *flags, "--weights", "random:0"]
        )
        assert enrolled == 0
    capsys.readouterr()
    assert main(["gallery", "list", *flags]) == 0
    listed = capsys.readouterr()
    assert listed.out.split() == ["name", "photos", "barack-obama", "1", "joe-biden", "1"]
    assert f"2 people, 2 rows, embedder vggface2: {uri}" in listed.err
    assert main(["gallery", "show", "barack-obama", *flags]) == 0
    assert '"rows": 1' in capsys.readouterr().out
    holding = [key for key, body in _every_version(aws, bucket, PREFIX) if b"barack-obama" in body]
    assert any(key.endswith(".lance") for key in holding)  # the table's data files

    assert main(["gallery", "remove", "barack-obama", *flags]) == 0
    assert "removed barack-obama: 1 row(s), 1 crop object(s)" in capsys.readouterr().err
    assert [k for k, body in _every_version(aws, bucket, PREFIX) if b"barack-obama" in body] == []
    objects = S3Objects(aws.s3, bucket)
    assert not [v for v in objects.versions(PREFIX) if v["Marker"] or not v["IsLatest"]]
    store = open_gallery_store(uri, _settings(aws), aws.s3)
    assert store.people() == {"joe-biden": 1}
    assert len(store.crops_of("joe-biden")) == 1


def test_albums_in_s3_find_and_forget_as_the_object_shards_do(aws: LocalAws, bucket: str) -> None:
    rng = np.random.default_rng(3)
    people = rng.normal(size=(40, 128)).astype(np.float32)
    faces = people[np.arange(240) % 40] + 0.4 * rng.normal(size=(240, 128)).astype(np.float32)
    faces /= np.linalg.norm(faces, axis=1, keepdims=True)
    entries = [
        AlbumEntry(f"p{i // 2}.jpg", [i, i, i + 9, i + 9], faces[i], f"r{i // 2}")
        for i in range(240)
    ]
    lance = open_albums(f"lancedb+s3://{bucket}/{PREFIX}albums", aws.s3, _settings(aws))
    assert isinstance(lance, LanceAlbumStore)
    shards = AlbumStore(S3Objects(aws.s3, bucket), prefix=f"{PREFIX}shards/")
    for store in (lance, shards):
        store.add("trip", entries[:150], "dlib")
        store.add("trip", entries[150:], "dlib")
    assert lance.albums() == ["trip"]
    for query in people[:5] / np.linalg.norm(people[:5], axis=1, keepdims=True):
        want = shards.find("trip", query, threshold=1.0, embedder="dlib")
        got = lance.find("trip", query, threshold=1.0, embedder="dlib")
        assert [h.photo for h in got] == [h.photo for h in want] and got
        assert np.allclose([h.distance for h in got], [h.distance for h in want], atol=1e-5)
    gone = faces[:6]
    assert lance.forget(gone, 0.3) == shards.forget(gone, 0.3) == 6
    needles = [row.tobytes() for row in gone]
    prefix = f"{PREFIX}albums/"
    assert not [
        k for k, body in _every_version(aws, bucket, prefix) if any(n in body for n in needles)
    ]
    assert not [v for v in S3Objects(aws.s3, bucket).versions(prefix) if not v["IsLatest"]]


def test_concurrent_writers_to_one_album_lose_no_face(aws: LocalAws, bucket: str) -> None:
    """Recognition functions index batches into one album at once: each its own connection,
    every commit lands (LanceDB retries a commit that lost the race)."""
    import threading

    location = f"lancedb+s3://{bucket}/{PREFIX}albums"
    rng = np.random.default_rng(4)
    errors: list[BaseException] = []

    def writer(w: int) -> None:
        store = open_albums(location, aws.s3, _settings(aws))
        for i in range(3):
            entry = AlbumEntry(f"w{w}-{i}.jpg", [0, 0, 9, 9], rng.normal(size=8), f"r{w}-{i}")
            try:
                store.add("busy", [entry], "dlib")
            except BaseException as exc:  # reported below
                errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    store = open_albums(location, aws.s3, _settings(aws))
    assert isinstance(store, LanceAlbumStore)
    hits = store.find("busy", np.ones(8), threshold=2.0, embedder="dlib")
    assert len(hits) == 12

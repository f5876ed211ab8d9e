"""Albums in the template's versioned bucket (moto server): conditional reads and writes as S3
answers them, compaction that leaves no version of what it merged, warm searches that read two
objects, erasure from every version."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import numpy as np
import pytest

from facepipe.aws.s3 import S3Objects
from facepipe.identity.albums import AlbumStore
from facepipe.identity.objects import CountedObjects
from facepipe.local.emulator import LocalAws
from tests.unit.identity.test_album_compaction import PEOPLE, entry


@pytest.fixture(scope="module")
def aws() -> Iterator[LocalAws]:
    with LocalAws(stack="facepipe-albums") as local:
        yield local


@pytest.fixture
def objects(aws: LocalAws) -> Iterator[S3Objects]:
    objects = S3Objects(aws.s3, aws.outputs["BucketName"])
    objects.erase_prefix("albums/")
    yield objects
    objects.erase_prefix("albums/")


def test_conditional_reads_and_writes(objects: S3Objects) -> None:
    key = f"albums/t/{uuid.uuid4().hex}.json"
    assert objects.put_if(key, b"one", None)
    assert not objects.put_if(key, b"two", None)  # If-None-Match: * on an existing key
    first = objects.get_fresh(key, None)
    assert first.data == b"one" and first.tag
    assert objects.get_fresh(key, first.tag).changed is False  # 304
    assert objects.put_if(key, b"two", first.tag)
    assert not objects.put_if(key, b"three", first.tag)  # stale ETag: 412
    second = objects.get_fresh(key, first.tag)
    assert second.changed and second.data == b"two"
    assert objects.get_fresh(f"albums/t/{uuid.uuid4().hex}", None).exists is False


def test_compaction_and_search_on_s3(objects: S3Objects) -> None:
    counted = CountedObjects(objects)
    store = AlbumStore(counted, compact_every=4)
    for i in range(13):
        store.add("trip", [entry(i, person=2 if i % 3 == 0 else 4)], "dlib")
    assert store.segments("trip")
    versions = objects.versions("albums/trip/shards/")
    live = set(store.shards("trip"))
    assert {v["Key"] for v in versions} == live  # merged shards: no version, no delete marker
    reader = AlbumStore(counted)
    hits = reader.find("trip", PEOPLE[2], threshold=0.6, embedder="dlib")
    assert sorted(h.photo for h in hits) == sorted(f"p{i}.jpg" for i in range(0, 13, 3))
    counted.reset()
    assert reader.find("trip", PEOPLE[2], threshold=0.6, embedder="dlib") == hits
    assert counted.reads() == 2

    assert store.forget(PEOPLE[2][None], threshold=0.6) == 5
    assert reader.find("trip", PEOPLE[2], threshold=0.6, embedder="dlib") == []
    keys = {s.key for s in store.segments("trip")} | set(store.shards("trip"))
    left = {v["Key"] for v in objects.versions("albums/trip/") if v["Key"].endswith(".npz")}
    assert left == keys  # no older version of any part holds the person
    rows = np.concatenate([reader._parts[k].rows() for k in keys])
    assert (rows @ PEOPLE[2]).max() < 0.8

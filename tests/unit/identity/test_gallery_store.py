"""The managed gallery in a local folder: manifest, checksum, crops, erasure, and hot reload."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from facepipe.app.stores import open_gallery_store
from facepipe.errors import GalleryError
from facepipe.identity.gallery import Gallery
from facepipe.identity.gallery_store import check_person_name
from facepipe.stages.recognize import GallerySource


def _gallery(*names: str, embedder: str = "vggface2", seed: int = 0) -> Gallery:
    rng = np.random.default_rng(seed)
    return Gallery(list(names), rng.normal(size=(len(names), 512)), embedder)


@pytest.mark.parametrize("suffix", [".pt", ".npz"])
def test_save_writes_object_manifest_and_crops(tmp_path: Path, suffix: str) -> None:
    store = open_gallery_store(str(tmp_path / f"gallery{suffix}"))
    key = store.crop_key("ann", "ab" * 32)
    manifest = store.save(_gallery("ann", "bob", "ann"), {key: b"png bytes"})
    assert (manifest.count, manifest.people, manifest.dimension) == (3, 2, 512)
    on_disk = json.loads((tmp_path / f"gallery{suffix}.manifest.json").read_text())
    assert on_disk["sha256"] == manifest.sha256
    assert set(on_disk) == {
        "format",
        "embedder",
        "dimension",
        "count",
        "people",
        "sha256",
        "updated_at",
    }
    assert (tmp_path / "crops" / "ann" / f"{'ab' * 32}.png").read_bytes() == b"png bytes"
    loaded = store.load()
    assert loaded.names == ["ann", "bob", "ann"]
    assert loaded.embedder == "vggface2"  # from the manifest when the .pt format cannot say
    assert store.crops_of("ann") == [key]


def test_a_gallery_that_does_not_match_its_manifest_is_refused(tmp_path: Path) -> None:
    store = open_gallery_store(str(tmp_path / "gallery.pt"))
    store.save(_gallery("ann"))
    (tmp_path / "gallery.pt").write_bytes(_gallery("mallory").to_pt_bytes())
    with pytest.raises(GalleryError, match="does not match its manifest"):
        store.load(attempts=1)


def test_a_gallery_without_manifest_loads_unchecked_and_none_is_empty(tmp_path: Path) -> None:
    (tmp_path / "data.pt").write_bytes(_gallery("ann").to_pt_bytes())
    assert open_gallery_store(str(tmp_path / "data.pt")).load().names == ["ann"]
    assert len(open_gallery_store(str(tmp_path / "none.pt")).load()) == 0


def test_remove_erases_rows_and_crops(tmp_path: Path) -> None:
    store = open_gallery_store(str(tmp_path / "gallery.npz"))
    crops = {store.crop_key("ann", "a" * 64): b"1", store.crop_key("bob", "b" * 64): b"2"}
    store.save(_gallery("ann", "bob", "ann"), crops)
    removal = store.remove("ann")
    assert (removal.rows, removal.crops) == (2, 1)
    assert store.load().names == ["bob"]
    assert store.crops_of("ann") == []
    assert not (tmp_path / "crops" / "ann").exists()
    assert store.crops_of("bob") == [store.crop_key("bob", "b" * 64)]
    with pytest.raises(GalleryError, match="not in"):
        store.remove("ann")


@pytest.mark.parametrize("name", ["", "..", "a/b", "a\\b", "tab\there"])
def test_names_that_cannot_be_key_parts_are_refused(name: str) -> None:
    with pytest.raises(GalleryError, match="name"):
        check_person_name(name)


class FakeLoader:
    def __init__(self, gallery: Gallery) -> None:
        self.gallery: Gallery | Exception = gallery
        self.version = 1
        self.loads = 0

    def tag(self) -> str:
        return str(self.version)

    def load(self, *, missing_ok: bool = True) -> Gallery:
        self.loads += 1
        if isinstance(self.gallery, Exception):
            raise self.gallery
        return self.gallery

    def publish(self, gallery: Gallery | Exception) -> None:
        self.gallery = gallery
        self.version += 1


def test_source_reloads_a_new_version_after_the_refresh_interval() -> None:
    now = [0.0]
    loader = FakeLoader(_gallery("ann"))
    source = GallerySource(loader, 60, clock=lambda: now[0])
    loader.publish(_gallery("bob"))
    now[0] = 59.0
    assert source.current().names == ["ann"]  # not looked at before the interval
    now[0] = 60.0
    assert source.current().names == ["bob"]
    now[0] = 200.0
    assert source.current().names == ["bob"]
    assert loader.loads == 2  # an unchanged tag is not reloaded


def test_a_broken_new_version_never_replaces_a_good_one() -> None:
    now = [0.0]
    loader = FakeLoader(_gallery("ann"))
    source = GallerySource(loader, 0, clock=lambda: now[0])
    loader.publish(GalleryError("checksum mismatch"))
    assert source.current().names == ["ann"]
    assert source.current().names == ["ann"]
    assert loader.loads == 2  # a refused version is tried once
    loader.publish(OSError("network"))
    assert source.current().names == ["ann"]
    assert source.current().names == ["ann"]
    assert loader.loads == 4  # a failed read is tried again
    assert source.stale is not None and "network" in source.stale
    loader.publish(_gallery("bob"))
    assert source.current().names == ["bob"]
    assert source.stale is None


def test_source_applies_its_check_to_new_versions() -> None:
    def only_vggface2(gallery: Gallery) -> None:
        if gallery.embedder != "vggface2":
            raise GalleryError("another embedder")

    loader = FakeLoader(_gallery("ann"))
    source = GallerySource(loader, 0, check=only_vggface2)
    loader.publish(_gallery("bob", embedder="dlib"))
    assert source.current().names == ["ann"]


class _DeniedS3:
    """S3 as a role allowed to list only some prefixes sees it: a missing key is a 403."""

    def __init__(self, listed: list[str]) -> None:
        self.listed = listed

    def head_object(self, **_: object) -> None:
        from botocore.exceptions import ClientError

        raise ClientError({"Error": {"Code": "403", "Message": "Forbidden"}}, "HeadObject")

    def get_object(self, **_: object) -> None:
        from botocore.exceptions import ClientError

        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "Denied"}}, "GetObject")

    def list_objects_v2(self, Bucket: str, Prefix: str, MaxKeys: int) -> dict[str, object]:  # noqa: N803
        return {"Contents": [{"Key": k} for k in self.listed if k.startswith(Prefix)][:MaxKeys]}


def test_a_403_for_a_key_not_listed_is_a_missing_object() -> None:
    """The functions may list only the prefixes they read, so S3 may answer a missing gallery
    with 403: listing its key tells a fresh stack (not there) from access really denied."""
    from botocore.exceptions import ClientError

    from facepipe.aws.s3 import S3Objects

    assert S3Objects(_DeniedS3([]), "b").tag("gallery/gallery.pt") is None
    assert (
        S3Objects(_DeniedS3(["gallery/gallery.pt.manifest.json"]), "b").tag("gallery/gallery.pt")
        is None
    )
    with pytest.raises(ClientError):  # it is there: the 403 is a real one
        S3Objects(_DeniedS3(["gallery/gallery.pt"]), "b").tag("gallery/gallery.pt")


def test_a_claim_check_gone_under_a_confined_listing_is_payload_missing() -> None:
    """Recognition may list payloads/ only under its s3:prefix condition: a claim check that
    is gone can come back as 403, and is still the request's payload_missing result."""
    from botocore.exceptions import ClientError

    from facepipe.aws.s3 import S3PayloadStore
    from facepipe.errors import PayloadMissing

    with pytest.raises(PayloadMissing):
        S3PayloadStore(_DeniedS3([]), "b", "payloads/").get("payloads/r1/x.json")
    with pytest.raises(ClientError):  # it is there: access is really denied, retried
        S3PayloadStore(_DeniedS3(["payloads/r1/x.json"]), "b", "payloads/").get(
            "payloads/r1/x.json"
        )

"""Album search through the Function URL API (what deployed users get without the CLI), on the
local stack with the real offline embedder (dlib) and the shipped public-domain samples."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest

from facepipe.config import Settings
from facepipe.local.stack import LocalStack
from facepipe.messages import Result
from tests.conftest import SAMPLES, run_facepipe
from tests.e2e.conftest import collect, post_json

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    settings = Settings.from_env({}, embedder="dlib")
    with LocalStack(settings, runtime="inprocess", stack="facepipe-album-api") as local:
        yield local


def frame(path: str, request_id: str, album: dict[str, str]) -> dict[str, Any]:
    content = base64.b64encode((SAMPLES / path).read_bytes()).decode()
    return {
        "request_id": request_id,
        "filename": path.split("/")[-1],
        "content": content,
        "album": album,
    }


def results(stack: LocalStack, ids: list[str]) -> dict[str, Result]:
    info = stack.info()
    got, extra = collect(stack.aws.sqs, info["response_queue_url"], ids)
    assert extra == []
    assert all(len(v) == 1 for v in got.values()), got
    return {k: v[0] for k, v in got.items()}


def test_index_then_find_by_selfie(stack: LocalStack) -> None:
    url = stack.info()["function_url"]
    index = {"name": "trip", "mode": "index"}
    frames = [
        frame("frames/biden-west-wing.jpg", "ix-1", index),
        frame("frames/obama-and-biden.jpg", "ix-2", index),
        frame("astronaut.jpg", "ix-3", index),
        frame("rocket.jpg", "ix-4", index),
    ]
    status, _ = post_json(url, {"frames": frames})
    assert status == 202
    indexed = results(stack, ["ix-1", "ix-2", "ix-3", "ix-4"])
    assert [indexed[i].album.indexed for i in ("ix-1", "ix-2", "ix-3", "ix-4")] == [1, 2, 1, 0]
    assert indexed["ix-4"].status == "no_face"
    assert all(f.embedding is None for r in indexed.values() for f in r.faces)

    find = {"name": "trip", "mode": "find"}
    selfies = [
        frame("gallery/joe-biden/official-portrait-2013.jpg", "find-biden", find),
        frame("gallery/barack-obama/official-portrait-2012.jpg", "find-obama", find),
        frame("rocket.jpg", "find-nobody", find),
    ]
    status, _ = post_json(url, {"frames": selfies})
    assert status == 202
    found = results(stack, ["find-biden", "find-obama", "find-nobody"])
    biden = found["find-biden"].album
    assert biden is not None
    assert biden.mode == "find"
    assert [m.photo for m in biden.matches or []] in (
        ["biden-west-wing.jpg", "obama-and-biden.jpg"],
        ["obama-and-biden.jpg", "biden-west-wing.jpg"],
    )
    obama = found["find-obama"].album
    assert obama is not None
    assert [m.photo for m in obama.matches or []] == ["obama-and-biden.jpg"]
    # The box is Obama's (left half of the 800 px frame), not Biden's.
    assert obama.matches[0].box[2] < 400  # type: ignore[index]
    assert found["find-nobody"].status == "no_face"
    assert found["find-nobody"].album.matches == []  # type: ignore[union-attr]


def test_bad_album_name_is_a_400(stack: LocalStack) -> None:
    url = stack.info()["function_url"]
    status, body = post_json(url, frame("astronaut.jpg", "bad", {"name": "../x", "mode": "index"}))
    assert status == 400
    assert "album" in body["message"]


def test_cli_indexes_and_finds_through_the_stack(stack: LocalStack) -> None:
    """``facepipe album index/find --local-info``: the photos go through the stack's Function
    URL (the same path a deployed stack takes), and the album lives in the stack's bucket."""
    info = json.dumps(stack.info())
    where = ("--local-info", info, "--poll-timeout", "120")

    proc = run_facepipe("album", "index", "cli-trip", str(SAMPLES / "frames"), *where)
    assert proc.returncode == 0, proc.stderr
    assert "indexed 3 face(s) of 2 photo(s)" in proc.stderr
    keys = stack.aws.s3.list_objects_v2(Bucket=stack.info()["bucket"], Prefix="albums/cli-trip/")
    assert [k["Key"] for k in keys.get("Contents", [])], "no shard in the stack's bucket"

    selfie = SAMPLES / "gallery/barack-obama/official-portrait-2012.jpg"
    proc = run_facepipe("album", "find", "cli-trip", str(selfie), *where)
    assert proc.returncode == 0, proc.stderr
    hits = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [h["photo"] for h in hits] == ["obama-and-biden.jpg"]  # the photo id, as indexed
    assert hits[0]["box"][2] < 400  # Obama's face, not Biden's

    proc = run_facepipe("album", "find", "cli-trip", str(SAMPLES / "rocket.jpg"), *where)
    assert proc.returncode != 0
    assert "no face found" in proc.stderr

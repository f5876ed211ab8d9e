"""#19 item 1: every command recognises offline the way the demo does. On a machine without the
VGGFace2 file (``no_vggface2``), nothing asked for means the offline dlib embedder, announced; a
gallery or album made with dlib is matched with dlib without ``--embedder``; what cannot run says
so in one line that names the offline choice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import FACEPIPE, ROOT, SAMPLES, run_facepipe

pytestmark = pytest.mark.usefixtures("no_vggface2")
FALLBACK = "recognising with the offline dlib embedder"


@pytest.fixture(scope="module")
def dlib_gallery(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gallery") / "people.npz"
    proc = run_facepipe(
        "gallery", "enroll", str(SAMPLES / "gallery"), "--out", str(out), "--embedder", "dlib"
    )
    assert proc.returncode == 0, proc.stderr
    return out


def names(line: str) -> list[str]:
    return [f["name"] for f in sorted(json.loads(line)["faces"], key=lambda f: f["box"][0])]


def test_run_without_weights_recognises_with_dlib_and_says_so() -> None:
    proc = run_facepipe("run", str(SAMPLES / "astronaut.jpg"), "--json")
    assert proc.returncode == 0, proc.stderr
    assert FALLBACK in proc.stderr
    assert json.loads(proc.stdout)["models"]["embedder"] == "dlib"


def test_run_with_a_dlib_gallery_needs_no_embedder_flag(dlib_gallery: Path) -> None:
    frames = [
        SAMPLES / "frames" / "biden-west-wing.jpg",
        SAMPLES / "frames" / "obama-and-biden.jpg",
    ]
    proc = run_facepipe("run", *map(str, frames), "--gallery", str(dlib_gallery), "--json")
    assert proc.returncode == 0, proc.stderr
    assert "using the dlib embedder, which the gallery" in proc.stderr
    assert FALLBACK not in proc.stderr  # the gallery decided, not the fallback
    assert [names(line) for line in proc.stdout.splitlines()] == [
        ["joe-biden"],
        ["barack-obama", "joe-biden"],
    ]


def test_enrolling_more_into_a_dlib_gallery_needs_no_embedder_flag(
    dlib_gallery: Path, tmp_path: Path
) -> None:
    gallery = tmp_path / "people.npz"
    gallery.write_bytes(dlib_gallery.read_bytes())
    more = tmp_path / "more" / "astronaut"
    more.mkdir(parents=True)
    (more / "eileen.jpg").write_bytes((SAMPLES / "astronaut.jpg").read_bytes())
    proc = run_facepipe("gallery", "enroll", str(more.parent), "--out", str(gallery))
    assert proc.returncode == 0, proc.stderr
    listed = run_facepipe("gallery", "list", "--gallery", str(gallery))
    assert "astronaut" in listed.stdout and "embedder dlib" in listed.stdout + listed.stderr


def test_album_find_uses_the_albums_embedder(tmp_path: Path) -> None:
    albums = str(tmp_path / "albums")
    indexed = run_facepipe(
        "album", "index", "trip", str(SAMPLES / "frames"), "--albums", albums, "--embedder", "dlib"
    )
    assert indexed.returncode == 0, indexed.stderr
    selfie = str(SAMPLES / "gallery" / "joe-biden" / "official-portrait-2013.jpg")
    found = run_facepipe("album", "find", "trip", selfie, "--albums", albums)
    assert found.returncode == 0, found.stderr
    assert "using the dlib embedder, which album 'trip' was made with" in found.stderr
    photos = sorted(json.loads(line)["photo"] for line in found.stdout.splitlines())
    assert photos == ["biden-west-wing.jpg", "obama-and-biden.jpg"]


def test_invoke_recognition_without_weights_is_one_clear_line() -> None:
    proc = run_facepipe("invoke", "recognition", "events/recognition-sqs.json", timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("facepipe: error: the recognition function cannot start")
    assert "--embedder dlib" in lines[0] and "random:0" in lines[0]


@pytest.mark.slow
def test_local_up_without_weights_runs_with_dlib(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [*FACEPIPE, "local", "up", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "stack.log").open("w"),
        text=True,
        env=dict(os.environ),
    )
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline() or "{}")
        assert info.get("function_url"), (tmp_path / "stack.log").read_text()
        got = run_facepipe(
            "get", str(SAMPLES / "astronaut.jpg"), "--local-info", json.dumps(info), "--quiet"
        )
        assert got.returncode == 0, got.stderr
        assert json.loads(got.stdout)["models"]["embedder"] == "dlib"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    assert FALLBACK in (tmp_path / "stack.log").read_text()


def test_enrol_run_and_album_keep_their_files_in_the_data_dir_not_the_checkout() -> None:
    """#19 item 6: with no --out/--gallery/--albums, what the commands make goes to
    FACEPIPE_DATA_DIR (the user data directory by default), and `run` finds the gallery there."""
    data = Path(os.environ["FACEPIPE_DATA_DIR"])
    before = sorted(p.name for p in ROOT.iterdir())
    enrolled = run_facepipe("gallery", "enroll", str(SAMPLES / "gallery"))
    assert enrolled.returncode == 0, enrolled.stderr
    assert f"into {data / 'gallery.npz'}" in enrolled.stderr
    ran = run_facepipe("run", str(SAMPLES / "frames" / "biden-west-wing.jpg"), "--json")
    assert ran.returncode == 0, ran.stderr
    assert f"facepipe: gallery {data / 'gallery.npz'}" in ran.stderr
    assert names(ran.stdout) == ["joe-biden"]
    indexed = run_facepipe("album", "index", "trip", str(SAMPLES / "frames"))
    assert indexed.returncode == 0, indexed.stderr
    assert (data / "albums").is_dir()
    assert sorted(p.name for p in ROOT.iterdir()) == before


def test_enrolling_another_embedder_into_a_dlib_gallery_says_so_before_loading_it(
    dlib_gallery: Path, tmp_path: Path
) -> None:
    gallery = tmp_path / "people.npz"
    gallery.write_bytes(dlib_gallery.read_bytes())
    proc = run_facepipe(
        "gallery", "enroll", str(SAMPLES / "gallery"), "--out", str(gallery),
        "--embedder", "vggface2",
    )  # fmt: skip
    assert proc.returncode == 2
    assert "holds dlib embeddings; this enrolment would add vggface2 ones" in proc.stderr
    assert "weights are not available" not in proc.stderr

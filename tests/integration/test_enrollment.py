"""Enrolment from one folder per person, with the skipped photos and their reasons."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from facepipe.app.enrollment import enroll_folder
from facepipe.app.pipeline import LocalPipeline
from facepipe.config import Settings
from facepipe.identity.gallery import Gallery
from tests.conftest import SAMPLES, run_facepipe


@pytest.fixture(scope="module")
def pipeline() -> LocalPipeline:
    return LocalPipeline(Settings.from_env({}, weights="random:0", device="cpu"))


def test_enrol_skips_unusable_photos_with_reasons(pipeline: LocalPipeline, tmp_path: Path) -> None:
    shutil.copytree(SAMPLES / "gallery", tmp_path / "people")
    ann = tmp_path / "people" / "ann"
    ann.mkdir()
    shutil.copy(SAMPLES / "rocket.jpg", ann / "no-face.jpg")
    shutil.copy(SAMPLES / "frames" / "obama-and-biden.jpg", ann / "two-faces.jpg")
    (ann / "broken.jpg").write_bytes(b"not an image")
    (ann / "notes.txt").write_text("ignored: not an image suffix")
    report = enroll_folder(pipeline, tmp_path / "people")
    assert sorted(report.gallery.names) == ["barack-obama", "joe-biden"]
    reasons = {s.path.name: s.reason for s in report.skipped}
    assert reasons.keys() == {"no-face.jpg", "two-faces.jpg", "broken.jpg"}
    assert reasons["no-face.jpg"] == "no face"
    assert reasons["two-faces.jpg"].startswith("2 faces")
    assert reasons["broken.jpg"].startswith("unreadable")
    small = enroll_folder(pipeline, tmp_path / "people", min_face_px=1000)
    assert len(small.gallery) == 0
    assert all("px" in s.reason for s in small.skipped if s.path.parent.name != "ann")


def test_enrolled_person_is_named_on_the_same_photo(pipeline: LocalPipeline) -> None:
    report = enroll_folder(pipeline, SAMPLES / "gallery")
    pipeline.recognition.gallery = report.gallery
    try:
        result = pipeline.run_file(SAMPLES / "gallery" / "joe-biden" / "official-portrait-2013.jpg")
    finally:
        pipeline.recognition.gallery = Gallery()
    assert result.result == ["joe-biden"]


def test_cli_writes_a_loadable_gallery(tmp_path: Path) -> None:
    out = tmp_path / "g.npz"
    proc = _enroll(SAMPLES / "gallery", out)
    assert proc.returncode == 0, proc.stderr
    assert "enrolled 2 photo(s) of 2 people" in proc.stderr
    gallery = Gallery.from_bytes(out.read_bytes())
    assert sorted(gallery.names) == ["barack-obama", "joe-biden"]
    assert gallery.embedder == "vggface2"


FACEPIPE_BIN = str(Path(sys.executable).with_name("facepipe"))


def _enroll(folder: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            FACEPIPE_BIN,
            "gallery",
            "enroll",
            str(folder),
            "--out",
            str(out),
            "--weights",
            "random:0",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_an_enrolment_that_enrols_nothing_fails_and_says_why(tmp_path: Path) -> None:
    """A folder whose only photos are a group photo and a loose one enrols nobody: an error
    (exit 2) naming both reasons, and no gallery written; a re-run that finds every photo
    already in the gallery is no error."""
    folder = tmp_path / "people"
    (folder / "couple").mkdir(parents=True)
    shutil.copy(SAMPLES / "frames" / "obama-and-biden.jpg", folder / "couple" / "both.jpg")
    shutil.copy(SAMPLES / "astronaut.jpg", folder / "astronaut.jpg")  # whose is it?
    proc = _enroll(folder, tmp_path / "g.npz")
    assert proc.returncode == 2, proc.stderr
    assert "nothing enrolled from" in proc.stderr
    assert (
        "2 faces of similar size at [165, 14, 277, 159], [560, 34, 669, 181]: pick one with "
        in (proc.stderr)
    )
    assert f"astronaut.jpg: not in a person's folder: move it to {folder}/<name>/" in proc.stderr
    assert not (tmp_path / "g.npz").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "holds no photo in a person's folder" in _enroll(empty, tmp_path / "g.npz").stderr
    once, again = (_enroll(SAMPLES / "gallery", tmp_path / "s.npz") for _ in range(2))
    assert once.returncode == again.returncode == 0, again.stderr
    assert "already enrolled" in again.stderr


def _group(tmp_path: Path, name: str) -> Path:
    """A people folder whose one person has only the Obama-and-Biden photo (Obama left)."""
    folder = tmp_path / name / "joe"
    folder.mkdir(parents=True)
    shutil.copy(SAMPLES / "frames" / "obama-and-biden.jpg", folder / "group.jpg")
    return folder.parent


def _named(gallery: Path) -> list[str]:
    """Who the gallery names in the Biden-only photo (dlib: real recognition)."""
    frame = SAMPLES / "frames" / "biden-west-wing.jpg"
    proc = run_facepipe("run", str(frame), "--gallery", str(gallery), "--json")
    assert proc.returncode == 0, proc.stderr
    return [f["name"] for f in json.loads(proc.stdout)["faces"]]


@pytest.mark.parametrize(
    ("pick", "named"),
    [
        (["--face", "2"], ["joe"]),  # Biden is the right-hand face
        (["--face", "1"], ["unknown"]),  # Obama enrolled as "joe": Biden is not him
        (["--box", "550,30,680,190"], ["joe"]),
    ],
)
def test_a_face_of_a_group_photo_is_enrolled_when_picked(
    tmp_path: Path, pick: list[str], named: list[str]
) -> None:
    out = tmp_path / "g.npz"
    proc = run_facepipe(
        "gallery", "enroll", str(_group(tmp_path, "people")), "--out", str(out),
        "--embedder", "dlib", *pick,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "enrolled 1 photo(s) of 1 people" in proc.stderr
    assert _named(out) == named


def test_a_box_that_misses_every_face_says_where_they_are(tmp_path: Path) -> None:
    proc = run_facepipe(
        "gallery", "enroll", str(_group(tmp_path, "people")), "--out", str(tmp_path / "g.npz"),
        "--embedder", "dlib", "--box", "0,200,50,250",
    )  # fmt: skip
    assert proc.returncode == 2
    assert "no face at --box [0, 200, 50, 250] (faces at [165, 14, 277, 159]" in proc.stderr
    bad = run_facepipe("gallery", "enroll", "x", "--box", "5,5,1,1")
    assert bad.returncode == 2 and "expected X1,Y1,X2,Y2" in bad.stderr


def test_the_largest_face_of_a_portrait_with_someone_behind_is_enrolled_with_a_note(
    tmp_path: Path,
) -> None:
    """Biden's portrait with a small Obama pasted in a corner: Biden is enrolled, said so."""
    from PIL import Image

    portrait = Image.open(SAMPLES / "gallery" / "joe-biden" / "official-portrait-2013.jpg")
    small = Image.open(SAMPLES / "gallery" / "barack-obama" / "official-portrait-2012.jpg")
    small.thumbnail((portrait.width // 3, portrait.height // 3))
    portrait = portrait.convert("RGB")
    portrait.paste(small.convert("RGB"), (0, portrait.height - small.height))
    folder = tmp_path / "people" / "joe"
    folder.mkdir(parents=True)
    portrait.save(folder / "with-obama.jpg")
    out = tmp_path / "g.npz"
    proc = run_facepipe(
        "gallery", "enroll", str(folder.parent), "--out", str(out), "--embedder", "dlib"
    )
    assert proc.returncode == 0, proc.stderr
    assert "with-obama.jpg: 2 faces: enrolled the largest, at [" in proc.stderr
    assert _named(out) == ["joe"]


def test_stack_name_enrols_into_the_deployed_stacks_gallery(tmp_path: Path) -> None:
    """`--stack-name` (accepted and ignored before) finds the gallery in the stack's Outputs
    (GalleryUri) and writes it there: here a CloudFormation stack in a moto server."""
    import contextlib
    import io

    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    with contextlib.redirect_stdout(io.StringIO()):
        server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        cfn = boto3.client("cloudformation", endpoint_url=endpoint, region_name="eu-west-1")
        template = {
            "Resources": {"DataBucket": {"Type": "AWS::S3::Bucket"}},
            "Outputs": {
                "BucketName": {"Value": {"Ref": "DataBucket"}},
                "GalleryUri": {"Value": {"Fn::Sub": "s3://${DataBucket}/gallery/gallery.npz"}},
            },
        }
        cfn.create_stack(StackName="deployed", TemplateBody=json.dumps(template))
        flags = ("--stack-name", "deployed", "--endpoint-url", endpoint, "--region", "eu-west-1")
        enrolled = run_facepipe(
            "gallery", "enroll", str(SAMPLES / "gallery"), "--embedder", "dlib", *flags
        )
        assert enrolled.returncode == 0, enrolled.stderr
        bucket = cfn.describe_stacks(StackName="deployed")["Stacks"][0]["Outputs"]
        uri = next(o["OutputValue"] for o in bucket if o["OutputKey"] == "GalleryUri")
        assert f"into {uri}" in enrolled.stderr or uri in enrolled.stderr
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="eu-west-1")
        stored = s3.get_object(Bucket=uri.split("/")[2], Key="gallery/gallery.npz")["Body"].read()
        assert sorted(Gallery.from_bytes(stored).names) == ["barack-obama", "joe-biden"]
        old = run_facepipe("gallery", "list", "--stack-name", "nope", *flags[2:])
        assert old.returncode == 2 and "cannot read the outputs of stack nope" in old.stderr
    finally:  # moto's state is the process's: leave no bucket for the emulator's tests
        with contextlib.suppress(Exception):
            emptied = run_facepipe("bucket", "empty", "--yes", "--delete", *flags)
            assert emptied.returncode == 0, emptied.stderr
            cfn.delete_stack(StackName="deployed")
        server.stop()

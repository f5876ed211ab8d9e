"""``facepipe run``: one JSON result line per image, in order, as a user runs it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np

from facepipe.app.pipeline import LocalPipeline
from facepipe.config import Settings
from facepipe.identity.gallery import Gallery
from tests.conftest import SAMPLES, run_facepipe


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run_facepipe("run", *args)


def test_json_lines_in_order_with_embeddings_and_gallery(tmp_path: Path) -> None:
    # A gallery holding the astronaut's own embedding (same seeded weights) and a stranger.
    pipe = LocalPipeline(Settings.from_env({}, weights="random:0"))
    astronaut = pipe.run_file(SAMPLES / "astronaut.jpg", with_embeddings=True)
    emb = np.array(astronaut.faces[0].embedding, np.float32)
    stranger = np.random.default_rng(0).normal(size=512).astype(np.float32)
    gallery = tmp_path / "gallery.pt"
    gallery.write_bytes(Gallery(["eileen", "stranger"], np.stack([emb, stranger])).to_pt_bytes())
    images = [SAMPLES / "rocket.jpg", SAMPLES / "astronaut.jpg", tmp_path / "missing.jpg"]
    proc = run_cli(
        *map(str, images),
        "--json",
        "--embeddings",
        "--gallery",
        str(gallery),
        "--weights",
        "random:0",
    )
    assert proc.returncode == 1  # one image could not be read
    assert "random weights" in proc.stderr or "random:0" in proc.stderr
    lines = [json.loads(x) for x in proc.stdout.splitlines()]
    assert [x["filename"] for x in lines] == [str(p) for p in images]
    assert [x["status"] for x in lines] == ["no_face", "ok", "error"]
    face = lines[1]["faces"][0]
    assert face["name"] == "eileen"
    assert face["distance"] < 1e-3
    assert len(face["embedding"]) == 512
    assert np.allclose(face["embedding"], emb, atol=1e-5)
    assert lines[1]["weights"] == "random:0"
    assert lines[2]["error"]["code"] == "unreadable_file"


def test_plain_output_names_each_face_with_its_similarity(tmp_path: Path) -> None:
    """The readable line shows what the demo's table and the annotations show: the name and the
    similarity to that person (not MTCNN's detection probability), and the box."""
    pipe = LocalPipeline(Settings.from_env({}, weights="random:0"))
    astronaut = pipe.run_file(SAMPLES / "astronaut.jpg", with_embeddings=True)
    emb = np.array(astronaut.faces[0].embedding, np.float32)
    # a gallery person close to the face, but not the face itself: similarity well below 1
    near = emb + 0.6 * np.random.default_rng(1).normal(size=512).astype(np.float32) / 22.6
    gallery = tmp_path / "gallery.pt"
    gallery.write_bytes(Gallery(["eileen"], near[None, :]).to_pt_bytes())
    common = (str(SAMPLES / "astronaut.jpg"), "--gallery", str(gallery), "--weights", "random:0")
    face = json.loads(run_cli(*common, "--json").stdout)["faces"][0]
    assert face["similarity"] < 0.99 < face["probability"]
    proc = run_cli(*common, "--match-threshold", "2")
    assert proc.returncode == 0, proc.stderr
    box = [round(v) for v in face["box"]]
    assert proc.stdout.strip() == (
        f"{SAMPLES / 'astronaut.jpg'}: ok: eileen ({face['similarity']:.2f}) at {box}"
    )


def test_plain_output_and_env_settings(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("FACEPIPE_WEIGHTS", "random:0")
    monkeypatch.setenv("FACEPIPE_MIN_FACE_PROBABILITY", "1.0")  # nothing is that certain
    proc = run_cli(str(SAMPLES / "astronaut.jpg"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("no_face: no face")


def test_without_weights_the_error_says_how_to_get_them(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    proc = run_cli(str(SAMPLES / "astronaut.jpg"), "--weights", str(tmp_path / "none.pt"))
    assert proc.returncode == 2
    assert "FACEPIPE_WEIGHTS" in proc.stderr
    assert "Traceback" not in proc.stderr


def _clip(path: Path, images: list[Path], fps: float = 4.0) -> None:
    """A video of ``images`` (each one frame, resized to the first's size), MJPG in .avi."""
    import cv2

    first = cv2.imread(str(images[0]))
    size = (first.shape[1], first.shape[0])
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    for image in images:
        writer.write(cv2.resize(cv2.imread(str(image)), size))
    writer.release()


def test_folders_globs_and_videos_like_get_with_annotations(tmp_path: Path) -> None:
    """`run` takes what `get` takes: a folder (its images, sorted), a glob and a video (one
    result per sampled frame, with its frame number and time), one line each in input order;
    --annotate draws each."""
    video = tmp_path / "clip.avi"
    _clip(video, [SAMPLES / "astronaut.jpg", SAMPLES / "rocket.jpg"] * 2)  # 4 frames at 4 fps
    ann = tmp_path / "ann"
    proc = run_cli(
        str(SAMPLES / "frames"),
        str(SAMPLES / "r*.jpg"),
        str(video),
        str(tmp_path / "nothing-*.jpg"),
        "--json",
        "--weights",
        "random:0",
        "--video-fps",
        "2",
        "--run-id",
        "mine",
        "--annotate",
        str(ann),
    )
    assert proc.returncode == 1  # the glob that matches nothing
    lines = [json.loads(x) for x in proc.stdout.splitlines()]
    assert [x["request_id"] for x in lines] == [
        "mine.biden-west-wing",
        "mine.obama-and-biden",
        "mine.rocket",
        "mine.clip.f000000",
        "mine.clip.f000002",
        "mine.nothing",
    ]
    assert [x["status"] for x in lines] == ["ok", "ok", "no_face", "ok", "ok", "error"]
    assert [(x.get("frame"), x.get("time_s")) for x in lines[3:5]] == [(0, 0.0), (2, 0.5)]
    assert lines[3]["source"] == str(video)
    assert "matches no file" in lines[5]["error"]["message"]
    assert sorted(p.name for p in ann.iterdir()) == sorted(
        f"{x['request_id']}.jpg" for x in lines[:5]
    )

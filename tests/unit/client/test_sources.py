"""Client sources: files, folders, globs and videos → frames with readable, unique request_ids."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from facepipe.client import sources
from facepipe.client.sources import (
    RequestIds,
    SourceError,
    expand_inputs,
    iter_frames,
    iter_video,
    read_frame,
    sample_step,
)
from facepipe.messages import REQUEST_ID_PATTERN
from tests.conftest import SAMPLES

ID_RE = re.compile(REQUEST_ID_PATTERN)
VIDEO_FRAMES, VIDEO_FPS = 30, 10.0


def _write_png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((8, 8, 3), value, np.uint8))


@pytest.fixture
def photo_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    _write_png(folder / "b.png", 1)
    _write_png(folder / "a.png", 2)
    (folder / "a.JPG").write_bytes((SAMPLES / "astronaut.jpg").read_bytes())
    _write_png(folder / "sub" / "deep" / "c.webp", 3)
    (folder / "notes.txt").write_text("not an image")
    (folder / "sub" / "clip.avi").write_bytes(b"videos are not taken from folders")
    return folder


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 frames at 10 fps (MJPG in .avi), each showing its frame number as a grey level."""
    path = tmp_path_factory.mktemp("video") / "lobby cam.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), VIDEO_FPS, (64, 48))
    assert writer.isOpened()
    for n in range(VIDEO_FRAMES):
        image = np.full((48, 64, 3), n * 8, np.uint8)
        cv2.putText(image, str(n), (4, 40), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 2)
        writer.write(image)
    writer.release()
    return path


def _grey_level(jpeg: bytes) -> float:
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_GRAYSCALE)
    return float(np.median(image))


def test_a_folder_gives_its_images_recursively_sorted_and_skips_other_files(
    photo_folder: Path,
) -> None:
    frames = list(iter_frames([str(photo_folder)], run_id="run1"))

    assert [Path(f.source).relative_to(photo_folder).as_posix() for f in frames] == [
        "a.JPG",
        "a.png",
        "b.png",
        "sub/deep/c.webp",
    ]
    # a.JPG and a.png share the stem "a": the second gets a suffix so ids stay unique
    assert [f.request_id for f in frames] == ["run1.a", "run1.a-2", "run1.b", "run1.c"]
    assert [f.filename for f in frames] == ["a.JPG", "a.png", "b.png", "c.webp"]
    assert frames[0].data == (SAMPLES / "astronaut.jpg").read_bytes()
    assert all(f.frame is None for f in frames)


def test_a_glob_expands_sorted_and_files_reached_twice_are_sent_once(photo_folder: Path) -> None:
    pattern = str(photo_folder / "**" / "*.png")
    explicit = str(photo_folder / "b.png")

    files = list(expand_inputs([pattern, explicit]))

    assert [p.name for p in files] == ["a.png", "b.png"]


def test_missing_inputs_and_empty_globs_are_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file"):
        list(expand_inputs([str(tmp_path / "absent.jpg")]))
    with pytest.raises(SourceError, match="matches no file"):
        list(expand_inputs([str(tmp_path / "*.jpg")]))
    # every input is checked before the first frame is handed out (nothing sent, then a failure)
    good = tmp_path / "good.png"
    _write_png(good, 1)
    with pytest.raises(SourceError, match=r"absent\.jpg"):
        next(iter_frames([str(good), str(tmp_path / "absent.jpg")], run_id="r"))
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "notes.txt").write_text("no images here")
    with pytest.raises(SourceError, match="holds no"):
        list(expand_inputs([str(tmp_path / "empty")]))


def test_request_ids_are_sanitized_truncated_and_match_the_pattern() -> None:
    ids = RequestIds("r")
    odd = ids.make("/x/Café photo (2).final.jpg")
    long_image = ids.make("/x/" + "n" * 300 + ".png")
    long_frame = ids.make("/x/" + "v" * 300 + ".mp4", 1234)

    assert odd == "r.Caf-photo-2-final"
    assert len(long_image) == 128
    assert long_frame.endswith(".f001234") and len(long_frame) <= 128
    assert all(ID_RE.match(i) for i in (odd, long_image, long_frame))
    with pytest.raises(SourceError):
        RequestIds("bad run id")


def test_video_sampled_at_video_fps_gives_frames_by_video_time(video: Path) -> None:
    frames = list(iter_frames([str(video)], run_id="r", video_fps=2))

    assert [f.frame for f in frames] == [0, 5, 10, 15, 20, 25]
    assert [f.request_id for f in frames] == [f"r.lobby-cam.f{n:06d}" for n in range(0, 30, 5)]
    assert frames[2].filename == "lobby cam.avi.f000010.jpg"
    assert [f.time_s for f in frames] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]  # 10 fps
    assert all(ID_RE.match(f.request_id) for f in frames)
    # the pixels are those of the numbered frame (grey level n*8), JPEG-encoded
    assert all(f.data[:3] == b"\xff\xd8\xff" for f in frames)
    assert [round(_grey_level(f.data) / 8) for f in frames] == [0, 5, 10, 15, 20, 25]


def test_video_every_nth_frame(video: Path) -> None:
    frames = list(iter_frames([str(video)], run_id="r", video_every=7, video_fps=2))

    assert [f.frame for f in frames] == [0, 7, 14, 21, 28]
    assert [f.time_s for f in frames] == [0.0, 0.7, 1.4, 2.1, 2.8]
    assert frames[-1].request_id == "r.lobby-cam.f000028"


def test_sample_step_handles_fractions_and_unknown_rates() -> None:
    assert sample_step(30.0, 1.0, 0) == 30.0
    assert sample_step(10.0, 100.0, 0) == 1.0  # more than the video has: every frame
    assert sample_step(0.0, 1.0, 0) == sources.ASSUMED_VIDEO_FPS
    assert sample_step(29.97, 1.0, 3) == 3.0


def test_video_is_read_lazily(video: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Taking the first frame decodes only that frame, not the whole video."""
    calls = {"grab": 0, "retrieve": 0}
    real = cv2.VideoCapture

    class Counting:
        def __init__(self, path: str) -> None:
            self._capture = real(path)

        def grab(self) -> bool:
            calls["grab"] += 1
            return bool(self._capture.grab())

        def retrieve(self) -> tuple[bool, np.ndarray]:
            calls["retrieve"] += 1
            return self._capture.retrieve()  # type: ignore[no-any-return]

        def __getattr__(self, name: str) -> object:
            return getattr(self._capture, name)

    monkeypatch.setattr(cv2, "VideoCapture", Counting)
    frames = iter_frames([str(video)], run_id="r", video_fps=2)
    assert inspect.isgenerator(frames)
    assert calls == {"grab": 0, "retrieve": 0}  # nothing read before the first frame is asked for

    first = next(frames)

    assert first.frame == 0
    assert calls == {"grab": 1, "retrieve": 1}
    frames.close()


def test_read_frame_gives_back_the_bytes_that_were_sent(video: Path, photo_folder: Path) -> None:
    sent = {f.number: f.data for f in iter_video(video, video_every=7)}

    assert read_frame(video, 14) == sent[14]
    assert read_frame(photo_folder / "a.png") == (photo_folder / "a.png").read_bytes()

"""What the client sends: image files, folders, globs and videos, as frames with request_ids.

Every input becomes a lazy stream of :class:`Frame` items; a video is decoded one sampled frame
at a time, so an hour of video never sits in memory. Request ids are unique within a run and say
where a frame came from: ``<run id>.<file stem>`` for an image and
``<run id>.<file stem>.f<frame number:06d>`` for a video frame, e.g. ``3f9a1c2e.lobby.f000150``.

Example:
    >>> frames = iter_frames(["photos/", "clip.mp4"], run_id="demo", video_fps=2)  # doctest: +SKIP
    >>> next(frames).request_id  # doctest: +SKIP
    'demo.alice'
"""

from __future__ import annotations

import glob
import math
import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facepipe.errors import FacepipeError
from facepipe.messages import MAX_FILENAME, check_request_id

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp"})
VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts"}
)
JPEG_QUALITY = 90  # video frames are sent as JPEG at this quality
ASSUMED_VIDEO_FPS = 30.0  # when a video does not say its frame rate
MAX_REQUEST_ID = 128
_RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


class SourceError(FacepipeError):
    """An input that is missing, matches nothing, or cannot be read."""

    code = "source_error"


@dataclass(frozen=True)
class Frame:
    """One image to send: its request_id, the filename sent with it, and its encoded bytes.

    ``source`` is the file it came from and ``frame`` the frame number in a video (None for an
    image), enough to read the same pixels again (:func:`read_frame`); ``time_s`` is that
    frame's time in the video, in seconds.
    """

    request_id: str
    filename: str
    data: bytes
    source: str
    frame: int | None = None
    time_s: float | None = None


def new_run_id() -> str:
    """8 random hex digits: short enough to read, unlikely to repeat between runs."""
    return secrets.token_hex(4)


def check_run_id(run_id: str) -> str:
    if not _RUN_ID_RE.match(run_id):
        raise SourceError(
            f"run id {run_id!r} must be 1-64 letters, digits, '_' or '-', starting with a "
            "letter or digit"
        )
    return run_id


def sanitize_stem(stem: str) -> str:
    """A file stem as a request_id part: runs of other characters become ``-``.

    >>> sanitize_stem("Café photo (2).final")
    'Caf-photo-2-final'
    """
    return _UNSAFE.sub("-", stem).strip("-") or "image"


class RequestIds:
    """Makes the run's request_ids: ``<run id>.<stem>[.f<frame>]``, unique, at most 128 chars.

    A stem that repeats (``a/x.jpg`` and ``b/x.png``) gets ``-2``, ``-3``… so ids stay unique.
    """

    def __init__(self, run_id: str) -> None:
        self.run_id = check_run_id(run_id)
        self._stems: dict[str, str] = {}  # source → its stem in ids
        self._taken: set[str] = set()

    def _stem_for(self, source: str, room: int) -> str:
        if source not in self._stems:
            base = sanitize_stem(Path(source).stem)
            stem, n = base[:room].rstrip("-") or "image", 1
            while stem in self._taken:
                n += 1
                stem = f"{base[: room - len(str(n)) - 1].rstrip('-')}-{n}"
            self._taken.add(stem)
            self._stems[source] = stem
        return self._stems[source]

    def make(self, source: str, frame: int | None = None) -> str:
        suffix = "" if frame is None else f".f{frame:06d}"
        # a video's stem keeps room for ".f" + 8 digits, so its later frames fit too
        room = MAX_REQUEST_ID - len(self.run_id) - 1 - (0 if frame is None else 10)
        return check_request_id(f"{self.run_id}.{self._stem_for(source, room)}{suffix}")


# --- inputs → files ---------------------------------------------------------------------------
def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


def _folder_images(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def expand_inputs(inputs: Iterable[str]) -> Iterator[Path]:
    """Files to send, in order: a file as given, a folder's images (recursive, sorted), a glob's
    matches (sorted; folders among them expanded). A file reached twice is sent once."""
    seen: set[Path] = set()
    for text in inputs:
        path = Path(text).expanduser()
        if path.is_dir():
            files = _folder_images(path)
            if not files:
                raise SourceError(f"{text}: the folder holds no .jpg, .jpeg, .png or .webp file")
        elif path.is_file():
            files = [path]
        elif glob.has_magic(text):
            files = []
            for match in sorted(glob.glob(str(path), recursive=True)):
                found = Path(match)
                files.extend(_folder_images(found) if found.is_dir() else [found])
            if not files:
                raise SourceError(f"{text}: the pattern matches no file")
        else:
            raise SourceError(f"{text}: no such file or folder")
        for file in files:
            key = file.resolve()
            if key not in seen:
                seen.add(key)
                yield file


def iter_frames(
    inputs: Iterable[str],
    *,
    run_id: str,
    video_fps: float = 1.0,
    video_every: int = 0,
) -> Iterator[Frame]:
    """Every frame of ``inputs``, lazily: images as their file bytes, sampled video frames as
    JPEG (quality 90).

    Args:
        inputs: image files, folders (their jpg/jpeg/png/webp files, recursively), globs
            (``"shots/**/*.png"``) and video files.
        run_id: the first part of every request_id (see :func:`new_run_id`).
        video_fps: frames taken per second of video time.
        video_every: take every Nth video frame instead, when > 0.
    """
    ids = RequestIds(run_id)
    files = list(expand_inputs(inputs))  # every input checked before the first frame goes out
    for path in files:
        source = str(path)
        if is_video(path):
            for sampled in iter_video(path, video_fps=video_fps, video_every=video_every):
                yield Frame(
                    request_id=ids.make(source, sampled.number),
                    filename=video_frame_name(path, sampled.number),
                    data=sampled.data,
                    source=source,
                    frame=sampled.number,
                    time_s=sampled.time_s,
                )
        else:
            yield Frame(
                request_id=ids.make(source),
                filename=_clip(path.name),
                data=_read(path),
                source=source,
            )


def video_frame_name(path: Path, number: int) -> str:
    """The filename a video frame is sent with: ``clip.mp4.f000150.jpg``."""
    return _clip(f"{path.name}.f{number:06d}.jpg")


def _clip(filename: str) -> str:
    return filename if len(filename) <= MAX_FILENAME else filename[-MAX_FILENAME:]


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SourceError(f"{path}: {exc.strerror or exc}") from exc


# --- video ------------------------------------------------------------------------------------
def _open_video(path: Path) -> Any:
    try:
        import cv2
    except ImportError as exc:  # the images do not need OpenCV; a laptop gets it from [local]
        raise SourceError(
            f"{path}: reading video needs OpenCV: pip install opencv-python-headless"
        ) from exc
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        capture.release()
        raise SourceError(f"{path}: OpenCV cannot open this video")
    return capture


def _encode_jpeg(image: Any, path: Path, number: int) -> bytes:
    import cv2

    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise SourceError(f"{path}: frame {number} could not be encoded as JPEG")
    return bytes(encoded)


def sample_step(source_fps: float, video_fps: float, video_every: int) -> float:
    """Frames between two samples: ``video_every``, else the video's fps / ``video_fps``
    (at least 1: asking for more than the video has gives every frame)."""
    if video_every > 0:
        return float(video_every)
    if not source_fps or not math.isfinite(source_fps) or source_fps <= 0:
        source_fps = ASSUMED_VIDEO_FPS
    return max(1.0, source_fps / video_fps)


@dataclass(frozen=True)
class VideoFrame:
    """A sampled video frame: its number, its time in the video (seconds) and its JPEG."""

    number: int
    time_s: float
    data: bytes


def frame_time(number: int, fps: float) -> float:
    """Seconds from the start of the video to frame ``number`` (ms precision); a video that does
    not say its frame rate is taken to run at 30 fps.

    >>> frame_time(150, 25.0), frame_time(45, 0.0)
    (6.0, 1.5)
    """
    if not fps or not math.isfinite(fps) or fps <= 0:
        fps = ASSUMED_VIDEO_FPS
    return round(number / fps, 3)


def iter_video(
    path: str | Path, *, video_fps: float = 1.0, video_every: int = 0
) -> Iterator[VideoFrame]:
    """The sampled frames, one at a time.

    Frame ``n`` is taken when it is the first at or after the next sample time, so 30 frames at
    10 fps with ``video_fps=2`` give frames 0, 5, 10, 15, 20, 25. Frames between samples are only
    grabbed (demuxed), never converted or encoded.
    """
    path = Path(path)
    import cv2

    capture = _open_video(path)
    try:
        fps = capture.get(cv2.CAP_PROP_FPS)
        step = sample_step(fps, video_fps, video_every)
        number, next_sample = 0, 0.0
        while capture.grab():
            if number + 1e-9 >= next_sample:
                ok, image = capture.retrieve()
                if not ok:
                    raise SourceError(f"{path}: frame {number} cannot be decoded")
                yield VideoFrame(number, frame_time(number, fps), _encode_jpeg(image, path, number))
                while next_sample <= number + 1e-9:
                    next_sample += step
            number += 1
    finally:
        capture.release()


def read_frame(source: str | Path, frame: int | None = None) -> bytes:
    """The bytes a :class:`Frame` carried, read again: the file, or the video frame (seeked to,
    decoded and encoded as when it was sent)."""
    path = Path(source)
    if frame is None:
        return _read(path)
    import cv2

    capture = _open_video(path)
    try:
        capture.set(cv2.CAP_PROP_POS_FRAMES, frame)
        ok, image = capture.read()
        if not ok:
            raise SourceError(f"{path}: frame {frame} cannot be read")
        return _encode_jpeg(image, path, frame)
    finally:
        capture.release()

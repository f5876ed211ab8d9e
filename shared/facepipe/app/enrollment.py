"""Enrolment: a folder with one sub-folder per person → a gallery.

Only photos with exactly one clear face are enrolled; every other photo is reported with the
reason it was skipped, so a person can fix their enrolment set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facepipe.app.pipeline import LocalPipeline
from facepipe.errors import FacepipeError
from facepipe.identity.gallery import Gallery
from facepipe.vision.detector import DetectedFace
from facepipe.vision.frames import decode_image

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})


@dataclass(frozen=True)
class Skipped:
    path: Path
    reason: str


@dataclass
class EnrollReport:
    gallery: Gallery
    enrolled: list[tuple[str, Path]] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    crops: list[np.ndarray] = field(default_factory=list)  # the embedded crop of each row
    notes: list[Skipped] = field(default_factory=list)  # enrolled, with something to say


PICK_HINT = "pick one with --face N (1 = leftmost) or --box X1,Y1,X2,Y2"
LARGEST_BY = 2.0  # the largest face of a group photo is enrolled when it is this much larger
MIN_BOX_IOU = 0.3  # --box names the detected face it overlaps at least this much


def _area(box: Sequence[float]) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    inter = _area([max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])])
    union = _area(a) + _area(b) - inter
    return inter / union if union > 0 else 0.0


def _boxes(faces: Sequence[DetectedFace]) -> str:
    return ", ".join(str([round(v) for v in f.box]) for f in faces)


def pick_face(
    faces: Sequence[DetectedFace],
    *,
    face: int | None = None,
    box: Sequence[float] | None = None,
) -> tuple[DetectedFace | None, str]:
    """The face of a photo to enrol, and what to tell the user (the reason when None).

    ``box``: the detected face overlapping it most (IoU ≥ 0.3). Else the only face; else the
    ``face``-th from the left (1-based); else the largest, when it is at least twice the area of
    the next (a portrait with people behind), with a note; else none: the user picks.
    """
    by_x = sorted(faces, key=lambda f: f.box[0])
    if box is not None:
        best = max(by_x, key=lambda f: _iou(f.box, box))
        if _iou(best.box, box) < MIN_BOX_IOU:
            return None, f"no face at --box {[round(v) for v in box]} (faces at {_boxes(by_x)})"
        return best, ""
    if len(by_x) == 1:
        return by_x[0], ""
    if face is not None:
        if not 1 <= face <= len(by_x):
            return None, f"{len(by_x)} faces, no face {face} (faces at {_boxes(by_x)})"
        return by_x[face - 1], ""
    largest, second = sorted(by_x, key=lambda f: _area(f.box), reverse=True)[:2]
    if _area(largest.box) >= LARGEST_BY * _area(second.box):
        return largest, (
            f"{len(by_x)} faces: enrolled the largest, at {_boxes([largest])}; to enrol another, "
            f"{PICK_HINT}"
        )
    return None, f"{len(by_x)} faces of similar size at {_boxes(by_x)}: {PICK_HINT}"


def person_photos(root: Path) -> list[tuple[str, Path]]:
    """``root/<person>/<photo>`` pairs, sorted; the folder name is the person's name."""
    if not root.is_dir():
        raise FacepipeError(f"{root} is not a folder of person folders", code="invalid_gallery")
    return [
        (person.name, photo)
        for person in sorted(p for p in root.iterdir() if p.is_dir())
        for photo in sorted(person.iterdir())
        if photo.suffix.lower() in IMAGE_SUFFIXES
    ]


def loose_photos(root: Path) -> list[Path]:
    """Photos directly under ``root``: enrolment cannot tell whose they are."""
    return sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def enroll_folder(
    pipeline: LocalPipeline,
    root: Path,
    *,
    min_face_px: int = 40,
    min_probability: float = 0.99,
    face: int | None = None,
    box: Sequence[float] | None = None,
) -> EnrollReport:
    """Embed one face per photo (the one :func:`pick_face` picks with ``face``/``box``); skip
    photos with no face, with several faces and none picked, a face smaller than
    ``min_face_px`` on its shorter side, or a detection probability below ``min_probability``."""
    names: list[str] = []
    crops: list[np.ndarray] = []
    report = EnrollReport(Gallery())
    report.skipped.extend(
        Skipped(loose, f"not in a person's folder: move it to {root}/<name>/")
        for loose in loose_photos(root)
    )
    for name, photo in person_photos(root):
        try:
            image = decode_image(photo.read_bytes(), max_pixels=pipeline.settings.max_pixels)
        except (OSError, FacepipeError) as exc:
            report.skipped.append(Skipped(photo, f"unreadable: {exc}"))
            continue
        faces = pipeline.detection.image(name, photo.name, image).faces
        if not faces:
            report.skipped.append(Skipped(photo, "no face"))
            continue
        chosen, note = pick_face(faces, face=face, box=box)
        if chosen is None:
            report.skipped.append(Skipped(photo, note))
            continue
        side = min(chosen.box[2] - chosen.box[0], chosen.box[3] - chosen.box[1])
        if side < min_face_px:
            report.skipped.append(Skipped(photo, f"face {side:.0f} px < {min_face_px} px"))
            continue
        if chosen.probability < min_probability:
            report.skipped.append(
                Skipped(
                    photo, f"detection probability {chosen.probability:.3f} < {min_probability}"
                )
            )
            continue
        if note:
            report.notes.append(Skipped(photo, note))
        names.append(name)
        crops.append(chosen.crop)
        report.enrolled.append((name, photo))
    embedder = pipeline.recognition.embedder
    report.gallery = Gallery(names, embedder.embed(crops), embedder.name)
    report.crops = crops
    return report

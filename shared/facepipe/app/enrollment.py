"""Enrolment: a folder with one sub-folder per person → a gallery.

Only photos with exactly one clear face are enrolled; every other photo is reported with the
reason it was skipped, so a person can fix their enrolment set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facepipe.app.pipeline import LocalPipeline
from facepipe.errors import FacepipeError
from facepipe.identity.gallery import Gallery
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
) -> EnrollReport:
    """Embed one face per photo; skip photos with no face, several faces, a face smaller than
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
        if len(faces) > 1:
            report.skipped.append(Skipped(photo, f"{len(faces)} faces; enrol photos of one face"))
            continue
        face = faces[0]
        side = min(face.box[2] - face.box[0], face.box[3] - face.box[1])
        if side < min_face_px:
            report.skipped.append(Skipped(photo, f"face {side:.0f} px < {min_face_px} px"))
            continue
        if face.probability < min_probability:
            report.skipped.append(
                Skipped(photo, f"detection probability {face.probability:.3f} < {min_probability}")
            )
            continue
        names.append(name)
        crops.append(face.crop)
        report.enrolled.append((name, photo))
    embedder = pipeline.recognition.embedder
    report.gallery = Gallery(names, embedder.embed(crops), embedder.name)
    report.crops = crops
    return report

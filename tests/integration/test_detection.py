"""Real photos through real MTCNN: the shipped samples always, ../shared/faces when present."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from facepipe.vision.detector import FaceDetector
from tests.conftest import SAMPLES


def _rgb(path: Path) -> Image.Image:
    return ImageOps.exif_transpose(Image.open(path)).convert("RGB")


def test_sample_astronaut_has_one_face(detector: FaceDetector) -> None:
    faces = detector.detect(_rgb(SAMPLES / "astronaut.jpg"))
    assert len(faces) == 1
    face = faces[0]
    x1, y1, x2, y2 = face.box
    # Eileen Collins' face is in the upper middle of the 512x512 portrait.
    assert 150 < x1 < x2 < 300
    assert 30 < y1 < y2 < 200
    assert face.probability > 0.99
    assert face.crop.shape == (160, 160, 3)
    assert len(face.landmarks) == 5
    assert all(x1 <= x <= x2 and y1 <= y <= y2 for x, y in face.landmarks)


def test_sample_without_face(detector: FaceDetector) -> None:
    assert detector.detect(_rgb(SAMPLES / "rocket.jpg")) == []


def test_detection_threshold_drops_low_confidence_faces() -> None:
    image = _rgb(SAMPLES / "astronaut.jpg")
    assert FaceDetector(min_probability=1.0 + 1e-9, device="cpu").detect(image) == []


def test_margin_and_size_change_the_crop(detector: FaceDetector) -> None:
    """The detector's margin and size reach its crops: the same detection, cropped as
    facenet-pytorch's own ``extract_face`` crops it with that margin (so the face fills
    (112 - 40) / 112 of the crop), and not as without the margin."""
    from facenet_pytorch import extract_face

    image = _rgb(SAMPLES / "astronaut.jpg")
    wide = FaceDetector(image_size=112, margin=40, device="cpu").detect(image)[0]
    tight = FaceDetector(image_size=112, margin=0, device="cpu").detect(image)[0]
    assert wide.box == tight.box == detector.detect(image)[0].box
    assert wide.crop.shape == tight.crop.shape == (112, 112, 3)
    box = np.float32(wide.box)  # MTCNN's own values, as facenet-pytorch passes them
    for face, margin in ((wide, 40), (tight, 0)):
        theirs = extract_face(image, box, 112, margin).permute(1, 2, 0).numpy()
        assert np.array_equal(face.crop, theirs), margin
    assert not np.array_equal(wide.crop, tight.crop)


def _shared_images(shared: Path) -> list[Path]:
    with (shared / "identities.csv").open() as fh:
        return [shared / row["file"] for row in csv.DictReader(fh)]


@pytest.mark.shared_data
def test_every_shared_photo_has_a_face(detector: FaceDetector, shared_faces: Path) -> None:
    for path in _shared_images(shared_faces):
        image = _rgb(path)
        faces = detector.detect(image)
        assert faces, f"no face found in {path.name}"
        for face in faces:
            x1, y1, x2, y2 = face.box
            assert -5 <= x1 < x2 <= image.width + 5, path.name
            assert -5 <= y1 < y2 <= image.height + 5, path.name


@pytest.mark.shared_data
@pytest.mark.parametrize(("name", "at_least"), [("couple.jpg", 2), ("selfie-many-people.jpg", 3)])
def test_group_photos_give_several_faces(
    detector: FaceDetector, shared_faces: Path, name: str, at_least: int
) -> None:
    faces = detector.detect(_rgb(shared_faces / name))
    assert len(faces) >= at_least
    # MTCNN's order: largest first
    areas = [(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]) for f in faces]
    assert areas == sorted(areas, reverse=True)

"""Parity with plain facenet-pytorch: the pipeline's boxes and embeddings (after the lossless
queue round trip) match ``MTCNN(keep_all=True)`` + ``InceptionResnetV1`` on its own crops."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from facenet_pytorch import MTCNN, InceptionResnetV1
from PIL import Image, ImageOps

from facepipe.config import Settings
from facepipe.identity.facenet import FacenetEmbedder
from facepipe.stages.detect import Detection
from facepipe.stages.recognize import frame_from_task
from tests.conftest import SAMPLES


def iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union)


@pytest.fixture(scope="module")
def reference() -> tuple[MTCNN, InceptionResnetV1]:
    torch.manual_seed(0)
    resnet = InceptionResnetV1(pretrained=None).eval()
    return MTCNN(keep_all=True, device="cpu"), resnet


def check(path: Path, detection: Detection, embedder: FacenetEmbedder, reference) -> int:  # type: ignore[no-untyped-def]
    mtcnn, resnet = reference
    image = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    ref_boxes, ref_probs = mtcnn.detect(image)
    ref_boxes = ref_boxes[ref_probs >= detection.settings.min_face_probability]
    with torch.no_grad():
        ref_crops = mtcnn(image)[: len(ref_boxes)]
        ref_emb = resnet(ref_crops.to(mtcnn.device)).cpu().numpy()
    # The pipeline's path: detect → queue task (PNG crops) → parsed back → embedded.
    task = detection.image("parity", path.name, image).to_task()
    frame = frame_from_task(type(task).model_validate_json(task.model_dump_json()), task.faces)
    assert len(frame.faces) == len(ref_boxes), path.name
    ours = embedder.embed([f.crop for f in frame.faces])
    for face, ref_box, e_ours, e_ref in zip(frame.faces, ref_boxes, ours, ref_emb, strict=True):
        assert iou(np.array(face.box), ref_box) >= 0.99, path.name
        assert float(e_ours @ e_ref) >= 0.999, path.name
    return len(ref_boxes)


@pytest.fixture(scope="module")
def detection(detector) -> Detection:  # type: ignore[no-untyped-def]
    return Detection(Settings.from_env({}), detector)


def test_parity_on_shipped_sample(detection, embedder, reference) -> None:  # type: ignore[no-untyped-def]
    assert check(SAMPLES / "astronaut.jpg", detection, embedder, reference) == 1


@pytest.mark.shared_data
def test_parity_on_shared_faces(detection, embedder, reference, shared_faces: Path) -> None:  # type: ignore[no-untyped-def]
    with (shared_faces / "identities.csv").open() as fh:
        files = [row["file"] for row in csv.DictReader(fh)]
    # Small and large photos plus the multi-face ones; all 25 would only repeat the same code.
    picks = [*files[::4], "couple.jpg", "selfie-many-people.jpg"]
    total = sum(check(shared_faces / f, detection, embedder, reference) for f in picks)
    assert total >= len(picks) + 3

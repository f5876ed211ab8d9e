"""Face detection: MTCNN (facenet-pytorch's networks and weights, :mod:`facepipe.vision.mtcnn`'s
fast path) → boxes, probabilities, landmarks and lossless crops.

The crop that travels to recognition depends on the embedder, so cutting it is a step of its own
(:class:`FaceCropper`) that :class:`FaceDetector` runs on the boxes it keeps: facenet-pytorch's
``extract_face`` (:class:`FacenetCropper`, the default) for ``vggface2``/``casia-webface``, the
aligned dlib chip (:class:`facepipe.identity.dlib_embedder.DlibChipCropper`) for ``dlib``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from PIL import Image

from facepipe.runtime import resolve_device


@dataclass(frozen=True)
class DetectedFace:
    """One face: ``box`` is ``[x1, y1, x2, y2]`` in the frame's pixels, ``crop`` the uint8 RGB
    crop the embedder takes (for facenet embedders exactly what ``facenet_pytorch.extract_face``
    cuts, ``image_size``²; for dlib the 150×150 aligned chip)."""

    box: tuple[float, float, float, float]
    probability: float
    landmarks: tuple[tuple[float, float], ...]
    crop: np.ndarray


class FaceCropper(Protocol):
    """The embedder-specific crop step: the frame and its kept boxes → one uint8 crop each.
    ``kind`` is the embedder the crops are made for (queue tasks record it)."""

    kind: str

    def crops(self, image: Image.Image, boxes: Sequence[Sequence[float]]) -> list[np.ndarray]: ...


def extract_face(
    image: Image.Image, box: Sequence[float], image_size: int = 160, margin: int = 0
) -> np.ndarray:
    """facenet-pytorch's ``extract_face`` for a PIL image, as uint8 ``H×W×3``: the box widened
    by ``margin`` crop pixels, clipped to the frame, truncated to integers, cropped and resized
    bilinearly by PIL. Same arithmetic (pass the box as MTCNN's float32 values) and so the same
    pixels, without importing facenet-pytorch's package (which imports torchvision)."""
    mx = margin * (box[2] - box[0]) / (image_size - margin)
    my = margin * (box[3] - box[1]) / (image_size - margin)
    width, height = image.size
    region = (
        int(max(box[0] - mx / 2, 0)),
        int(max(box[1] - my / 2, 0)),
        int(min(box[2] + mx / 2, width)),
        int(min(box[3] + my / 2, height)),
    )
    face = image.crop(region).resize((image_size, image_size), Image.Resampling.BILINEAR)
    return np.asarray(face, dtype=np.uint8)


class FacenetCropper:
    """facenet-pytorch's ``extract_face`` crop, bit for bit (what ``MTCNN`` itself returns).

    Example:
        >>> from PIL import Image
        >>> image = Image.open("samples/astronaut.jpg").convert("RGB")
        >>> FacenetCropper().crops(image, [(170.0, 40.0, 280.0, 190.0)])[0].shape
        (160, 160, 3)
    """

    def __init__(self, image_size: int = 160, margin: int = 0, kind: str = "vggface2") -> None:
        self.image_size = image_size
        self.margin = margin
        self.kind = kind

    def crops(self, image: Image.Image, boxes: Sequence[Sequence[float]]) -> list[np.ndarray]:
        return [extract_face(image, box, self.image_size, self.margin) for box in boxes]


class FaceDetector:
    """MTCNN with facenet-pytorch's own defaults (``MTCNN(keep_all=True)``), keeping every face
    above a probability floor.

    Args:
        image_size: side of each facenet crop (facenet-pytorch default 160).
        margin: margin around the box in crop pixels (facenet-pytorch default 0).
        min_face_size: smallest face MTCNN looks for, in pixels (default 20).
        min_probability: faces scored below this are dropped as MTCNN's false faces.
        max_side: when > 0, MTCNN runs on the frame downscaled (bilinear) so that its longer
            side is at most this; boxes and landmarks are scaled back and crops cut from the
            full frame. Faces smaller than ``min_face_size`` in the downscaled frame are missed.
        device: torch device string, or ``"auto"``.
        cropper: the crop step; default ``FacenetCropper(image_size, margin)``.

    Example:
        >>> from PIL import Image
        >>> detector = FaceDetector()
        >>> faces = detector.detect(Image.open("samples/astronaut.jpg").convert("RGB"))
        >>> len(faces), faces[0].crop.shape
        (1, (160, 160, 3))
    """

    name = "mtcnn"

    def __init__(
        self,
        image_size: int = 160,
        margin: int = 0,
        min_face_size: int = 20,
        min_probability: float = 0.95,
        max_side: int = 0,
        device: str = "auto",
        cropper: FaceCropper | None = None,
    ) -> None:
        from facepipe.vision.mtcnn.detect import Mtcnn

        self.image_size = image_size
        self.margin = margin
        self.min_probability = min_probability
        self.min_face_size = min_face_size
        self.max_side = max_side
        self.cropper: FaceCropper = cropper or FacenetCropper(image_size, margin)
        self.device = resolve_device(device)
        self.mtcnn = Mtcnn(min_face_size=min_face_size, device=self.device)

    def detect(self, image: Image.Image, *, max_pixels: int = 0) -> list[DetectedFace]:
        """All faces of an RGB image, largest first (MTCNN's order), above ``min_probability``,
        each with the crop of :attr:`cropper` (cut from ``image`` itself, also when detection
        ran downscaled). With ``max_pixels`` > 0, MTCNN runs on a copy downscaled to at most
        that many pixels (what the function's memory allows, see ``memory_budget``), as with
        ``max_side``. An image whose short side is under ``min_face_size`` holds no face MTCNN
        can find (it would fail on it: no pyramid scale)."""
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        size = rgb.size
        if self.max_side and max(size) > self.max_side:
            scale = self.max_side / max(size)
            size = (max(1, round(size[0] * scale)), max(1, round(size[1] * scale)))
        if max_pixels and size[0] * size[1] > max_pixels:
            scale = (max_pixels / (size[0] * size[1])) ** 0.5
            size = (max(1, int(size[0] * scale)), max(1, int(size[1] * scale)))
        if size != rgb.size:
            rgb = rgb.resize(size, Image.Resampling.BILINEAR)
        if min(rgb.size) * (12.0 / self.min_face_size) < 12:  # MTCNN's own first-scale test
            return []
        boxes, points = self.mtcnn.detect(np.asarray(rgb))
        if rgb.size != image.size:  # back to the full frame's pixels
            sx, sy = np.float32(image.width / rgb.width), np.float32(image.height / rgb.height)
            boxes[:, [0, 2]] *= sx
            boxes[:, [1, 3]] *= sy
            points[:, :, 0] *= sx
            points[:, :, 1] *= sy
        kept = [
            (row[:4], row[4], pts)
            for row, pts in zip(boxes, points, strict=True)
            if float(row[4]) >= self.min_probability
        ]
        crops = self.cropper.crops(image, [box for box, _, _ in kept])
        return [
            DetectedFace(
                box=(float(box[0]), float(box[1]), float(box[2]), float(box[3])),
                probability=float(prob),
                landmarks=tuple((float(x), float(y)) for x, y in pts),
                crop=crop,
            )
            for (box, prob, pts), crop in zip(kept, crops, strict=True)
        ]

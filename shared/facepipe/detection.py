"""Face detection: facenet-pytorch MTCNN → boxes, probabilities, landmarks and lossless crops."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from facepipe.torch_runtime import resolve_device


@dataclass(frozen=True)
class DetectedFace:
    """One face: ``box`` is ``[x1, y1, x2, y2]`` in the frame's pixels, ``crop`` is the uint8
    ``image_size``² RGB crop exactly as ``facenet_pytorch.extract_face`` cuts it."""

    box: tuple[float, float, float, float]
    probability: float
    landmarks: tuple[tuple[float, float], ...]
    crop: np.ndarray


class FaceDetector:
    """MTCNN with facenet-pytorch's own defaults, keeping every face above a probability floor.

    Args:
        image_size: side of each crop (facenet-pytorch default 160).
        margin: margin around the box in crop pixels (facenet-pytorch default 0).
        min_face_size: smallest face MTCNN looks for, in pixels (default 20).
        min_probability: faces scored below this are dropped as MTCNN's false faces.
        device: torch device string, or ``"auto"``.

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
        device: str = "auto",
    ) -> None:
        from facenet_pytorch import MTCNN

        self.image_size = image_size
        self.margin = margin
        self.min_probability = min_probability
        self.device = resolve_device(device)
        self.mtcnn = MTCNN(
            image_size=image_size,
            margin=margin,
            min_face_size=min_face_size,
            keep_all=True,
            post_process=False,
            device=self.device,
        )

    def detect(self, image: Image.Image) -> list[DetectedFace]:
        """All faces of an RGB image, largest first (MTCNN's order), above ``min_probability``."""
        from facenet_pytorch import extract_face

        boxes, probs, points = self.mtcnn.detect(image, landmarks=True)
        if boxes is None:
            return []
        faces = []
        for box, prob, pts in zip(boxes, probs, points, strict=True):
            if float(prob) < self.min_probability:
                continue
            crop = extract_face(image, box, self.image_size, self.margin)
            faces.append(
                DetectedFace(
                    box=(float(box[0]), float(box[1]), float(box[2]), float(box[3])),
                    probability=float(prob),
                    landmarks=tuple((float(x), float(y)) for x, y in pts),
                    # extract_face returns the PIL crop's uint8 values as float: exact round trip
                    crop=crop.permute(1, 2, 0).numpy().astype(np.uint8),
                )
            )
        return faces

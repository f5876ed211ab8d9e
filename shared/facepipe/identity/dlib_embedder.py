"""The ``dlib`` embedder: dlib's ResNet face descriptor, fully offline.

The models are the files PyPI's ``face-recognition-models`` ships
(``dlib_face_recognition_resnet_model_v1.dat`` and ``shape_predictor_5_face_landmarks.dat``),
run with dlib (PyPI ``dlib-bin``). Two halves, one per stage:

* :class:`DlibChipCropper` (detection): dlib's 5-point shape predictor on the **MTCNN box**,
  then ``dlib.get_face_chip(frame, shape, size=150, padding=0.25)``: the aligned 150×150 chip
  that travels on the queue. It needs the whole frame, so it is cut in detection.
* :class:`DlibEmbedder` (recognition): ``compute_face_descriptor`` of the chips → 128-d rows,
  L2-normalised so that the pipeline's unit-vector maths (``distance = sqrt(2 - 2·cosine)``)
  holds for every embedder.

Raw dlib descriptors are not unit vectors: on ``../shared/faces`` their norms are 1.36-1.64.
dlib's own rule, "same person when the raw Euclidean distance is below 0.6", therefore sits near
0.4 in unit distance (raw ≈ 1.5 × unit); the default threshold for ``dlib`` is calibrated on
unit distances (``facepipe eval``, docs/models.md, Thresholds).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from facepipe.errors import ConfigError, WeightsUnavailable
from facepipe.identity.embedders import RANDOM_PREFIX, file_digest

NAME = "dlib"
DIM = 128
CHIP_SIZE = 150
CHIP_PADDING = 0.25
RECOGNITION_MODEL = "dlib_face_recognition_resnet_model_v1.dat"
SHAPE_PREDICTOR = "shape_predictor_5_face_landmarks.dat"
_INSTALL = "pip install dlib-bin face-recognition-models (the `dlib` extra of facepipe)"


def _dlib() -> Any:
    try:
        import dlib
    except ImportError as exc:
        raise WeightsUnavailable(f"FACEPIPE_EMBEDDER=dlib needs dlib: {_INSTALL}") from exc
    return dlib


def model_path(filename: str) -> Path:
    """A model file of the installed ``face-recognition-models`` package.

    The package is located without importing it (its ``__init__`` needs ``pkg_resources``,
    which recent setuptools no longer ship).
    """
    spec = importlib.util.find_spec("face_recognition_models")
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        raise WeightsUnavailable(f"FACEPIPE_EMBEDDER=dlib needs its model files: {_INSTALL}")
    path = Path(locations[0]) / "models" / filename
    if not path.is_file():
        raise WeightsUnavailable(f"{path} is missing: reinstall face-recognition-models")
    return path


class DlibChipCropper:
    """Detection's crop step for ``dlib``: the aligned 150×150 chip of each MTCNN box.

    Example:
        >>> from PIL import Image
        >>> cropper = DlibChipCropper()
        >>> image = Image.open("samples/astronaut.jpg").convert("RGB")
        >>> cropper.crops(image, [(170.0, 40.0, 280.0, 190.0)])[0].shape
        (150, 150, 3)
    """

    kind = NAME

    def __init__(self) -> None:
        dlib = _dlib()
        self._rectangle = dlib.rectangle
        self._chip = dlib.get_face_chip
        self.predictor = dlib.shape_predictor(str(model_path(SHAPE_PREDICTOR)))

    def crops(self, image: Image.Image, boxes: Sequence[Sequence[float]]) -> list[np.ndarray]:
        """One uint8 150×150×3 chip per ``[x1, y1, x2, y2]`` box of the RGB ``image``."""
        if not boxes:
            return []
        frame = np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))
        chips = []
        for box in boxes:
            x1, y1, x2, y2 = (round(float(v)) for v in box[:4])
            shape = self.predictor(frame, self._rectangle(x1, y1, x2, y2))
            chips.append(np.asarray(self._chip(frame, shape, size=CHIP_SIZE, padding=CHIP_PADDING)))
        return chips


class DlibEmbedder:
    """dlib's ResNet → 128-d unit embeddings of 150×150 chips from :class:`DlibChipCropper`.

    Args:
        weights: ignored for paths (dlib's model is the ``face-recognition-models`` file;
            ``FACEPIPE_WEIGHTS`` is for the facenet embedders), but ``random:<seed>`` is refused:
            there are no random dlib weights, and results must not claim to be random when real.
        device: ignored; the ``dlib-bin`` wheels run on the CPU.

    Example:
        >>> import numpy as np
        >>> emb = DlibEmbedder()
        >>> emb.embed([np.zeros((150, 150, 3), np.uint8)]).shape
        (1, 128)
    """

    name = NAME
    dim = DIM

    def __init__(self, weights: str = "", device: str = "auto") -> None:
        if weights.startswith(RANDOM_PREFIX):
            raise ConfigError(
                f"FACEPIPE_WEIGHTS={weights}: the dlib embedder has no random weights; "
                "unset FACEPIPE_WEIGHTS (dlib's model comes from face-recognition-models)"
            )
        dlib = _dlib()
        path = model_path(RECOGNITION_MODEL)
        self.model = dlib.face_recognition_model_v1(str(path))
        self.weights_id = f"{NAME}:sha256:{file_digest(path)[:16]}"

    def embed(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """Embed uint8 150×150×3 chips → float32 (N, 128) unit rows (one dlib batch call)."""
        if len(crops) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        chips = []
        for crop in crops:
            if crop.dtype != np.uint8 or crop.shape != (CHIP_SIZE, CHIP_SIZE, 3):
                raise ValueError(
                    f"the dlib embedder takes uint8 {CHIP_SIZE}x{CHIP_SIZE}x3 chips "
                    f"(dlib.get_face_chip), got {crop.dtype} {crop.shape}"
                )
            chips.append(np.ascontiguousarray(crop))
        raw = np.asarray([np.asarray(d) for d in self.model.compute_face_descriptor(chips)])
        raw = raw.astype(np.float32).reshape(len(chips), self.dim)
        return raw / np.maximum(np.linalg.norm(raw, axis=1, keepdims=True), 1e-12)

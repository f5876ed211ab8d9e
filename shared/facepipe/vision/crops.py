"""Face crops on the wire: uint8 RGB arrays carried losslessly as PNG, so recognition sees
bit-identical pixels to a direct facenet-pytorch call."""

from __future__ import annotations

import base64
import io
import warnings
from collections.abc import Sequence

import numpy as np
from PIL import Image

from facepipe.errors import InvalidMessage

# Crop sides an embedder can take: InceptionResnetV1 needs at least 75 pixels a side (smaller
# inputs shrink to nothing in its stem) and FACEPIPE_IMAGE_SIZE stops at 1024; dlib takes
# exactly its 150×150 chip. Checked from the PNG header, before decoding.
FACENET_CROP_SIDES = (75, 1024)
DLIB_CROP_SIDES = (150, 150)


def crop_sides(embedder: str) -> tuple[int, int]:
    """(smallest, largest) side of a crop ``embedder`` takes."""
    return DLIB_CROP_SIDES if embedder == "dlib" else FACENET_CROP_SIDES


def encode_png(crop: np.ndarray) -> bytes:
    """uint8 HxWx3 array → PNG bytes (lossless)."""
    if crop.dtype != np.uint8 or crop.ndim != 3 or crop.shape[2] != 3:
        raise ValueError(f"crop must be uint8 HxWx3, got {crop.dtype} {crop.shape}")
    buf = io.BytesIO()
    Image.fromarray(crop, mode="RGB").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def decode_png(data: bytes, sides: tuple[int, int] | None = None) -> np.ndarray:
    """PNG bytes → uint8 HxWx3 array; with ``sides`` (smallest, largest), a crop whose header
    says it is smaller or larger is refused before decoding."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DecompressionBombWarning: the sides decide
            with Image.open(io.BytesIO(data), formats=["PNG"]) as img:
                if sides is not None:
                    low, high = sides
                    width, height = img.size
                    if not (low <= width <= high and low <= height <= high):
                        within = f"{low}x{low}" if low == high else f"{low} to {high} pixels a side"
                        raise InvalidMessage(
                            f"face crop is {width}x{height} pixels; this embedder takes {within}"
                        )
                return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except InvalidMessage:
        raise
    except Exception as exc:  # PIL raises many types for bad bytes
        raise InvalidMessage(f"face crop is not a valid PNG ({exc})") from exc


def crop_to_b64(crop: np.ndarray) -> str:
    return base64.b64encode(encode_png(crop)).decode("ascii")


def crop_from_b64(text: str, sides: tuple[int, int] | None = None) -> np.ndarray:
    try:
        data = base64.b64decode(text, validate=True)
    except ValueError as exc:
        raise InvalidMessage(f"face crop is not valid base64 ({exc})") from exc
    return decode_png(data, sides)


def standardize(crops: Sequence[np.ndarray]) -> np.ndarray:
    """uint8 crops → float32 NCHW batch, ``(x - 127.5) / 128`` as facenet-pytorch's
    ``fixed_image_standardization`` (what ``MTCNN(post_process=True)`` returns)."""
    # transpose while still uint8 (a quarter of the bytes to move), then convert
    batch = np.ascontiguousarray(np.stack(crops).transpose(0, 3, 1, 2)).astype(np.float32)
    batch -= 127.5
    batch /= 128.0
    return batch

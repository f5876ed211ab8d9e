"""Frames: base64 text or file bytes → an upright RGB ``PIL.Image``, with limits checked first.

The pixel limit is checked from the image header, before any pixel is decoded, so a
decompression bomb costs milliseconds and no memory.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

from facepipe.errors import InvalidImage, InvalidRequest, PayloadTooLarge

ACCEPTED_FORMATS = frozenset({"JPEG", "PNG", "WEBP"})


def decode_base64(content: str, *, field: str = "content") -> bytes:
    """Strict standard base64 (whitespace and a ``data:image/...;base64,`` prefix tolerated).

    >>> decode_base64("aGk=")
    b'hi'
    """
    if not isinstance(content, str) or not content:
        raise InvalidRequest(f"`{field}` must be a non-empty base64 string of the image bytes")
    if content.startswith("data:") and "," in content:
        content = content.split(",", 1)[1]
    compact = "".join(content.split())
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest(
            f"`{field}` is not valid base64 ({exc}); send the image bytes base64-encoded with "
            "the standard alphabet and padding"
        ) from exc


def decode_image(data: bytes, *, max_pixels: int) -> Image.Image:
    """Decode JPEG/PNG/WebP bytes into an RGB image, honouring EXIF orientation.

    Raises :class:`InvalidImage` for anything else and :class:`PayloadTooLarge` when the header
    announces more than ``max_pixels`` pixels.
    """
    if not data:
        raise InvalidImage("the image is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=sorted(ACCEPTED_FORMATS))
    except UnidentifiedImageError as exc:
        raise InvalidImage(
            "the bytes are not a JPEG, PNG or WebP image; accepted formats: "
            + ", ".join(sorted(ACCEPTED_FORMATS))
        ) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PayloadTooLarge(f"image refused before decoding: {exc}") from exc
    width, height = image.size
    if width * height > max_pixels:
        raise PayloadTooLarge(
            f"image is {width}x{height} = {width * height} pixels, over the limit of "
            f"{max_pixels}; downscale it or raise FACEPIPE_MAX_PIXELS"
        )
    if getattr(image, "n_frames", 1) > 1:
        raise InvalidImage("animated images are not accepted; send one still frame per request")
    try:
        image.load()
        upright = ImageOps.exif_transpose(image)
        return upright.convert("RGB")
    except (OSError, ValueError, SyntaxError) as exc:
        raise InvalidImage(
            f"the image could not be decoded ({exc}); is the file complete?"
        ) from exc


def encode_image(image: Image.Image, fmt: str = "JPEG", quality: int = 95) -> bytes:
    """Encode an image for sending (the client and tests use this)."""
    buf = io.BytesIO()
    image.save(buf, format=fmt, quality=quality)
    return buf.getvalue()

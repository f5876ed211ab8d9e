"""Frames: base64 text or file bytes → an upright RGB ``PIL.Image``, with limits checked first.

The pixel limit is checked from the image header, before any pixel is decoded, so a
decompression bomb costs milliseconds and no memory.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import warnings
from collections.abc import Collection

from PIL import Image, ImageOps, UnidentifiedImageError

from facepipe.errors import InvalidImage, InvalidRequest, PayloadTooLarge

ACCEPTED_FORMATS = frozenset({"JPEG", "PNG", "WEBP"})  # the default of FACEPIPE_FORMATS
# What FACEPIPE_FORMATS may name: still-image formats Pillow decodes (multi-frame files of any
# of them are refused). TIFF, GIF and BMP are off by default: more parser, no benefit for photos.
SUPPORTED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"})
_NOT_BASE64_RE = re.compile(r"[^A-Za-z0-9+/=]")
_PIXELS_RE = re.compile(r"\((\d+) pixels\)")


def _not_base64(field: str, problem: str) -> InvalidRequest:
    return InvalidRequest(
        f"`{field}` is not valid base64: {problem}; send the image bytes base64-encoded with "
        "the standard alphabet (A-Z a-z 0-9 + /) and = padding"
    )


def decode_base64(content: str, *, field: str = "content") -> bytes:
    """Standard base64 (RFC 4648 section 4) with its padding. Tolerated: whitespace anywhere (line
    breaks of MIME base64) and a ``data:image/...;base64,`` prefix. Refused, each with its own
    message: the URL-safe alphabet (``-``/``_``), missing or misplaced padding (a length that
    is not a multiple of 4 is usually text cut short), any other character.

    >>> decode_base64("aGk=")
    b'hi'
    """
    if not isinstance(content, str) or not content:
        raise InvalidRequest(f"`{field}` must be a non-empty base64 string of the image bytes")
    if content.startswith("data:") and "," in content:
        header, content = content.split(",", 1)
        if not header.endswith(";base64"):
            raise _not_base64(field, "a data: URL must say `;base64,` before the data")
    compact = "".join(content.split())
    stray = _NOT_BASE64_RE.search(compact)
    if stray is not None:
        if not _NOT_BASE64_RE.search(compact.replace("-", "+").replace("_", "/")):
            raise _not_base64(field, "it uses the URL-safe alphabet (- and _), not + and /")
        raise _not_base64(
            field, f"character {stray.start()} (not counting whitespace) is not in its alphabet"
        )
    data = compact.rstrip("=")
    if "=" in data or len(compact) - len(data) > 2:
        raise _not_base64(field, "= padding may only end the text, at most twice")
    if len(compact) % 4:
        raise _not_base64(
            field,
            f"its length ({len(compact)} characters without whitespace) is not a multiple of 4:"
            " the = padding is missing or the text was cut short",
        )
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:  # what the checks above missed, if anything
        raise _not_base64(field, str(exc)) from exc


def _format_names(formats: Collection[str]) -> str:
    return ", ".join("WebP" if f == "WEBP" else f for f in sorted(formats))


def decode_image(
    data: bytes, *, max_pixels: int, formats: Collection[str] = ACCEPTED_FORMATS
) -> Image.Image:
    """Decode image bytes of one of ``formats`` (Pillow names, default JPEG/PNG/WebP) into an
    RGB image, honouring EXIF orientation.

    Raises :class:`InvalidImage` for anything else (another format, a truncated or corrupt file,
    an animated or multi-page one) and :class:`PayloadTooLarge` when the header announces more
    than ``max_pixels`` pixels: that is checked before any pixel is decoded.
    """
    return load_image(open_image(data, max_pixels=max_pixels, formats=formats))


def open_image(
    data: bytes, *, max_pixels: int, formats: Collection[str] = ACCEPTED_FORMATS
) -> Image.Image:
    """The image's header, checked (format, size, one frame only) without decoding a pixel:
    :func:`load_image` decodes it later. The same errors as :func:`decode_image`."""
    if not data:
        raise InvalidImage("the image is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Pillow warns above ~89 megapixels and refuses above ~179: the check below decides
            # up to there (FACEPIPE_MAX_PIXELS may be set higher than Pillow's warning).
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=sorted(formats))
    except UnidentifiedImageError as exc:
        raise InvalidImage(
            f"the bytes are not an image of an accepted format ({_format_names(formats)}); "
            "send one of those (FACEPIPE_FORMATS)"
        ) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own hard guard (above ~179 megapixels) fires inside open(), from the header.
        announced = _PIXELS_RE.search(str(exc))
        hard = 2 * (Image.MAX_IMAGE_PIXELS or 0)
        limit = min(max_pixels, hard) if hard else max_pixels
        count = announced.group(1) if announced else f"more than {limit}"
        raise PayloadTooLarge(
            f"the image header announces {count} pixels, over the limit of {limit} "
            f"(FACEPIPE_MAX_PIXELS{'' if limit == max_pixels else ', capped by Pillow'}); "
            "refused before decoding: downscale it"
        ) from exc
    except Exception as exc:  # a header Pillow's parser chokes on (it raises many types)
        raise InvalidImage(
            f"the image header is corrupt or cut short ({str(exc)[:200] or type(exc).__name__});"
            " is the file complete?"
        ) from exc
    width, height = image.size
    if width * height > max_pixels:
        raise PayloadTooLarge(
            f"image is {width}x{height} = {width * height} pixels, over the limit of "
            f"{max_pixels}; downscale it or raise FACEPIPE_MAX_PIXELS"
        )
    if width < 1 or height < 1:
        raise InvalidImage(f"the image header says {width}x{height} pixels: nothing to decode")
    try:
        frames = getattr(image, "n_frames", 1)
    except Exception as exc:  # counting frames reads the file: a corrupt one fails here
        raise InvalidImage(
            f"the image could not be decoded ({str(exc)[:200] or type(exc).__name__}); "
            "is the file complete?"
        ) from exc
    if frames > 1:
        raise InvalidImage(
            f"animated or multi-page images are not accepted ({image.format}, {frames} frames);"
            " send one still frame per request"
        )
    return image


def load_image(image: Image.Image) -> Image.Image:
    """Decode an image :func:`open_image` checked: upright (EXIF orientation) RGB pixels."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns about odd palettes, EXIF, ...
            image.load()
            upright = ImageOps.exif_transpose(image)
            return upright.convert("RGB")
    except Exception as exc:  # Pillow raises OSError, ValueError, SyntaxError, struct.error...
        raise InvalidImage(
            f"the image could not be decoded ({str(exc)[:200] or type(exc).__name__}); "
            "is the file complete?"
        ) from exc


def encode_image(image: Image.Image, fmt: str = "JPEG", quality: int = 95) -> bytes:
    """Encode an image for sending (the client and tests use this)."""
    buf = io.BytesIO()
    image.save(buf, format=fmt, quality=quality)
    return buf.getvalue()

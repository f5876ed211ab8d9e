"""Drawing a result on its image: a box per face and a ``name (similarity)`` label.

The image is decoded exactly as the detection function decodes it (:func:`facepipe.vision.frames.
decode_image`, EXIF orientation applied), so the boxes land on the pixels they were found in.
Nothing is resized; only the box outlines and labels change pixels.

Example:
    >>> path = write_annotated(Path("out"), frame_bytes, result)  # doctest: +SKIP
    >>> path.name  # doctest: +SKIP
    'demo.alice.jpg'
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from facepipe.messages import Result
from facepipe.vision.frames import decode_image

KNOWN = (46, 204, 64)  # a named face
UNKNOWN = (255, 133, 27)  # a face nobody in the gallery matches
TEXT = (0, 0, 0)
JPEG_QUALITY = 95
MAX_PIXELS = 400_000_000  # the file was accepted by the stack already; this only stops bombs


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow < 10.1 or without FreeType: the small bitmap font
        return ImageFont.load_default()


def draw_result(image: Image.Image, result: Result) -> Image.Image:
    """A copy of ``image`` (RGB) with every face of ``result`` boxed and labelled."""
    out = image.convert("RGB")  # always a copy, never the caller's image
    draw = ImageDraw.Draw(out)
    width = max(2, round(min(out.size) / 300))
    font = _font(max(12, round(min(out.size) / 40)))
    for face in result.faces:
        x1, y1, x2, y2 = face.box
        color = UNKNOWN if face.name == "unknown" else KNOWN
        draw.rectangle((x1, y1, x2, y2), outline=color, width=width)
        text = face.label()
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        text_w, text_h = right - left + 2 * width, bottom - top + 2 * width
        # above the box when there is room, else just inside its top edge
        ty = y1 - text_h if y1 - text_h >= 0 else y1
        draw.rectangle((x1, ty, x1 + text_w, ty + text_h), fill=color)
        draw.text((x1 + width - left, ty + width - top), text, fill=TEXT, font=font)
    return out


def write_annotated(folder: Path, data: bytes, result: Result) -> Path:
    """Decode ``data``, draw ``result`` on it and save ``<folder>/<request_id>.jpg``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{result.request_id}.jpg"
    draw_result(decode_image(data, max_pixels=MAX_PIXELS), result).save(
        path, "JPEG", quality=JPEG_QUALITY
    )
    return path

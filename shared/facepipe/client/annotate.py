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
NO_FACE = (170, 170, 170)  # a frame without faces (its status)
TEXT = (0, 0, 0)
JPEG_QUALITY = 95
MAX_PIXELS = 400_000_000  # the file was accepted by the stack already; this only stops bombs


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow < 10.1 or without FreeType: the small bitmap font
        return ImageFont.load_default()


def label_origin(
    box: tuple[float, float, float, float], label: tuple[float, float], image: tuple[int, int]
) -> tuple[float, float]:
    """Where a ``label`` (width, height) goes for a face ``box`` (already clipped to the
    ``image``'s width and height): above the box when there is room, else just inside its top
    edge; moved left or up as far as needed to stay whole inside the image."""
    x1, y1 = box[0], box[1]
    (label_w, label_h), (width, height) = label, image
    ty = y1 - label_h if y1 - label_h >= 0 else y1
    return max(0.0, min(x1, width - label_w)), max(0.0, min(ty, height - label_h))


def draw_result(image: Image.Image, result: Result) -> Image.Image:
    """A copy of ``image`` (RGB) with every face of ``result`` boxed and labelled, boxes and
    labels kept inside the image; a frame without faces gets its status (``no_face``, or the
    error's code) in its top-left corner, so no annotated file looks unprocessed."""
    out = image.convert("RGB")  # always a copy, never the caller's image
    draw = ImageDraw.Draw(out)
    width = max(2, round(min(out.size) / 300))
    font = _font(max(12, round(min(out.size) / 40)))

    def tag(text: str, color: tuple[int, int, int], box: tuple[float, float, float, float]) -> None:
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        size = (right - left + 2 * width, bottom - top + 2 * width)
        tx, ty = label_origin(box, size, out.size)
        draw.rectangle((tx, ty, tx + size[0], ty + size[1]), fill=color)
        draw.text((tx + width - left, ty + width - top), text, fill=TEXT, font=font)

    for face in result.faces:
        x1, y1, x2, y2 = face.box
        box = (max(0.0, x1), max(0.0, y1), min(out.width - 1.0, x2), min(out.height - 1.0, y2))
        color = UNKNOWN if face.name == "unknown" else KNOWN
        draw.rectangle(box, outline=color, width=width)
        tag(face.label(), color, box)
    if not result.faces:
        status = result.error.code if result.error else result.status
        tag(status.replace("_", " "), NO_FACE, (0.0, 0.0, 0.0, 0.0))
    return out


def write_annotated(folder: Path, data: bytes, result: Result) -> Path:
    """Decode ``data``, draw ``result`` on it and save ``<folder>/<request_id>.jpg``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{result.request_id}.jpg"
    draw_result(decode_image(data, max_pixels=MAX_PIXELS), result).save(
        path, "JPEG", quality=JPEG_QUALITY
    )
    return path

"""Fitting a frame into one request body: the Function URL takes at most 6 MB (Lambda's
synchronous payload), and base64 makes a frame's bytes a third larger, so a frame of more than
about 4.5 MB cannot be POSTed as it is.

Such a frame is decoded (EXIF-upright, as detection would) and sent as a JPEG, downscaled only as
much as it must be; its request says the frame's ``original_size`` and detection gives boxes and
landmarks in the original's pixels. A frame that cannot be decoded, or would have to shrink below
:data:`MIN_SCALE` of its sides, is refused with :class:`FrameTooLarge`, which points to
``facepipe upload`` (photos uploaded to the bucket have no request body limit).

Example:
    >>> data, size, original = fit_image(big_png, room=4_700_000)  # doctest: +SKIP
    >>> size, original  # doctest: +SKIP
    ((4243, 2829), (6000, 4000))
"""

from __future__ import annotations

from PIL import Image

from facepipe.client.sources import JPEG_QUALITY
from facepipe.errors import FacepipeError, InvalidRequest
from facepipe.vision.frames import decode_image, encode_image

MIN_SCALE = 0.25  # a frame is never sent at less than a quarter of its sides: faces would vanish
MAX_PIXELS = 178_956_970  # the most a frame to fit may hold: Pillow's own hard limit
UPLOAD_ADVICE = (
    "upload it to the stack's bucket instead, where the request body limit does not apply: "
    "`facepipe upload FILE`"
)


class FrameTooLarge(FacepipeError):
    """A frame too large for one request body that cannot be made to fit."""

    code = "frame_too_large"
    status = 413


def fit_image(data: bytes, room: int) -> tuple[bytes, tuple[int, int], tuple[int, int]]:
    """``data`` (an image file) as a JPEG of at most ``room`` bytes, at full size when that fits,
    else downscaled (aspect kept) just enough → (the JPEG, its size, the original's size)."""
    try:
        image = decode_image(data, max_pixels=MAX_PIXELS)
    except InvalidRequest as exc:
        raise FrameTooLarge(
            f"{len(data)} bytes, more than the {room} of image one request body holds, and it "
            f"cannot be decoded to downscale it ({exc.message}); {UPLOAD_ADVICE}"
        ) from exc
    original = image.size
    scale = 1.0
    while True:
        size = (max(1, round(original[0] * scale)), max(1, round(original[1] * scale)))
        shrunk = image if size == original else image.resize(size, Image.Resampling.BILINEAR)
        jpeg = encode_image(shrunk, "JPEG", quality=JPEG_QUALITY)
        if len(jpeg) <= room:
            return jpeg, size, original
        if scale <= MIN_SCALE:
            raise FrameTooLarge(
                f"{len(data)} bytes, more than the {room} of image one request body holds, and "
                f"still {len(jpeg)} bytes as a JPEG downscaled to {size[0]}x{size[1]} (a quarter "
                f"of its sides); {UPLOAD_ADVICE}"
            )
        # JPEG bytes go roughly with the pixels: aim a little under the room
        scale = max(MIN_SCALE, scale * min(0.9, 0.97 * (room / len(jpeg)) ** 0.5))

"""Frame decoding: base64, formats, EXIF orientation and limits checked before decoding."""

from __future__ import annotations

import base64
import io
import struct
import time
import zlib

import pytest
from PIL import Image

from facepipe.errors import InvalidImage, InvalidRequest, PayloadTooLarge
from facepipe.vision.frames import decode_base64, decode_image


def _encode(image: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _gradient(w: int = 64, h: int = 32) -> Image.Image:
    img = Image.new("RGB", (w, h))
    img.putdata([(x * 4 % 256, y * 8 % 256, 128) for y in range(h) for x in range(w)])
    return img


def test_base64_roundtrip_tolerates_whitespace_and_data_url() -> None:
    raw = bytes(range(256))
    text = base64.b64encode(raw).decode()
    assert decode_base64(text) == raw
    assert decode_base64("\n".join(text[i : i + 76] for i in range(0, len(text), 76))) == raw
    assert decode_base64("data:image/jpeg;base64," + text) == raw


@pytest.mark.parametrize("bad", ["", "not base64!", "aGk", "a" * 5])
def test_base64_errors_name_the_field(bad: str) -> None:
    with pytest.raises(InvalidRequest, match="content"):
        decode_base64(bad)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_accepted_formats_decode_to_rgb(fmt: str) -> None:
    image = decode_image(_encode(_gradient(), fmt), max_pixels=10_000)
    assert image.mode == "RGB"
    assert image.size == (64, 32)


def test_png_with_alpha_and_grayscale_become_rgb() -> None:
    rgba = _gradient().convert("RGBA")
    assert decode_image(_encode(rgba, "PNG"), max_pixels=10_000).mode == "RGB"
    gray = _gradient().convert("L")
    assert decode_image(_encode(gray, "JPEG"), max_pixels=10_000).mode == "RGB"


def test_exif_orientation_is_honoured() -> None:
    img = _gradient(64, 32)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise for display
    data = _encode(img, "JPEG", exif=exif.tobytes())
    upright = decode_image(data, max_pixels=10_000)
    assert upright.size == (32, 64)
    # The top-left pixel of the upright frame is the original bottom-left one.
    orig = decode_image(_encode(img, "JPEG"), max_pixels=10_000)
    assert abs(upright.getpixel((31, 0))[1] - orig.getpixel((0, 0))[1]) <= 8


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", InvalidImage),
        (b"GIF89a" + b"\0" * 20, InvalidImage),
        (b"hello, this is text with a .jpg name", InvalidImage),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", InvalidImage),
    ],
)
def test_non_images_are_refused(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        decode_image(data, max_pixels=10_000)


def test_real_gif_is_refused_with_the_accepted_formats() -> None:
    with pytest.raises(InvalidImage, match="JPEG, PNG"):
        decode_image(_encode(_gradient(), "GIF"), max_pixels=10_000)


def test_truncated_jpeg_is_refused() -> None:
    data = _encode(_gradient(256, 256), "JPEG")
    with pytest.raises(InvalidImage, match="complete"):
        decode_image(data[: len(data) // 2], max_pixels=1_000_000)


def test_animated_webp_is_refused() -> None:
    frames = [_gradient(), _gradient().rotate(180)]
    buf = io.BytesIO()
    frames[0].save(buf, format="WEBP", save_all=True, append_images=frames[1:])
    with pytest.raises(InvalidImage, match="animated"):
        decode_image(buf.getvalue(), max_pixels=10_000)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height and whose data is a few bytes."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))


def test_pixel_limit_is_checked_from_the_header_before_decoding() -> None:
    bomb = _png_header_only(60_000, 60_000)  # 3.6 gigapixels, ~10 GB if decoded
    start = time.perf_counter()
    with pytest.raises(PayloadTooLarge, match="pixels"):
        decode_image(bomb, max_pixels=40_000_000)
    assert time.perf_counter() - start < 2.0  # wide margin: refusal must not decode


def test_pixel_limit_is_configurable() -> None:
    data = _encode(_gradient(64, 32), "PNG")
    with pytest.raises(PayloadTooLarge, match="FACEPIPE_MAX_PIXELS"):
        decode_image(data, max_pixels=64 * 32 - 1)
    assert decode_image(data, max_pixels=64 * 32).size == (64, 32)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("aGk-aGk_", "URL-safe alphabet"),
        ("aGk", "not a multiple of 4"),
        ("aGk=aGk=", "may only end the text"),
        ("aGk=====", "at most twice"),
        ("aG*k", "character 2"),
        ("data:image/png,aGk=", ";base64,"),
    ],
)
def test_base64_errors_say_what_is_wrong(text: str, words: str) -> None:
    with pytest.raises(InvalidRequest, match=words):
        decode_base64(text)


def test_tiff_and_gif_only_when_asked_for_and_never_multi_frame() -> None:
    tiff = _encode(_gradient(), "TIFF")
    with pytest.raises(InvalidImage, match=r"accepted format \(JPEG, PNG, WebP\)"):
        decode_image(tiff, max_pixels=10_000)
    assert decode_image(tiff, max_pixels=10_000, formats={"TIFF"}).size == (64, 32)
    buf = io.BytesIO()
    _gradient().save(buf, format="GIF", save_all=True, append_images=[_gradient().rotate(180)])
    with pytest.raises(InvalidImage, match="animated or multi-page"):
        decode_image(buf.getvalue(), max_pixels=10_000, formats={"GIF"})

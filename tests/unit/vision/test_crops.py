"""Crops travel losslessly and are standardised exactly as facenet-pytorch does it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from facenet_pytorch import fixed_image_standardization
from torchvision.transforms import functional as tvf

from facepipe.errors import InvalidMessage
from facepipe.vision.crops import (
    crop_from_b64,
    crop_sides,
    crop_to_b64,
    decode_png,
    encode_png,
    standardize,
)


def test_png_roundtrip_is_bit_exact() -> None:
    rng = np.random.default_rng(0)
    crop = rng.integers(0, 256, size=(160, 160, 3), dtype=np.uint8)
    assert np.array_equal(decode_png(encode_png(crop)), crop)
    assert np.array_equal(crop_from_b64(crop_to_b64(crop)), crop)


def test_encode_rejects_non_uint8() -> None:
    with pytest.raises(ValueError, match="uint8"):
        encode_png(np.zeros((4, 4, 3), np.float32))


def test_bad_crop_bytes_are_an_invalid_message() -> None:
    with pytest.raises(InvalidMessage):
        crop_from_b64("!!!")
    with pytest.raises(InvalidMessage):
        decode_png(b"\x89PNG not really")


def test_standardize_matches_facenet_post_process() -> None:
    rng = np.random.default_rng(1)
    crops = [rng.integers(0, 256, size=(160, 160, 3), dtype=np.uint8) for _ in range(3)]
    ours = torch.from_numpy(standardize(crops))
    # facenet-pytorch: extract_face → F.to_tensor(np.float32(face)) → fixed_image_standardization
    theirs = torch.stack([fixed_image_standardization(tvf.to_tensor(np.float32(c))) for c in crops])
    assert ours.shape == (3, 3, 160, 160)
    assert torch.equal(ours, theirs)


def test_crop_sides_are_checked_from_the_header_before_decoding() -> None:
    crop = np.zeros((74, 74, 3), dtype=np.uint8)
    with pytest.raises(InvalidMessage, match="74x74 pixels; this embedder takes 75 to 1024"):
        decode_png(encode_png(crop), crop_sides("vggface2"))
    with pytest.raises(InvalidMessage, match="takes 150x150"):
        decode_png(encode_png(np.zeros((160, 160, 3), dtype=np.uint8)), crop_sides("dlib"))
    assert decode_png(encode_png(crop)).shape == (74, 74, 3)  # no sides: anything

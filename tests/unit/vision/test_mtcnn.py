"""The fast MTCNN path against facenet-pytorch itself: same networks, bit-identical resampling,
the same crops, and the same faces on real photos at several resolutions."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from facenet_pytorch import MTCNN, extract_face
from facenet_pytorch.models import mtcnn as facenet_mtcnn
from PIL import Image
from torch.nn.functional import interpolate

from facepipe.vision.detector import extract_face as our_extract_face
from facepipe.vision.mtcnn import boxes as ours_boxes
from facepipe.vision.mtcnn.detect import Mtcnn
from facepipe.vision.mtcnn.nets import (
    ONet,
    PNet,
    RNet,
    SlopeTiles,
    _max_pool_2x2,
    _prelu,
    load_net,
    onednn_available,
)
from facepipe.vision.mtcnn.resample import Integral
from tests.conftest import SAMPLES

PHOTOS = [SAMPLES / "astronaut.jpg", SAMPLES / "frames" / "obama-and-biden.jpg"]


@pytest.fixture(scope="module")
def reference() -> MTCNN:
    return MTCNN(keep_all=True, device="cpu")


@pytest.fixture(scope="module")
def fast() -> Mtcnn:
    return Mtcnn()


@pytest.mark.parametrize(
    ("ours", "theirs", "side"),
    [
        (PNet, facenet_mtcnn.PNet, 37),
        (RNet, facenet_mtcnn.RNet, 24),
        (ONet, facenet_mtcnn.ONet, 48),
    ],
)
@pytest.mark.parametrize("onednn", [True, False], ids=["onednn", "channels-last"])
def test_networks_are_facenets(ours, theirs, side, onednn) -> None:  # type: ignore[no-untyped-def]
    """Same architecture and weights: our modules give facenet-pytorch's outputs, both on the
    CPU path as loaded (the R- and O-net's convolutions on oneDNN's tensors) and on the
    channels-last modules alone (the CUDA path)."""
    name = theirs.__name__.lower()
    mine, ref = load_net(ours(), name, "cpu"), theirs(pretrained=True).eval()
    if ours is not PNet:
        assert bool(mine.onednn) is onednn_available()
        if not onednn:
            mine.onednn = []
    x = torch.rand(5, 3, side, side) * 2 - 1
    with torch.inference_mode():
        for a, b in zip(mine(x.contiguous(memory_format=torch.channels_last)), ref(x), strict=True):
            assert a.shape == b.shape
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shape", [(1, 10, 37, 52), (1, 16, 12, 12), (3, 32, 13, 9), (2, 10, 1, 1)])
def test_pnet_prelu_and_pool_are_torchs_bit_for_bit(shape: tuple[int, int, int, int]) -> None:
    """The row-wise PReLU and the two-maxima 2×2 ceil-mode pool give torch's own values exactly
    (odd and even sides, batches), in channels-last memory."""
    gen = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(shape, generator=gen).contiguous(memory_format=torch.channels_last)
    slopes = torch.randn(shape[1], generator=gen)
    with torch.inference_mode():
        prelu = _prelu(x, SlopeTiles().row(slopes, shape[3]))
        assert torch.equal(prelu, torch.nn.functional.prelu(x, slopes))
        pooled = _max_pool_2x2(x)
        assert torch.equal(pooled, torch.nn.functional.max_pool2d(x, 2, 2, ceil_mode=True))
    assert pooled.is_contiguous(memory_format=torch.channels_last)
    assert prelu.is_contiguous(memory_format=torch.channels_last)


def test_slope_tiles_are_the_repeated_slopes_at_every_width() -> None:
    """One tile serves every width: the widest map first (as the pyramid's levels come), then
    narrower ones as prefixes of it, then a wider one grows it; each row is
    ``weight.repeat(width)`` exactly."""
    slopes = torch.randn(10, generator=torch.Generator().manual_seed(3))
    tiles = SlopeTiles()
    for width in (57, 40, 1, 57, 91, 12):
        assert torch.equal(tiles.row(slopes, width), slopes.repeat(width)), width
    assert tiles.tile is not None and len(tiles.tile) == 91 * 10  # grown once, to the widest


def test_candidates_are_facenets_generate_bounding_box_bit_for_bit() -> None:
    """The P-net map → candidate rows in NumPy: facenet-pytorch's ``generateBoundingBox`` on
    the same map, row for row and bit for bit, over many map sizes and pyramid scales (none
    above the threshold included), as the P-net hands them over (channels-last views)."""
    from facenet_pytorch.models.utils.detect_face import generateBoundingBox

    gen = torch.Generator().manual_seed(7)
    for h, w, scale in [(1, 1, 0.6), (7, 3, 0.6), (40, 71, 0.213), (320, 572, 0.6), (30, 50, 0.01)]:
        reg = torch.randn(1, h, w, 4, generator=gen).permute(0, 3, 1, 2)
        probs = torch.rand(1, h, w, 2, generator=gen).permute(0, 3, 1, 2)[:, 1]
        for threshold in (0.6, 1.1):
            theirs, _ = generateBoundingBox(reg, probs, scale, threshold)
            ours = torch.from_numpy(ours_boxes.generateBoundingBox(reg, probs, scale, threshold))
            assert ours.dtype == theirs.dtype and torch.equal(ours, theirs), (h, w, threshold)


@pytest.mark.parametrize(
    "count", [0, 1, 2, 40, ours_boxes.NMS_BLOCK + 57, 3 * ours_boxes.NMS_BLOCK]
)
def test_nms_keeps_torchvisions_boxes(count: int) -> None:
    """Clustered candidates (many overlaps, several row blocks): the same kept indices in the
    same order as torchvision's ``nms``, which facenet-pytorch's ``detect_face`` calls."""
    from torchvision.ops import nms

    gen = torch.Generator().manual_seed(count)
    centres = torch.rand(max(1, count // 20), 2, generator=gen) * 600
    pick = torch.randint(0, len(centres), (count,), generator=gen)
    xy = centres[pick] + torch.randn(count, 2, generator=gen) * 8
    side = 20 + torch.rand(count, 1, generator=gen) * 40
    boxes = torch.cat([xy, xy + side], dim=1)
    scores = torch.rand(count, generator=gen)
    for threshold in (0.5, 0.7):
        ours = ours_boxes.nms(boxes.numpy(), scores.numpy(), threshold)
        assert ours.tolist() == nms(boxes, scores, threshold).tolist()


def _photo(height: int | None = None) -> np.ndarray:
    image = Image.open(PHOTOS[1]).convert("RGB")
    if height:
        image = image.resize((round(image.width * height / image.height), height))
    return np.asarray(image)


def _normalised(x: torch.Tensor) -> torch.Tensor:
    """facenet-pytorch's ``detect_face``: ``(imresample(...) - 127.5) * 0.0078125``."""
    return (x - 127.5) * 0.0078125


@pytest.mark.parametrize("height", [None, 333, 1080])
def test_pyramid_is_torch_area_interpolation_bit_for_bit(height: int | None) -> None:
    """Every level (computed in row blocks, on both threads for the large ones) is facenet's
    normalised ``interpolate(mode="area")`` exactly."""
    rgb = _photo(height)
    frame = torch.from_numpy(rgb.copy())[None].permute(0, 3, 1, 2).float()
    integral = Integral(rgb)
    for scale in Mtcnn().scales(*rgb.shape[:2]):
        size = (int(rgb.shape[0] * scale + 1), int(rgb.shape[1] * scale + 1))
        theirs = _normalised(interpolate(frame, size=size, mode="area"))
        assert torch.equal(integral.level(*size), theirs)


@pytest.mark.parametrize("count", [50, 400])  # 400: cut across the threads
def test_box_crops_are_facenets_per_box_resampling_bit_for_bit(count: int) -> None:
    rgb = _photo()
    frame = torch.from_numpy(rgb.copy())[None].permute(0, 3, 1, 2).float()
    rng = np.random.default_rng(count)
    h, w = rgb.shape[:2]
    y0 = rng.integers(0, h - 1, count)
    x0 = rng.integers(0, w - 1, count)
    y1 = np.minimum(h, y0 + rng.integers(1, 400, count))
    x1 = np.minimum(w, x0 + rng.integers(1, 400, count))
    for size in (24, 48):
        ours = Integral(rgb).crops(y0, y1, x0, x1, size)
        theirs = torch.cat(
            [
                interpolate(frame[:, :, a:b, c:d], size=(size, size), mode="area")
                for a, b, c, d in zip(y0, y1, x0, x1, strict=True)
            ]
        )
        assert torch.equal(ours, _normalised(theirs))


def test_large_frames_use_an_exact_wider_integral() -> None:
    """Past 2**31 / 255 pixels an int32 integral would overflow: float64 sums stay exact."""
    rgb = np.full((3000, 2900, 3), 255, np.uint8)
    integral = Integral(rgb)
    assert integral.sums.dtype == np.float64
    assert torch.equal(integral.level(7, 5), _normalised(torch.full((1, 3, 7, 5), 255.0)))


def test_extract_face_is_facenets(reference: MTCNN) -> None:
    image = Image.open(PHOTOS[1]).convert("RGB")
    boxes, _ = reference.detect(image)
    boxes = [*boxes, np.array([-20.5, -3.2, 90.7, 2000.1], np.float32)]  # clipped at every edge
    for box in boxes:
        for size, margin in ((160, 0), (160, 32), (96, 10)):
            theirs = extract_face(image, box, size, margin).permute(1, 2, 0).numpy()
            assert np.array_equal(our_extract_face(image, box, size, margin), theirs)


@pytest.mark.parametrize("height", [None, 480, 720, 1080])
@pytest.mark.parametrize("photo", PHOTOS, ids=lambda p: p.name)
def test_same_faces_as_facenet_mtcnn(reference: MTCNN, fast: Mtcnn, photo, height) -> None:  # type: ignore[no-untyped-def]
    image = Image.open(photo).convert("RGB")
    if height:
        image = image.resize((round(image.width * height / image.height), height))
    ref_boxes, ref_probs, ref_points = reference.detect(image, landmarks=True)
    boxes, points = fast.detect(np.asarray(image))
    assert len(boxes) == len(ref_boxes) > 0
    # Convolutions in channels-last memory sum in another order: the last bits may differ.
    np.testing.assert_allclose(boxes[:, :4], np.asarray(ref_boxes, np.float32), atol=1e-3)
    np.testing.assert_allclose(boxes[:, 4], np.asarray(ref_probs, np.float32), atol=1e-5)
    np.testing.assert_allclose(points, np.asarray(ref_points, np.float32), atol=1e-3)


def test_blank_and_tiny_frames_have_no_faces(fast: Mtcnn) -> None:
    boxes, points = fast.detect(np.zeros((200, 300, 3), np.uint8))
    assert boxes.shape == (0, 5)
    assert points.shape == (0, 5, 2)
    assert fast.detect(np.zeros((10, 10, 3), np.uint8))[0].shape == (0, 5)


def test_detector_does_not_import_torchvision() -> None:
    """torchvision (through facenet-pytorch's package __init__) costs ~1.2 s of cold start."""
    code = (
        "import sys; from facepipe.vision.detector import FaceDetector; FaceDetector(); "
        "print('torchvision' in sys.modules, 'facenet_pytorch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    assert out.stdout.split() == ["False", "False"]


def test_max_detect_side_finds_the_same_faces_in_full_frame_pixels() -> None:
    """Detection on a downscaled 1080p frame: boxes come back in the frame's own pixels, close to
    full-size detection, and crops are cut from the full frame."""
    from facepipe.vision.detector import FaceDetector

    image = Image.open(PHOTOS[1]).convert("RGB")
    image = image.resize((round(image.width * 1080 / image.height), 1080))
    full = FaceDetector().detect(image)
    small = FaceDetector(max_side=640).detect(image)
    assert len(small) == len(full) == 2
    for a in small:
        b = min(full, key=lambda f: abs(f.box[0] - a.box[0]) + abs(f.box[1] - a.box[1]))
        ix = max(0.0, min(a.box[2], b.box[2]) - max(a.box[0], b.box[0]))
        iy = max(0.0, min(a.box[3], b.box[3]) - max(a.box[1], b.box[1]))
        area = (a.box[2] - a.box[0]) * (a.box[3] - a.box[1])
        union = area + (b.box[2] - b.box[0]) * (b.box[3] - b.box[1]) - ix * iy
        assert ix * iy / union > 0.85
        assert all(abs(p - q) < 15 for (p, _), (q, _) in zip(a.landmarks, b.landmarks, strict=True))
        assert a.crop.shape == (160, 160, 3)
        assert np.array_equal(a.crop, our_extract_face(image, np.float32(a.box)))
    # smaller than the limit: untouched
    assert [f.box for f in FaceDetector(max_side=4000).detect(image)] == [f.box for f in full]

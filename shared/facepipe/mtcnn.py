"""MTCNN face detection, facenet-pytorch's networks and weights on a faster path.

facenet-pytorch's ``detect_face`` spends most of a large frame's time outside its networks:
every pyramid level and every candidate box is resampled with its own
``interpolate(mode="area")`` call (hundreds per frame), candidate crops are cut one by one in a
Python loop, and the 2×2 max-pool of the P-net runs torch's generic pooling kernel on the
largest feature maps. Importing it also imports torchvision (and with it ``torch._dynamo``,
1.2 s of cold start) for one NMS call.

:class:`Mtcnn` runs the same algorithm step for step (same scales, thresholds, NMS order and
box arithmetic) with that glue replaced:

- one integral image per frame (exact integer sums) serves every pyramid level and every R-/O-net
  crop: an area-resampled pixel is a window sum divided by its height, then its width, which is
  exactly what torch's adaptive average pooling computes, so the inputs are bit-identical; the
  levels are computed a few rows at a time, from sums to normalised input, in cache;
- all candidate crops of a stage are gathered in one vectorised step;
- the P-net's PReLUs run row by row over channels-last memory with the slopes tiled, and its
  2×2/stride-2 ceil-mode max-pool is two element-wise maxima of strided views (same values,
  2–3× faster than torch's channels-last kernels on 10–32 channels);
- NMS is a greedy pass in NumPy over blocks of the overlap matrix (torchvision's rule: suppress
  IoU > threshold, stable descending score order), so torchvision is never imported.

The networks are facenet-pytorch's P-, R- and O-net architectures (the same layer names, so its
``data/{p,r,o}net.pt`` load unchanged) in :class:`PNet`, :class:`RNet`, :class:`ONet`; a unit
test checks them against facenet-pytorch's own modules output for output, and the benchmark
(``make bench``) reports box IoU and embedding cosine against plain facenet-pytorch.
"""

from __future__ import annotations

import importlib.util
import itertools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch import nn

# facenet-pytorch's MTCNN defaults.
THRESHOLDS = (0.6, 0.7, 0.7)
FACTOR = 0.709


def weights_dir() -> Path:
    """facenet-pytorch's ``data`` folder (its bundled MTCNN weights), found without importing
    the package (whose ``__init__`` imports torchvision)."""
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("facenet-pytorch is not installed (it ships the MTCNN weights)")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


class PNet(nn.Module):
    """MTCNN P-net (facenet-pytorch's ``PNet``, same parameters)."""

    heads_weight: torch.Tensor
    heads_bias: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, kernel_size=3)
        self.prelu1 = nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(10, 16, kernel_size=3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, kernel_size=3)
        self.prelu3 = nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, kernel_size=1)
        self.conv4_2 = nn.Conv2d(32, 4, kernel_size=1)
        # Both 1×1 heads stacked (2 + 4 outputs), filled by :meth:`weights_loaded` once
        # the weights are loaded rather than concatenated on every call.
        self.register_buffer("heads_weight", torch.zeros(6, 32), persistent=False)
        self.register_buffer("heads_bias", torch.zeros(6), persistent=False)
        self.slopes = {name: SlopeTiles() for name in ("prelu1", "prelu2", "prelu3")}

    def weights_loaded(self) -> None:
        """Refresh what is derived from the weights: the stacked heads, the slope tiles."""
        for tiles in self.slopes.values():
            tiles.tile = None
        with torch.no_grad():
            self.heads_weight.copy_(
                torch.cat((self.conv4_1.weight, self.conv4_2.weight)).view(6, 32)
            )
            bias_1, bias_2 = self.conv4_1.bias, self.conv4_2.bias
            assert bias_1 is not None and bias_2 is not None  # Conv2d(bias=True)
            self.heads_bias.copy_(torch.cat((bias_1, bias_2)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # The PReLUs and the 2×2 pool as row-wise passes over channels-last memory (same
        # values as ``self.prelu*`` / ``self.pool1``; see :func:`_prelu`, :func:`_max_pool_2x2`).
        x = _max_pool_2x2(self._prelu(self.conv1(x), "prelu1"))
        x = self._prelu(self.conv2(x), "prelu2")
        x = self._prelu(self.conv3(x), "prelu3")
        # Both 1×1 heads as one matrix product, weights (6 × 32) times the channels-last rows
        # transposed (32 × cells): 2 + 4 output planes, channels-first, as facenet-pytorch's
        # two 1×1 convolutions give them (its softmax then runs over the same layout). oneDNN's
        # 1×1 convolutions with 2 and 4 outputs took twice as long for the same sums, a linear
        # over the rows (cells × 6) 1.2–1.9× as long.
        n, c, h, w = x.shape
        rows = x.permute(0, 2, 3, 1).reshape(-1, c)
        heads = torch.addmm(self.heads_bias[:, None], self.heads_weight, rows.T)
        heads = heads.view(6, n, h, w).transpose(0, 1)
        return heads[:, 2:], torch.softmax(heads[:, :2], dim=1)

    def _prelu(self, x: torch.Tensor, name: str) -> torch.Tensor:
        weight = getattr(self, name).weight
        return _prelu(x, self.slopes[name].row(weight, x.shape[3]))


class SlopeTiles:
    """A PReLU's ``C`` slopes tiled along a channels-last row of ``W`` pixels: :meth:`row` is
    ``weight.repeat(W)``, as a prefix view of one tile kept from call to call (grown when a
    wider map comes) rather than a new tensor on each of the P-net's ~35 PReLU calls per frame
    (a fresh ``repeat`` per call was 3 % of detection at 480p and 1080p)."""

    def __init__(self) -> None:
        self.tile: torch.Tensor | None = None

    def row(self, weight: torch.Tensor, width: int) -> torch.Tensor:
        length = width * len(weight)
        tile = self.tile  # one read: another thread may grow it meanwhile
        if tile is None or len(tile) < length or tile.device != weight.device:
            tile = self.tile = weight.detach().repeat(width)
        return tile[:length]


def _prelu(x: torch.Tensor, slopes: torch.Tensor) -> torch.Tensor:
    """``prelu(x, weight)`` of an ``N×C×H×W`` map in channels-last memory, computed as one pass
    over ``N·H`` rows of ``W·C`` values with ``slopes``, the weight tiled along the row
    (``weight.repeat(W)``, see :class:`SlopeTiles`). torch's own channels-last PReLU broadcasts
    the ``C`` slopes over the innermost dimension, which for the P-net's 10–32 channels runs at
    half the speed; the values are the same (the same ``x if x > 0 else a·x`` per element)."""
    n, c, h, w = x.shape
    rows = x.permute(0, 2, 3, 1).reshape(n * h, w * c)
    out = torch.nn.functional.prelu(rows, slopes)
    return out.view(n, h, w, c).permute(0, 3, 1, 2)


def _max_pool_2x2(x: torch.Tensor) -> torch.Tensor:
    """``MaxPool2d(2, 2, ceil_mode=True)`` of a channels-last map as two element-wise maxima
    (row pairs, then column pairs, over strided views); an odd last row or column is its own
    window, as in ceil mode. Maxima are exact, so the values are the pool's; 3× faster than the
    channels-last pooling kernel on the P-net's 10-channel maps."""
    n, c, h, w = x.shape
    nhwc = x.permute(0, 2, 3, 1)
    rows = torch.empty((n, (h + 1) // 2, w, c), dtype=x.dtype, device=x.device)
    torch.maximum(nhwc[:, 0 : h - 1 : 2], nhwc[:, 1:h:2], out=rows[:, : h // 2])
    if h % 2:
        rows[:, -1] = nhwc[:, -1]
    out = torch.empty((n, (h + 1) // 2, (w + 1) // 2, c), dtype=x.dtype, device=x.device)
    torch.maximum(rows[:, :, 0 : w - 1 : 2], rows[:, :, 1:w:2], out=out[:, :, : w // 2])
    if w % 2:
        out[:, :, -1] = rows[:, :, -1]
    return out.permute(0, 3, 1, 2)


class OneDnnConv:
    """A convolution run by oneDNN on its own blocked tensors (``torch.mkldnn_convolution``),
    with the weights reordered into oneDNN's layout once instead of on every call (as
    ``torch.utils.mkldnn.to_mkldnn`` does, without its deprecated TorchScript modules)."""

    def __init__(self, conv: nn.Conv2d) -> None:
        assert isinstance(conv.padding, tuple)  # the MTCNN nets' convolutions: no padding
        self.padding = list(conv.padding)
        self.stride = list(conv.stride)
        self.dilation = list(conv.dilation)
        self.groups = conv.groups
        self.weight = torch._C._nn.mkldnn_reorder_conv2d_weight(
            conv.weight.detach().to_mkldnn(), self.padding, self.stride, self.dilation, self.groups
        )
        self.bias = None if conv.bias is None else conv.bias.detach()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.mkldnn_convolution(
            x, self.weight, self.bias, self.padding, self.stride, self.dilation, self.groups
        )


# One trunk layer of the R- or O-net: a convolution (torch's module or :class:`OneDnnConv`), its
# PReLU and its max-pool (none after the last convolution).
Layer = tuple[Callable[[torch.Tensor], torch.Tensor], nn.PReLU, nn.MaxPool2d | None]


def onednn_available() -> bool:
    """Whether this torch has oneDNN and the two calls :class:`OneDnnConv` makes (one is
    private, as in ``torch.utils.mkldnn``); without them the nets stay channels-last."""
    return (
        bool(torch.backends.mkldnn.is_available())
        and hasattr(torch, "mkldnn_convolution")
        and hasattr(torch._C._nn, "mkldnn_reorder_conv2d_weight")
    )


def _run_layers(layers: Sequence[Layer], x: torch.Tensor) -> torch.Tensor:
    for conv, prelu, pool in layers:
        x = prelu(conv(x))
        if pool is not None:
            x = pool(x)
    return x


class _CropNet(nn.Module):
    """The R- and O-net's common trunk, ``convN → preluN (→ poolN)`` for N = 1 … :attr:`depth`,
    run on channels-last tensors as loaded (the CUDA path) or, after :meth:`use_onednn`, on
    oneDNN's blocked tensors from the first layer to the last (the CPU path): there the R-net
    takes 0.80–0.90× the channels-last time (50–386 crops), the O-net 0.87–0.98× (7–40 crops).
    The P-net is faster channels-last (its 10- and 16-channel maps padded to oneDNN's
    16-channel blocks: 1.1–2.6× slower)."""

    depth: int
    onednn: list[Layer]

    def __init__(self) -> None:
        super().__init__()
        self.onednn = []  # see use_onednn

    def trunk(self) -> list[tuple[nn.Conv2d, nn.PReLU, nn.MaxPool2d | None]]:
        return [
            (getattr(self, f"conv{i}"), getattr(self, f"prelu{i}"), getattr(self, f"pool{i}", None))
            for i in range(1, self.depth + 1)
        ]

    def use_onednn(self) -> None:
        """Run the trunk on oneDNN's tensors (CPU), with the weights as they are now."""
        self.onednn = [(OneDnnConv(conv), prelu, pool) for conv, prelu, pool in self.trunk()]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The trunk's output, a plain ``N×C×H×W`` tensor on the oneDNN path."""
        if self.onednn:
            return _run_layers(self.onednn, x.to_mkldnn()).to_dense()
        return _run_layers(self.trunk(), x)


class RNet(_CropNet):
    """MTCNN R-net (facenet-pytorch's ``RNet``, same parameters)."""

    depth = 3

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 28, kernel_size=3)
        self.prelu1 = nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(28, 48, kernel_size=3)
        self.prelu2 = nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(48, 64, kernel_size=2)
        self.prelu3 = nn.PReLU(64)
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.features(x).permute(0, 3, 2, 1).contiguous()
        x = self.prelu4(self.dense4(x.view(x.shape[0], -1)))
        return self.dense5_2(x), torch.softmax(self.dense5_1(x), dim=1)


class ONet(_CropNet):
    """MTCNN O-net (facenet-pytorch's ``ONet``, same parameters)."""

    depth = 4

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3)
        self.prelu1 = nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.prelu2 = nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(64, 64, kernel_size=3)
        self.prelu3 = nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, kernel_size=2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.features(x).permute(0, 3, 2, 1).contiguous()
        x = self.prelu5(self.dense5(x.view(x.shape[0], -1)))
        return self.dense6_2(x), self.dense6_3(x), torch.softmax(self.dense6_1(x), dim=1)


def _load(net: nn.Module, name: str, device: str) -> nn.Module:
    state = torch.load(weights_dir() / f"{name}.pt", map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    if isinstance(net, PNet):
        net.weights_loaded()
    net.requires_grad_(False)  # inference only (and the P-net's out= maxima refuse autograd)
    net = net.eval().to(device).to(memory_format=torch.channels_last)
    if isinstance(net, _CropNet) and device == "cpu" and onednn_available():
        net.use_onednn()
    return net


# ---- resampling from an integral image -----------------------------------------------------


# Pyramid rows resampled at a time: on one thread, few enough that their sums stay in the core's
# cache; on several, more, since each block is a dozen short NumPy calls and the threads
# contend for the GIL between them (2-core machine, a 1080p frame's levels: 16 rows serial
# 18.5 ms, 16 rows on 2 threads 20.5 ms, 64 rows on 2 threads 15.4 ms).
ROW_BLOCK = 16
PARALLEL_ROW_BLOCK = 64


class Integral:
    """Exact window sums of one uint8 RGB frame (OpenCV's integral image, ~5 ms at 1080p):
    ``sums[y, x, c]`` is the sum of channel ``c`` over rows ``< y`` and columns ``< x``; int32
    while that cannot overflow, else float64 (exact to 2**53).

    :meth:`level` and :meth:`crops` return MTCNN's network input, facenet-pytorch's
    ``(imresample(x) - 127.5) * 0.0078125`` bit for bit: an area-resampled pixel is its window
    sum divided by the window's height, then its width (what torch's adaptive average pooling
    computes, in float32), then shifted and scaled, each step a float32 operation as in torch."""

    def __init__(self, rgb: np.ndarray) -> None:
        import cv2

        self.height, self.width = rgb.shape[:2]
        depth = cv2.CV_32S if self.height * self.width * 255 < 2**31 else cv2.CV_64F
        self.sums = cv2.integral(rgb, sdepth=depth)
        self.flat = self.sums.reshape(-1, 3)  # (H+1)(W+1) rows of 3 channel sums

    def level(self, out_h: int, out_w: int) -> torch.Tensor:
        """The whole frame area-resampled to ``out_h × out_w`` and normalised:
        ``1×3×out_h×out_w`` float32 in channels-last memory. Computed a block of rows at a time
        (:data:`ROW_BLOCK`, or :data:`PARALLEL_ROW_BLOCK` when split over threads) from sums to
        normalised values, so each block's intermediates stay in cache (half the time of
        whole-frame passes on a 1080p frame's largest levels)."""
        ys, ye = _windows(self.height, out_h)
        xs, xe = _windows(self.width, out_w)
        heights = (ye - ys).astype(np.float32)[:, None]
        widths = _per_channel(xe - xs)[None, :]
        out = np.empty((out_h, out_w, 3), np.float32)  # exact: window sums stay < 2**24
        rows_of_values = out.reshape(out_h, out_w * 3)
        work = out_h * (self.width + out_w)  # bands, then columns
        parallel = _parallel(out_h, work, LEVEL_PARALLEL_MIN_WORK)
        step = PARALLEL_ROW_BLOCK if parallel else ROW_BLOCK

        def part(rows: slice) -> None:
            for first in range(rows.start, rows.stop, step):
                block = slice(first, min(rows.stop, first + step))
                band = _take(self.sums, ye[block], 0) - _take(self.sums, ys[block], 0)
                np.subtract(
                    _take(band, xe, 1), _take(band, xs, 1), out=out[block], casting="unsafe"
                )
                _normalise(rows_of_values[block], heights[block], widths)

        _in_parallel(part, out_h, parallel)
        return torch.from_numpy(out)[None].permute(0, 3, 1, 2)

    def crops(
        self, y0: np.ndarray, y1: np.ndarray, x0: np.ndarray, x1: np.ndarray, size: int
    ) -> torch.Tensor:
        """Each region ``[y0, y1) × [x0, x1)`` area-resampled to ``size × size`` and normalised:
        ``K×3×size×size`` float32 (channels-last memory), bit-identical to facenet-pytorch's
        per-box ``imresample(img[:, :, y0:y1, x0:x1], (size, size))`` then its normalisation."""
        ys, ye = _box_windows(y0, y1, size)  # (K, size) each
        xs, xe = _box_windows(x0, x1, size)
        heights = (ye - ys).astype(np.float32)[:, :, None]
        widths = _per_channel(xe - xs)[:, None, :]
        stride = self.width + 1
        window = np.empty((len(y0), size, size, 3), np.float32)
        rows_of_values = window.reshape(len(y0), size, size * 3)

        def part(boxes: slice) -> None:
            def corner(y: np.ndarray, x: np.ndarray) -> np.ndarray:
                flat = (y[boxes, :, None] * stride + x[boxes, None, :]).reshape(-1)
                return _take(self.flat, flat, 0).reshape(-1, size, size, 3)

            sums = corner(ye, xe) - corner(ys, xe) - corner(ye, xs) + corner(ys, xs)
            window[boxes] = sums
            _normalise(rows_of_values[boxes], heights[boxes], widths[boxes])

        work = len(y0) * size * size
        _in_parallel(part, len(y0), _parallel(len(y0), work, CROP_PARALLEL_MIN_WORK))
        return torch.from_numpy(window).permute(0, 3, 1, 2)


def _per_channel(widths: np.ndarray) -> np.ndarray:
    """Window widths ``(..., W)`` as float32 repeated for the 3 channels, ``(..., 3W)``: a row
    of ``W×3`` values then divides by a contiguous array, 3–4× faster in NumPy than by a
    ``(..., W, 1)`` broadcast over a 3-wide innermost axis."""
    return np.repeat(widths.astype(np.float32), 3, axis=-1)


def _normalise(window: np.ndarray, heights: np.ndarray, widths: np.ndarray) -> None:
    """Window sums → MTCNN's input in place, as facenet-pytorch computes it in torch: float32
    ``sum / height / width`` (adaptive average pooling), then ``(x - 127.5) * 0.0078125``. Each
    step is one IEEE float32 operation, so NumPy's results are torch's, bit for bit. ``window``
    is rows of ``W×3`` values, ``heights`` one per row, ``widths`` from :func:`_per_channel`."""
    np.divide(window, heights, out=window)
    np.divide(window, widths, out=window)
    np.subtract(window, np.float32(127.5), out=window)
    np.multiply(window, np.float32(0.0078125), out=window)


def _take(values: np.ndarray, index: np.ndarray, axis: int) -> np.ndarray:
    """``np.take`` of indices known to be in range (``mode="clip"`` skips the bounds check that
    makes the default mode twice as slow; in-range indices are taken as they are)."""
    return np.take(values, index, axis=axis, mode="clip")


_POOLS: dict[int, ThreadPoolExecutor] = {}


# Work (values gathered) under which a resampling runs on the calling thread alone: below it,
# handing slices to the pool costs more than it saves (2-core machine: crops ran faster on two
# threads from about 150 24×24 crops; a pyramid level, whose blocks make more NumPy calls per
# value, from a 480p frame's largest level, 1.2× faster from there on, slower below).
CROP_PARALLEL_MIN_WORK = 100_000
LEVEL_PARALLEL_MIN_WORK = 500_000


def _in_parallel(part: Callable[[slice], None], length: int, parallel: bool) -> None:
    """``part`` over ``range(length)``: cut in one slice per torch thread and run concurrently
    when ``parallel`` (see :func:`_parallel`; NumPy's gathers release the GIL, so the
    resampling uses the cores the networks use), else in one call on this thread."""
    if not parallel:
        part(slice(0, length))
        return
    threads = torch.get_num_threads()
    if threads not in _POOLS:
        _POOLS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="mtcnn")
    bounds = np.linspace(0, length, threads + 1).astype(int)
    pieces = [slice(int(a), int(b)) for a, b in itertools.pairwise(bounds)]
    for future in [_POOLS[threads].submit(part, piece) for piece in pieces]:
        future.result()


def _parallel(length: int, work: int, min_work: int) -> bool:
    """Whether ``length`` items of ``work`` values in all are worth splitting over torch's
    threads: at least two items per thread and ``min_work`` values."""
    threads = torch.get_num_threads()
    return threads >= 2 and length >= 2 * threads and work >= min_work


def _windows(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray]:
    """torch's adaptive pooling windows: ``[floor(i·in/out), ceil((i+1)·in/out))``."""
    i = np.arange(size_out, dtype=np.int64)
    return (i * size_in) // size_out, ((i + 1) * size_in + size_out - 1) // size_out


def _box_windows(start: np.ndarray, end: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    length = (end - start).astype(np.int64)[:, None]
    i = np.arange(size, dtype=np.int64)[None, :]
    offset = start.astype(np.int64)[:, None]
    return offset + (i * length) // size, offset + ((i + 1) * length + size - 1) // size


# ---- box arithmetic, as facenet-pytorch's detect_face does it -------------------------------


NMS_BLOCK = 256  # rows of the overlap matrix computed at a time (256 × n float32)


def _nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy NMS with torchvision's rule (IoU > threshold suppresses; stable descending score
    order; float32 arithmetic), indices of the kept boxes, best first.

    The overlaps are computed a block of rows at a time as a matrix (each pair with the same
    float32 operations as the one-box-at-a-time loop, so the same comparisons), and the greedy
    pass walks it with each row packed into a Python integer used as a bit set: one integer
    ``or`` per kept box instead of eight NumPy calls per kept box on shrinking arrays (or one
    NumPy call, ~1 µs, per row)."""
    n = len(scores)
    if n < 2:
        return np.arange(n)
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = (np.ascontiguousarray(boxes[order, k]) for k in range(4))
    areas = (x2 - x1) * (y2 - y1)
    removed = 0  # bit i: the i-th box in score order is suppressed
    keep = []
    zero = np.float32(0)
    for start in range(0, n, NMS_BLOCK):
        rows = slice(start, min(n, start + NMS_BLOCK))
        block_bits = (1 << (rows.stop - start)) - 1
        if (removed >> start) & block_bits == block_bits:
            continue
        cols = slice(start, n)
        w = np.maximum(
            zero,
            np.minimum(x2[rows, None], x2[None, cols]) - np.maximum(x1[rows, None], x1[None, cols]),
        )
        h = np.maximum(
            zero,
            np.minimum(y2[rows, None], y2[None, cols]) - np.maximum(y1[rows, None], y1[None, cols]),
        )
        inter = w * h
        suppress = ~(inter / (areas[rows, None] + areas[None, cols] - inter) <= threshold)
        packed = np.packbits(suppress, axis=1, bitorder="little")  # bit j: column start + j
        for i in range(rows.start, rows.stop):
            if not (removed >> i) & 1:
                keep.append(i)
                removed |= int.from_bytes(packed[i - start].tobytes(), "little") << start
    return order[np.asarray(keep, dtype=np.int64)]


def _nms_min(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """facenet-pytorch's ``nms_numpy(..., "Min")`` (the O-net stage): overlap over the smaller
    box, +1 pixel areas, NumPy's default argsort."""
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(scores)
    keep = []
    while order.size:
        i, rest = order[-1], order[:-1]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        order = rest[(w * h) / np.minimum(area[i], area[rest]) <= threshold]
    return np.asarray(keep, dtype=np.int64)


def _candidates(
    reg: torch.Tensor, probs: torch.Tensor, scale: float, threshold: float
) -> np.ndarray:
    """P-net output map → candidate boxes ``[x1, y1, x2, y2, score, 4 × regression]``, as
    facenet-pytorch's ``generateBoundingBox`` computes them (float32, cells in row-major
    order), in NumPy: a dozen torch calls on a few dozen cells cost ~0.1 ms per pyramid level
    in dispatch alone."""
    p = probs[0].numpy()
    ys, xs = np.nonzero(p >= threshold)
    cells = np.stack((xs, ys), axis=1).astype(np.float32)
    s = np.float32(scale)
    q1 = np.floor((np.float32(2) * cells + np.float32(1)) / s)
    q2 = np.floor((np.float32(2) * cells + np.float32(12)) / s)
    offsets = reg[0].numpy()[:, ys, xs].T
    return np.concatenate([q1, q2, p[ys, xs][:, None], offsets], axis=1)


# The box arithmetic between the networks is facenet-pytorch's torch code on float32 rows, done
# in NumPy (the same IEEE float32 operations, so the same bits; a NumPy call on a few hundred
# boxes costs a fraction of a torch call's dispatch).


def _bbreg(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """facenet-pytorch's ``bbreg``: the boxes moved by the network's regression (in place)."""
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    b1 = boxes[:, 0] + reg[:, 0] * w
    b2 = boxes[:, 1] + reg[:, 1] * h
    b3 = boxes[:, 2] + reg[:, 2] * w
    b4 = boxes[:, 3] + reg[:, 3] * h
    boxes[:, :4] = np.stack([b1, b2, b3, b4], axis=1)
    return boxes


def _square(boxes: np.ndarray) -> np.ndarray:
    """facenet-pytorch's ``rerec``: each box → the square on its centre, side its longer side
    (in place)."""
    h = boxes[:, 3] - boxes[:, 1]
    w = boxes[:, 2] - boxes[:, 0]
    side = np.maximum(w, h)
    boxes[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    boxes[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    boxes[:, 2:4] = boxes[:, :2] + side[:, None]
    return boxes


def _regions(boxes: np.ndarray, width: int, height: int) -> tuple[np.ndarray, ...]:
    """Integer pixel regions ``[y0, y1) × [x0, x1)`` of boxes clipped to the frame (``pad``)."""
    b = np.trunc(boxes).astype(np.int32)
    x, y = np.maximum(b[:, 0], 1), np.maximum(b[:, 1], 1)
    ex, ey = np.minimum(b[:, 2], width), np.minimum(b[:, 3], height)
    return y - 1, ey, x - 1, ex


def _in_chunks(net: nn.Module, data: torch.Tensor, size: int = 512) -> tuple[torch.Tensor, ...]:
    """``net`` over ``data`` in batches of ``size`` (facenet-pytorch's ``fixed_batch_process``:
    the same batch shapes, so the same kernels and the same numbers)."""
    outs = [net(data[i : i + size]) for i in range(0, len(data), size)]
    return tuple(torch.cat(parts, dim=0) for parts in zip(*outs, strict=True))


class Mtcnn:
    """MTCNN with facenet-pytorch's weights and defaults (``MTCNN(keep_all=True)``), on the
    fast path described in the module docstring.

    Args:
        min_face_size: smallest face searched for, in pixels (facenet-pytorch default 20).
        thresholds: P-, R-, O-net score thresholds.
        factor: pyramid scale step.
        device: torch device.

    Example:
        >>> import numpy as np
        >>> from PIL import Image
        >>> boxes, points = Mtcnn().detect(np.asarray(Image.open("samples/astronaut.jpg")))
        >>> boxes.shape, points.shape
        ((1, 5), (1, 5, 2))
    """

    def __init__(
        self,
        min_face_size: int = 20,
        thresholds: tuple[float, float, float] = THRESHOLDS,
        factor: float = FACTOR,
        device: str = "cpu",
    ) -> None:
        self.min_face_size = min_face_size
        self.thresholds = thresholds
        self.factor = factor
        self.device = device
        self.pnet = _load(PNet(), "pnet", device)
        self.rnet = _load(RNet(), "rnet", device)
        self.onet = _load(ONet(), "onet", device)

    def scales(self, height: int, width: int) -> list[float]:
        """The image pyramid's scales (facenet-pytorch's loop)."""
        m = 12.0 / self.min_face_size
        minl = min(height, width) * m
        scales, scale = [], m
        while minl >= 12:
            scales.append(scale)
            scale *= self.factor
            minl *= self.factor
        return scales

    def detect(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Faces of one uint8 ``H×W×3`` RGB frame: ``boxes`` ``(N, 5)`` float32 rows
        ``[x1, y1, x2, y2, probability]`` and ``points`` ``(N, 5, 2)`` landmarks, largest box
        first (``MTCNN.detect``'s order with its default ``select_largest=True``)."""
        with torch.inference_mode():
            boxes, points = self._detect(np.ascontiguousarray(rgb, dtype=np.uint8))
        if len(boxes):
            area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
            order = np.argsort(area)[::-1]
            boxes, points = boxes[order], points[order]
        return boxes, points

    def _detect(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        height, width = rgb.shape[:2]
        empty = np.zeros((0, 5), np.float32), np.zeros((0, 5, 2), np.float32)
        scales = self.scales(height, width)
        if not scales:
            return empty
        integral = Integral(rgb)
        # Stage 1: P-net over the pyramid, NMS per scale, then across scales.
        found = []
        for scale in scales:
            level = integral.level(int(height * scale + 1), int(width * scale + 1))
            reg, probs = self.pnet(level.to(self.device))
            cand = _candidates(reg.cpu(), probs[:, 1].cpu(), scale, self.thresholds[0])
            found.append(cand[_nms(cand[:, :4], cand[:, 4], 0.5)])
        boxes = np.concatenate(found)
        boxes = boxes[_nms(boxes[:, :4], boxes[:, 4], 0.7)]
        if not len(boxes):
            return empty
        regw = boxes[:, 2] - boxes[:, 0]
        regh = boxes[:, 3] - boxes[:, 1]
        qq1 = boxes[:, 0] + boxes[:, 5] * regw
        qq2 = boxes[:, 1] + boxes[:, 6] * regh
        qq3 = boxes[:, 2] + boxes[:, 7] * regw
        qq4 = boxes[:, 3] + boxes[:, 8] * regh
        boxes = _square(np.stack([qq1, qq2, qq3, qq4, boxes[:, 4]], axis=1))

        # Stage 2: R-net on 24×24 crops of the candidates.
        boxes, crops = self._crops(integral, boxes, 24)
        reg, probs = (t.cpu().numpy() for t in _in_chunks(self.rnet, crops.to(self.device)))
        score = probs[:, 1]
        keep = score > self.thresholds[1]
        boxes = np.concatenate((boxes[keep, :4], score[keep, None]), axis=1)
        moves = reg[keep]
        pick = _nms(boxes[:, :4], boxes[:, 4], 0.7)
        boxes = _square(_bbreg(boxes[pick], moves[pick]))
        if not len(boxes):
            return empty

        # Stage 3: O-net on 48×48 crops: scores, box regression, landmarks.
        boxes, crops = self._crops(integral, boxes, 48)
        outs = _in_chunks(self.onet, crops.to(self.device))
        reg, marks, probs = (t.cpu().numpy() for t in outs)
        score = probs[:, 1]
        keep = score > self.thresholds[2]
        marks = marks[keep].T
        boxes = np.concatenate((boxes[keep, :4], score[keep, None]), axis=1)
        moves = reg[keep]
        w = boxes[:, 2] - boxes[:, 0] + 1
        h = boxes[:, 3] - boxes[:, 1] + 1
        points_x = w * marks[:5, :] + boxes[:, 0] - 1
        points_y = h * marks[5:10, :] + boxes[:, 1] - 1
        points = np.stack((points_x, points_y)).transpose(2, 1, 0)
        boxes = _bbreg(boxes, moves)
        pick = _nms_min(boxes[:, :4], boxes[:, 4], 0.7)
        return boxes[pick], points[pick]

    @staticmethod
    def _crops(integral: Integral, boxes: np.ndarray, size: int) -> tuple[np.ndarray, torch.Tensor]:
        """The boxes with a non-empty region in the frame, and their ``size²`` crops."""
        y0, y1, x0, x1 = _regions(boxes, integral.width, integral.height)
        valid = (y1 > y0) & (x1 > x0)
        if not valid.all():
            boxes = boxes[valid]
            y0, y1, x0, x1 = y0[valid], y1[valid], x0[valid], x1[valid]
        return boxes, integral.crops(y0, y1, x0, x1, size)

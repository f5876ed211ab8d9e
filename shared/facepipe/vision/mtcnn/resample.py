"""An integral image per frame: every pyramid level and every R-/O-net crop, area-resampled."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

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
        parallel = worth_parallel(out_h, work, LEVEL_PARALLEL_MIN_WORK)
        step = PARALLEL_ROW_BLOCK if parallel else ROW_BLOCK

        def part(rows: slice) -> None:
            for first in range(rows.start, rows.stop, step):
                block = slice(first, min(rows.stop, first + step))
                band = _take(self.sums, ye[block], 0) - _take(self.sums, ys[block], 0)
                np.subtract(
                    _take(band, xe, 1), _take(band, xs, 1), out=out[block], casting="unsafe"
                )
                _normalise(rows_of_values[block], heights[block], widths)

        in_parallel(part, out_h, parallel)
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
        in_parallel(part, len(y0), worth_parallel(len(y0), work, CROP_PARALLEL_MIN_WORK))
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


def in_parallel(part: Callable[[slice], None], length: int, parallel: bool) -> None:
    """``part`` over ``range(length)``: cut in one slice per torch thread and run concurrently
    when ``parallel`` (see :func:`worth_parallel`; NumPy's gathers release the GIL, so the
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


def worth_parallel(length: int, work: int, min_work: int) -> bool:
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

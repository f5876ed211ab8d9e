"""Candidate boxes: facenet-pytorch's box arithmetic (its function names) and a NumPy NMS."""

from __future__ import annotations

import numpy as np
import torch

NMS_BLOCK = 256  # rows of the overlap matrix computed at a time (256 × n float32)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
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


def nms_min(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
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


def generateBoundingBox(  # noqa: N802  (facenet-pytorch's name)
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


def bbreg(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """facenet-pytorch's ``bbreg``: the boxes moved by the network's regression (in place)."""
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    b1 = boxes[:, 0] + reg[:, 0] * w
    b2 = boxes[:, 1] + reg[:, 1] * h
    b3 = boxes[:, 2] + reg[:, 2] * w
    b4 = boxes[:, 3] + reg[:, 3] * h
    boxes[:, :4] = np.stack([b1, b2, b3, b4], axis=1)
    return boxes


def rerec(boxes: np.ndarray) -> np.ndarray:
    """facenet-pytorch's ``rerec``: each box → the square on its centre, side its longer side
    (in place)."""
    h = boxes[:, 3] - boxes[:, 1]
    w = boxes[:, 2] - boxes[:, 0]
    side = np.maximum(w, h)
    boxes[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    boxes[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    boxes[:, 2:4] = boxes[:, :2] + side[:, None]
    return boxes


def pad(boxes: np.ndarray, width: int, height: int) -> tuple[np.ndarray, ...]:
    """Integer pixel regions ``[y0, y1) × [x0, x1)`` of boxes clipped to the frame (``pad``)."""
    b = np.trunc(boxes).astype(np.int32)
    x, y = np.maximum(b[:, 0], 1), np.maximum(b[:, 1], 1)
    ex, ey = np.minimum(b[:, 2], width), np.minimum(b[:, 3], height)
    return y - 1, ey, x - 1, ex

"""MTCNN's three stages over one frame, facenet-pytorch's ``detect_face`` step for step."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from facepipe.vision.mtcnn.boxes import bbreg, generateBoundingBox, nms, nms_min, pad, rerec
from facepipe.vision.mtcnn.nets import ONet, PNet, RNet, load_net
from facepipe.vision.mtcnn.resample import Integral

# facenet-pytorch's MTCNN defaults.
THRESHOLDS = (0.6, 0.7, 0.7)
FACTOR = 0.709


def fixed_batch_process(
    net: nn.Module, data: torch.Tensor, size: int = 512
) -> tuple[torch.Tensor, ...]:
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
        self.pnet = load_net(PNet(), "pnet", device)
        self.rnet = load_net(RNet(), "rnet", device)
        self.onet = load_net(ONet(), "onet", device)

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
            cand = generateBoundingBox(reg.cpu(), probs[:, 1].cpu(), scale, self.thresholds[0])
            found.append(cand[nms(cand[:, :4], cand[:, 4], 0.5)])
        boxes = np.concatenate(found)
        boxes = boxes[nms(boxes[:, :4], boxes[:, 4], 0.7)]
        if not len(boxes):
            return empty
        regw = boxes[:, 2] - boxes[:, 0]
        regh = boxes[:, 3] - boxes[:, 1]
        qq1 = boxes[:, 0] + boxes[:, 5] * regw
        qq2 = boxes[:, 1] + boxes[:, 6] * regh
        qq3 = boxes[:, 2] + boxes[:, 7] * regw
        qq4 = boxes[:, 3] + boxes[:, 8] * regh
        boxes = rerec(np.stack([qq1, qq2, qq3, qq4, boxes[:, 4]], axis=1))

        # Stage 2: R-net on 24×24 crops of the candidates.
        boxes, crops = self._crops(integral, boxes, 24)
        outs = fixed_batch_process(self.rnet, crops.to(self.device))
        reg, probs = (t.cpu().numpy() for t in outs)
        score = probs[:, 1]
        keep = score > self.thresholds[1]
        boxes = np.concatenate((boxes[keep, :4], score[keep, None]), axis=1)
        moves = reg[keep]
        pick = nms(boxes[:, :4], boxes[:, 4], 0.7)
        boxes = rerec(bbreg(boxes[pick], moves[pick]))
        if not len(boxes):
            return empty

        # Stage 3: O-net on 48×48 crops: scores, box regression, landmarks.
        boxes, crops = self._crops(integral, boxes, 48)
        outs = fixed_batch_process(self.onet, crops.to(self.device))
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
        boxes = bbreg(boxes, moves)
        pick = nms_min(boxes[:, :4], boxes[:, 4], 0.7)
        return boxes[pick], points[pick]

    @staticmethod
    def _crops(integral: Integral, boxes: np.ndarray, size: int) -> tuple[np.ndarray, torch.Tensor]:
        """The boxes with a non-empty region in the frame, and their ``size²`` crops."""
        y0, y1, x0, x1 = pad(boxes, integral.width, integral.height)
        valid = (y1 > y0) & (x1 > x0)
        if not valid.all():
            boxes = boxes[valid]
            y0, y1, x0, x1 = y0[valid], y1[valid], x0[valid], x1[valid]
        return boxes, integral.crops(y0, y1, x0, x1, size)

"""Frame sizes that fit a detection function's memory.

Detection's memory is a fixed part (Python, torch, the MTCNN nets, boto3: ``base_mib``) plus what
one frame costs: its decoded pixels (``decode_mib_per_mp``) and the pixels MTCNN runs on, whose
image pyramid and feature maps dominate (``detect_mib_per_mp``). Frames are decoded and detected
one at a time, so a request never costs more than its largest frame. Two limits follow from the
function's memory (Lambda's ``AWS_LAMBDA_FUNCTION_MEMORY_SIZE``):

* :meth:`MemoryModel.detect_pixels`: MTCNN runs on at most this many pixels of a frame; a larger
  frame is detected on a downscaled copy (boxes mapped back, crops cut from the full frame);
* :meth:`MemoryModel.max_frame_pixels`: a frame whose decoding alone would leave less than a
  1080p detection is refused (413) before a pixel is decoded.

The figures are peak resident memory measured with ``bench/memory.py`` (docs/reliability.md),
rounded up.

>>> model = MemoryModel()
>>> model.detect_pixels(2048, 12_000_000) > 9_000_000, model.max_frame_pixels(2048) > 40_000_000
(True, True)
"""

from __future__ import annotations

from dataclasses import dataclass

MP = 1_000_000
MIN_DETECT_PIXELS = 1920 * 1080  # a frame must leave room to detect at least at 1080p


@dataclass(frozen=True)
class MemoryModel:
    """Peak memory of a detection process: ``base_mib`` + the frame's costs (MiB per megapixel),
    of which ``headroom`` of the function's memory may be used."""

    base_mib: float = 750.0
    decode_mib_per_mp: float = 12.0
    detect_mib_per_mp: float = 90.0
    headroom: float = 0.85

    def usable_mib(self, memory_mib: float) -> float:
        return memory_mib * self.headroom - self.base_mib

    def detect_pixels(self, memory_mib: float, frame_pixels: int) -> int:
        """The most pixels MTCNN may run on for a frame of ``frame_pixels`` (never below
        :data:`MIN_DETECT_PIXELS`, never above the frame itself)."""
        left = self.usable_mib(memory_mib) - self.decode_mib_per_mp * frame_pixels / MP
        fits = int(max(0.0, left) / self.detect_mib_per_mp * MP)
        return min(frame_pixels, max(MIN_DETECT_PIXELS, fits))

    def max_frame_pixels(self, memory_mib: float) -> int:
        """The largest frame that still leaves a :data:`MIN_DETECT_PIXELS` detection."""
        left = self.usable_mib(memory_mib) - self.detect_mib_per_mp * MIN_DETECT_PIXELS / MP
        return max(MIN_DETECT_PIXELS, int(left / self.decode_mib_per_mp * MP))

    def peak_mib(self, frame_pixels: int, detect_pixels: int) -> float:
        """The predicted peak for one frame (what the memory test checks it against)."""
        return (
            self.base_mib
            + self.decode_mib_per_mp * frame_pixels / MP
            + self.detect_mib_per_mp * detect_pixels / MP
        )


DETECTION_MEMORY = MemoryModel()

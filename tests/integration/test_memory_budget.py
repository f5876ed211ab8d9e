"""Detection fits its function's memory: the peak resident memory of the real detection service,
measured in a fresh interpreter, for the largest frame and the largest request a 2,048 MB
function accepts (issue: a 40 MP frame peaked at 3,287 MiB, 16 x 12 MP frames at 2,175 MiB)."""

from __future__ import annotations

import pytest

from facepipe.bench.memory import measure
from facepipe.vision.memory_budget import DETECTION_MEMORY, MP

pytestmark = pytest.mark.slow

MEMORY = 2048  # the template's MemorySize of DetectionFunction and IngestFunction


def test_the_largest_frame_fits_the_function() -> None:
    frame = min(40 * MP, DETECTION_MEMORY.max_frame_pixels(MEMORY))
    peak = measure([frame / MP], memory_mb=MEMORY)
    assert peak["faces"] == 2  # the frame was really detected (downscaled), not refused
    assert peak["peak_mib"] < MEMORY * DETECTION_MEMORY.headroom
    detect = DETECTION_MEMORY.detect_pixels(MEMORY, frame)
    assert peak["peak_mib"] < DETECTION_MEMORY.peak_mib(
        frame, detect
    )  # the model is an upper bound


def test_a_request_costs_its_largest_frame_not_all_of_them() -> None:
    """Four 12 MP frames (the default pixel budget of a request): decoded and detected one at a
    time, so the request peaks about where one such frame does, not four times above it."""
    one = measure([12.0], memory_mb=MEMORY)
    four = measure([12.0] * 4, memory_mb=MEMORY)
    assert four["faces"] == 4 * one["faces"] == 8
    assert four["peak_mib"] < MEMORY * DETECTION_MEMORY.headroom
    # Decoded all at once, three more 12 MP frames would add 3 x 12 x 11 MiB and more; one at a
    # time they add only what the allocator keeps (about 100 MiB measured).
    frame_cost = one["peak_mib"] - one["base_mib"]
    assert four["peak_mib"] - four["base_mib"] < frame_cost + 200

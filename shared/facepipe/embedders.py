"""The embedders' names and default match thresholds: plain constants, without the models.

:mod:`facepipe.config` (the settings every function reads at init) takes its threshold defaults
from here, so that reading them does not import :mod:`facepipe.embedding` (the detection
function never embeds). :mod:`facepipe.embedding` re-exports both names.
"""

from __future__ import annotations

EMBEDDERS = ("vggface2", "casia-webface", "dlib")

# The default FACEPIPE_MATCH_THRESHOLD of each embedder: the L2 distance between unit embeddings
# above which a face is `unknown`. Measure one with `facepipe eval` (README "Thresholds").
DEFAULT_MATCH_THRESHOLDS = {
    # facenet-pytorch's commonly used value for its pretrained sets; NOT calibrated here (the
    # weights cannot be downloaded where this repository's tests run).
    "vggface2": 1.1,
    "casia-webface": 1.1,
    # `facepipe eval --embedder dlib` on ../shared/faces/master.csv: AUC 1.0, every pair right
    # between 0.376 (largest same-person distance) and 0.408 (smallest different-person one).
    "dlib": 0.39,
}

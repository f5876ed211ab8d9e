"""Verification on labelled pairs: how well an embedder tells people apart, and its threshold.

``facepipe eval`` embeds every image of a pairs file once (the largest face, with the pipeline's
own detection and crop step), then for the labelled pairs computes the ROC AUC, the threshold on
the L2 distance between unit embeddings with the best accuracy (and the equivalent cosine), and
the accuracy at it and at the embedder's current default. This is how the default
``FACEPIPE_MATCH_THRESHOLD`` of each embedder is calibrated (docs/models.md, Thresholds).

The pairs file is a CSV with ``file_x,file_y,Decision`` (``Yes``/``No``), paths relative to the
CSV's folder, as ``../shared/faces/master.csv``.
"""

from __future__ import annotations

import csv
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facepipe.app.pipeline import LocalPipeline
from facepipe.errors import FacepipeError
from facepipe.identity.embedders import default_match_threshold
from facepipe.vision.frames import decode_image

EMBED_BATCH = 32
_YES = {"yes", "true", "1", "same"}
_NO = {"no", "false", "0", "different"}


@dataclass(frozen=True)
class Pair:
    """Two image files and whether they show the same person."""

    first: str
    second: str
    same: bool


def read_pairs(path: Path) -> list[Pair]:
    """The labelled pairs of a ``file_x,file_y,Decision`` CSV."""
    try:
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise FacepipeError(
            f"cannot read the pairs file {path}: {exc}", code="invalid_pairs"
        ) from exc
    pairs = []
    for line, row in enumerate(rows, start=2):
        decision = (row.get("Decision") or "").strip().lower()
        if not row.get("file_x") or not row.get("file_y") or decision not in _YES | _NO:
            raise FacepipeError(
                f"{path}:{line}: expected file_x,file_y,Decision (Yes/No), got {row}",
                code="invalid_pairs",
            )
        pairs.append(Pair(row["file_x"], row["file_y"], decision in _YES))
    if not pairs:
        raise FacepipeError(f"{path} has no pairs", code="invalid_pairs")
    return pairs


def embed_largest_faces(pipeline: LocalPipeline, paths: Sequence[Path]) -> dict[Path, np.ndarray]:
    """The unit embedding of each image's largest face (MTCNN's first); images without a face
    are left out."""
    crops: list[tuple[Path, np.ndarray]] = []
    for path in paths:
        image = decode_image(path.read_bytes(), max_pixels=pipeline.settings.max_pixels)
        faces = pipeline.detection.image(path.name, path.name, image).faces
        if faces:
            crops.append((path, faces[0].crop))
    embedder = pipeline.recognition.embedder
    out: dict[Path, np.ndarray] = {}
    for start in range(0, len(crops), EMBED_BATCH):
        chunk = crops[start : start + EMBED_BATCH]
        rows = embedder.embed([crop for _, crop in chunk])
        out.update((path, row) for (path, _), row in zip(chunk, rows, strict=True))
    return out


def roc_auc(distances: np.ndarray, same: np.ndarray) -> float:
    """Area under the ROC curve of "same person when the distance is small": the chance that a
    same-person pair is closer than a different-person pair (ties count half).

    >>> roc_auc(np.array([0.1, 0.2, 0.9, 0.2]), np.array([True, True, False, False]))
    0.875
    """
    n_same, n_diff = int(same.sum()), int((~same).sum())
    if n_same == 0 or n_diff == 0:
        raise FacepipeError("the AUC needs both same-person and different-person pairs")
    _, inverse, counts = np.unique(distances, return_inverse=True, return_counts=True)
    # average 1-based rank of each distinct value, ascending
    ranks = np.cumsum(counts) - (counts - 1) / 2.0
    rank_sum_diff = float(ranks[inverse][~same].sum())
    return (rank_sum_diff - n_diff * (n_diff + 1) / 2.0) / (n_same * n_diff)


def best_threshold(distances: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """The distance threshold (same person when ``distance <= threshold``) with the best
    accuracy, and that accuracy. Thresholds lie halfway between neighbouring distances; among
    equally accurate ones the middle of the widest gap wins (the largest margin).

    >>> best_threshold(np.array([0.2, 0.3, 0.7, 0.8]), np.array([True, True, False, False]))
    (0.5, 1.0)
    """
    values, inverse = np.unique(distances, return_inverse=True)
    same_at = np.bincount(inverse, weights=same.astype(float), minlength=len(values))
    diff_at = np.bincount(inverse, weights=(~same).astype(float), minlength=len(values))
    # candidate k accepts the k smallest distinct distances (k = 0 … len(values))
    true_accepts = np.concatenate([[0.0], np.cumsum(same_at)])
    true_rejects = diff_at.sum() - np.concatenate([[0.0], np.cumsum(diff_at)])
    accuracy = (true_accepts + true_rejects) / len(distances)
    edges = np.concatenate([[0.0], values, [2.0]])
    lows, highs = edges[:-1], edges[1:]
    best = np.flatnonzero(np.isclose(accuracy, accuracy.max()))
    k = int(best[np.argmax(highs[best] - lows[best])])
    return float((lows[k] + highs[k]) / 2.0), float(accuracy[k])


def cosine_of(distance: float) -> float:
    """The cosine similarity of unit vectors at L2 ``distance`` (``d² = 2 - 2·cos``)."""
    return 1.0 - distance * distance / 2.0


def _rates(distances: np.ndarray, same: np.ndarray, threshold: float) -> dict[str, float]:
    accept = distances <= threshold
    return {
        "accuracy": float(np.mean(accept == same)),
        "true_accept_rate": float(np.mean(accept[same])),
        "false_accept_rate": float(np.mean(accept[~same])),
    }


def machine() -> str:
    """A short description of where a measurement ran: OS, CPU model, CPU count."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(
                (line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")),
                cpu,
            )
    except OSError:
        pass
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs ({cpu})"


def evaluate(pipeline: LocalPipeline, pairs_file: Path) -> dict[str, Any]:
    """Embed every image of ``pairs_file`` once and measure the pairs; the summary's keys are
    what ``facepipe eval`` prints as JSON."""
    pairs = read_pairs(pairs_file)
    folder = pairs_file.parent
    names = sorted({name for p in pairs for name in (p.first, p.second)})
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise FacepipeError(
            f"{pairs_file} names files that are not in {folder}: {', '.join(missing[:5])}",
            code="invalid_pairs",
        )
    start = time.perf_counter()
    embeddings = embed_largest_faces(pipeline, [folder / n for n in names])
    seconds = time.perf_counter() - start
    used = [p for p in pairs if folder / p.first in embeddings and folder / p.second in embeddings]
    if not used:
        raise FacepipeError("no pair has a face in both images", code="invalid_pairs")
    distances = np.array(
        [
            float(np.linalg.norm(embeddings[folder / p.first] - embeddings[folder / p.second]))
            for p in used
        ]
    )
    same = np.array([p.same for p in used])
    threshold, _ = best_threshold(distances, same)
    embedder = pipeline.recognition.embedder
    default = default_match_threshold(embedder.name)
    return {
        "pairs_file": str(pairs_file),
        "embedder": embedder.name,
        "weights": embedder.weights_id,
        "images": len(names),
        "images_without_face": sorted(n for n in names if folder / n not in embeddings),
        "pairs": len(used),
        "pairs_same": int(same.sum()),
        "pairs_different": int((~same).sum()),
        "pairs_skipped": len(pairs) - len(used),
        "auc": round(roc_auc(distances, same), 6),
        "threshold": round(threshold, 6),
        "cosine": round(cosine_of(threshold), 6),
        **{k: round(v, 6) for k, v in _rates(distances, same, threshold).items()},
        "same_max_distance": round(float(distances[same].max(initial=0.0)), 6),
        "different_min_distance": round(float(distances[~same].min(initial=2.0)), 6),
        "default_threshold": default,
        "accuracy_at_default": round(_rates(distances, same, default)["accuracy"], 6),
        "embed_seconds": round(seconds, 3),
        "machine": machine(),
    }


def table(summary: dict[str, Any]) -> str:
    """The human-readable view of :func:`evaluate`'s summary."""
    no_face = summary["images_without_face"]
    lines = [
        f"eval: {summary['embedder']} ({summary['weights']}) on {summary['pairs_file']}",
        f"images {summary['images']} (without a face: {', '.join(no_face) or 'none'}), "
        f"embedded in {summary['embed_seconds']:.1f} s on {summary['machine']}",
        f"pairs {summary['pairs']}: {summary['pairs_same']} same, "
        f"{summary['pairs_different']} different, {summary['pairs_skipped']} skipped",
        f"{'measure':<34}{'value':>10}",
        f"{'ROC AUC':<34}{summary['auc']:>10.4f}",
        f"{'best threshold (L2, unit vectors)':<34}{summary['threshold']:>10.4f}",
        f"{'  = cosine similarity':<34}{summary['cosine']:>10.4f}",
        f"{'accuracy at it':<34}{summary['accuracy']:>10.4f}",
        f"{'  true accept rate':<34}{summary['true_accept_rate']:>10.4f}",
        f"{'  false accept rate':<34}{summary['false_accept_rate']:>10.4f}",
        f"{'largest same-person distance':<34}{summary['same_max_distance']:>10.4f}",
        f"{'smallest different distance':<34}{summary['different_min_distance']:>10.4f}",
        f"{'default threshold':<34}{summary['default_threshold']:>10.4f}",
        f"{'accuracy at the default':<34}{summary['accuracy_at_default']:>10.4f}",
    ]
    return "\n".join(lines)

"""The verification measures behind `facepipe eval`: AUC, best threshold, pairs files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facepipe.app.evaluation import best_threshold, cosine_of, read_pairs, roc_auc
from facepipe.errors import FacepipeError


def test_auc_counts_ties_half_and_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    distances = np.round(rng.uniform(0, 2, 200), 1)  # many ties
    same = rng.uniform(size=200) < 0.3
    s, d = distances[same], distances[~same]
    brute = (np.sum(s[:, None] < d[None, :]) + 0.5 * np.sum(s[:, None] == d[None, :])) / (
        len(s) * len(d)
    )
    assert roc_auc(distances, same) == pytest.approx(brute)
    assert roc_auc(np.array([0.1, 0.2, 0.3]), np.array([True, False, False])) == 1.0
    assert roc_auc(np.array([0.9, 0.2, 0.3]), np.array([True, False, False])) == 0.0
    with pytest.raises(FacepipeError, match="both"):
        roc_auc(np.array([0.1, 0.2]), np.array([True, True]))


def test_best_threshold_is_the_middle_of_the_widest_best_gap() -> None:
    same = np.array([True, True, False, False])
    assert best_threshold(np.array([0.2, 0.3, 0.7, 0.8]), same) == (0.5, 1.0)
    # one mistake either way: 0.225 (rejects the same pair at 0.3) and 0.6 (accepts the
    # different pair at 0.25) tie; the wider gap (0.3 … 0.9) wins
    threshold, accuracy = best_threshold(
        np.array([0.1, 0.2, 0.25, 0.3, 0.9, 1.0]),
        np.array([True, True, False, True, False, False]),
    )
    assert accuracy == pytest.approx(5 / 6)
    assert threshold == pytest.approx(0.6)
    # everyone different: accept nobody, the threshold goes below the smallest distance
    assert best_threshold(np.array([0.4, 0.6]), np.array([False, False])) == (0.2, 1.0)
    # everyone the same: accept everybody, above the largest distance (up to the maximum, 2)
    assert best_threshold(np.array([0.4, 1.0]), np.array([True, True])) == (1.5, 1.0)


def test_cosine_of_unit_distance() -> None:
    assert cosine_of(0.0) == 1.0
    assert cosine_of(np.sqrt(2)) == pytest.approx(0.0)
    assert cosine_of(2.0) == -1.0


def test_read_pairs(tmp_path: Path) -> None:
    good = tmp_path / "pairs.csv"
    good.write_text("file_x,file_y,Decision\na.jpg,b.jpg,Yes\na.jpg,c.jpg,No\n")
    pairs = read_pairs(good)
    assert [(p.first, p.second, p.same) for p in pairs] == [
        ("a.jpg", "b.jpg", True),
        ("a.jpg", "c.jpg", False),
    ]
    bad = tmp_path / "bad.csv"
    bad.write_text("file_x,file_y,Decision\na.jpg,b.jpg,Maybe\n")
    with pytest.raises(FacepipeError, match=r"bad.csv:2: expected file_x,file_y,Decision"):
        read_pairs(bad)
    empty = tmp_path / "empty.csv"
    empty.write_text("file_x,file_y,Decision\n")
    with pytest.raises(FacepipeError, match="no pairs"):
        read_pairs(empty)
    with pytest.raises(FacepipeError, match="cannot read"):
        read_pairs(tmp_path / "missing.csv")

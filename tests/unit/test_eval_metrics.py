"""Eval: the metrics, the split, the report's operating point and the plots, against cases
worked by hand."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from lookalike.server.evaluation.scores import (
    best_threshold,
    hit_at_k,
    mean_average_precision,
    retrieval_metrics,
    same_label_matrix,
    verification_metrics,
)
from lookalike.server.index.gallery import person_split

T, F = True, False


def test_same_label_matrix():
    same = same_label_matrix(np.array(["a", "b"]), np.array([["b", "a"], ["b", "b"]]))
    assert same.tolist() == [[F, T], [T, T]]


def test_hit_at_k_counts_queries_with_any_same_person_in_the_first_k():
    same = np.array([[F, T, F, F, F, F], [T, F, F, F, F, F], [F, F, F, F, F, T]])
    # first hits at ranks 2, 1 and 6
    assert hit_at_k(same, 1) == pytest.approx(1 / 3)
    assert hit_at_k(same, 2) == pytest.approx(2 / 3)
    assert hit_at_k(same, 5) == pytest.approx(2 / 3)
    assert hit_at_k(same, 6) == 1.0
    assert hit_at_k(same, 20) == 1.0  # deeper than the ranking: all of it
    with pytest.raises(ValueError, match="k must be at least 1"):
        hit_at_k(same, 0)


@pytest.mark.parametrize(
    ("row", "n_relevant", "expected"),
    [
        ([F, T, F, T], 2, (1 / 2 + 2 / 4) / 2),  # hits at 2 and 4: 0.5
        ([T, T, F, F], 2, (1 / 1 + 2 / 2) / 2),  # perfect ranking: 1.0
        ([F, F, T, F], 1, (1 / 3) / 1),  # one hit at 3
        ([T, F, F, F], 3, (1 / 1) / 3),  # two relevant images beyond the ranking depth
        ([F, F, F, F], 1, 0.0),  # the only relevant image beyond the ranking depth
    ],
)
def test_average_precision_by_hand(row, n_relevant, expected):
    one_query = mean_average_precision(np.array([row]), np.array([n_relevant]))
    assert one_query == pytest.approx(expected)


def test_mean_average_precision_is_the_mean_of_the_rows():
    same = np.array([[F, T, F, T], [T, F, F, F], [F, F, F, F]])
    # 0.5, 1/3 and 0 as above
    assert mean_average_precision(same, np.array([2, 3, 1])) == pytest.approx((0.5 + 1 / 3) / 3)


def test_average_precision_refuses_counts_that_cannot_be_right():
    with pytest.raises(ValueError, match="at least one relevant"):
        mean_average_precision(np.array([[F, F]]), np.array([0]))
    # two hits but one relevant image: usually the query ranked against itself
    with pytest.raises(ValueError, match="more same-person items"):
        mean_average_precision(np.array([[T, T]]), np.array([1]))


def test_retrieval_metrics_by_hand():
    same = np.zeros((2, 25), dtype=bool)
    same[0, [0, 2]] = True  # ranks 1 and 3: AP (1 + 2/3) / 2 = 5/6
    same[1, [6, 21]] = True  # ranks 7 and 22: AP (1/7 + 2/22) / 2
    metrics = retrieval_metrics(same, np.array([2, 2]))
    assert metrics.hit_at_1 == 0.5
    assert metrics.hit_at_5 == 0.5
    assert metrics.hit_at_20 == 1.0
    assert metrics.map == pytest.approx((5 / 6 + (1 / 7 + 2 / 22) / 2) / 2)
    assert metrics.mean_same_in_top20 == pytest.approx((2 + 1) / 2)  # rank 22 is not counted
    assert metrics.hit_curve == [0.5] * 6 + [1.0] * 14


def test_hit_curve_stops_at_max_k_or_the_ranking_depth():
    same = np.array([[F, T, F], [F, F, F]])
    assert retrieval_metrics(same, np.array([1, 1])).hit_curve == [0.0, 0.5, 0.5]
    assert retrieval_metrics(same, np.array([1, 1]), max_k=2).hit_curve == [0.0, 0.5]


def test_best_threshold_by_hand():
    # 1.5 and 3.5 both classify 3 of 4 right; the smaller is kept
    assert best_threshold(np.array([1.0, 2.0, 3.0, 4.0]), np.array([T, F, T, F])) == 1.5
    # ties in distance: 2.0 holds one of each, so 2.5 gets all four right
    assert best_threshold(np.array([2.0, 1.0, 2.0, 3.0]), np.array([T, T, T, F])) == 2.5


def test_best_threshold_can_call_everything_same_or_different():
    distances = np.array([1.0, 2.0, 3.0])
    assert best_threshold(distances, np.array([T, T, T])) > 3.0
    assert best_threshold(distances, np.array([F, F, F])) < 1.0


def test_separable_pairs_are_all_verified():
    distances = np.concatenate([np.linspace(0.1, 0.4, 10), np.linspace(0.6, 0.9, 10)])
    is_same = np.array([T] * 10 + [F] * 10)
    metrics = verification_metrics(distances, is_same)
    assert metrics.accuracy == 1.0 and metrics.accuracy_std == 0.0 and metrics.roc_auc == 1.0
    assert len(metrics.thresholds) == 10
    assert all(0.4 < t < 0.6 for t in metrics.thresholds)
    assert metrics.chance_accuracy == 0.5 and metrics.pairs == 20 and metrics.matched == 10


def test_one_outlier_costs_half_of_its_fold():
    # 9 same pairs at 0.1..0.9, 10 different ones at 2.0..2.9, and one same
    # pair at 5.0. Every training split puts its threshold in the gap (1, 2):
    # calling 5.0 "same" would call 9 different pairs "same" too. So only the
    # outlier is wrong, in its 2-pair fold: folds score 1 (x9) and 0.5,
    # mean 0.95, std sqrt((9 * 0.05^2 + 0.45^2) / 10) = 0.15.
    distances = np.concatenate([np.arange(1, 10) / 10, [5.0], 2.0 + np.arange(10) / 10])
    is_same = np.array([T] * 10 + [F] * 10)
    metrics = verification_metrics(distances, is_same)
    assert metrics.accuracy == pytest.approx(0.95)
    assert metrics.accuracy_std == pytest.approx(0.15)
    assert all(0.9 <= t <= 2.0 for t in metrics.thresholds)


def test_roc_auc_by_hand():
    # same at 1 and 3, different at 2 and 4: of the 4 (same, different) pairs,
    # (1,2), (1,4), (3,4) are ordered right, (3,2) wrong -> AUC 3/4
    metrics = verification_metrics(np.array([1.0, 3.0, 2.0, 4.0] * 5), np.array([T, T, F, F] * 5))
    assert metrics.roc_auc == pytest.approx(0.75)
    assert (metrics.fpr[0], metrics.tpr[0], metrics.fpr[-1], metrics.tpr[-1]) == (0, 0, 1, 1)
    # same at 1 and 2, different at 2 and 3: (1,2), (1,3), (2,3) right and the
    # tie (2,2) counts half -> AUC 3.5/4
    metrics = verification_metrics(np.array([1.0, 2.0, 2.0, 3.0] * 5), np.array([T, T, F, F] * 5))
    assert metrics.roc_auc == pytest.approx(0.875)


def test_cross_validated_accuracy_is_below_one_on_overlap():
    rng = np.random.default_rng(0)
    distances = np.concatenate([rng.normal(1.0, 0.3, 200), rng.normal(1.6, 0.3, 200)])
    is_same = np.array([T] * 200 + [F] * 200)
    metrics = verification_metrics(distances, is_same)
    # two normals with sd 0.3, 0.6 apart: the best threshold (1.3) is 1 sd from
    # each mean, so the best possible accuracy is Phi(1) = 0.84
    assert 0.78 < metrics.accuracy < 0.9
    assert 0.85 < metrics.roc_auc < 0.95  # Phi(0.6 / (0.3 * sqrt 2)) = 0.92


def test_plots_module_imports_without_matplotlib():
    code = "import sys, lookalike.server.evaluation.plots; sys.exit('matplotlib' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_plots_are_readable_pngs(tmp_path):
    pytest.importorskip("matplotlib")

    from lookalike.server.evaluation.plots import plot_hit_curve, plot_roc

    metrics = verification_metrics(np.array([1.0, 3.0, 2.0, 4.0] * 5), np.array([T, T, F, F] * 5))
    plot_roc(metrics.fpr, metrics.tpr, metrics.roc_auc, tmp_path / "roc.png")
    plot_hit_curve([0.4, 0.5, 0.55, 0.6, 0.62] + [0.7] * 15, tmp_path / "hit.png", "a title")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hit.png", "roc.png"]  # no temp left
    for name in ("roc.png", "hit.png"):
        with Image.open(tmp_path / name) as image:
            assert image.format == "PNG"
            assert 400 <= image.width <= 2000 and 300 <= image.height <= 2000
            assert len(image.convert("L").getcolors(maxcolors=1 << 16)) > 10  # not blank


def test_split_is_by_person_and_stable():
    names = [f"Person_{i}" for i in range(2000)]
    splits = [person_split(name) for name in names]
    assert splits == [person_split(name) for name in reversed(names)][::-1]
    assert 0.25 < splits.count("test") / len(splits) < 0.35


def test_eval_names_the_distance_of_its_operating_point():
    """The threshold users can give `serve --max-distance`: between the pairs' two groups."""
    from lookalike.server.evaluation.cli import format_report
    from lookalike.server.evaluation.scores import verification_metrics

    same = [0.1, 0.2, 0.3, 0.35] * 5
    different = [0.8, 0.9, 1.0, 1.2] * 5
    metrics = verification_metrics(same + different, [True] * 20 + [False] * 20)
    assert metrics.threshold == pytest.approx((0.35 + 0.8) / 2)
    assert metrics.accuracy == 1.0
    report = {
        "gallery_size": 40,
        "people": 2,
        "split": "all",
        "queries": 40,
        "model_fingerprint": "f",
        "model_weights": "none",
        "input_size": 64,
        "crop": "none",
        "execution_provider": "CPUExecutionProvider",
        "hit_at_1": 1.0,
        "hit_at_5": 1.0,
        "hit_at_20": 1.0,
        "map": 1.0,
        "mean_same_in_top20": 1.0,
        "verification_accuracy": metrics.accuracy,
        "roc_auc": metrics.roc_auc,
        "verification": {**metrics.__dict__},
        "pairs_skipped": 0,
        "knn_backend": "sklearn-brute",
        "seconds_index": 0.0,
        "seconds_search": 0.0,
        "seconds_total": 0.0,
    }
    assert "--max-distance 0.5750" in format_report(report)

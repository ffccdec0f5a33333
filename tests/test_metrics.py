"""Metric code against cases worked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from lookalike.server.metrics import (
    average_precisions,
    best_threshold,
    hit_at_k,
    retrieval_metrics,
    same_label_matrix,
    verification_metrics,
)

T, F = True, False


def test_same_label_matrix():
    same = same_label_matrix(np.array(["a", "b"]), np.array([["b", "a"], ["b", "b"]]))
    assert same.tolist() == [[F, T], [T, T]]


def test_hit_at_k_counts_queries_with_any_same_person_in_the_first_k():
    same = np.array([[F, T, F, F, F, F], [T, F, F, F, F, F], [F, F, F, F, F, T]])
    assert hit_at_k(same, 1) == pytest.approx(1 / 3)
    assert hit_at_k(same, 2) == pytest.approx(2 / 3)
    assert hit_at_k(same, 5) == pytest.approx(2 / 3)
    assert hit_at_k(same, 6) == pytest.approx(1.0)


def test_average_precision_by_hand():
    same = np.array([[F, T, F, T], [T, F, F, F], [F, F, F, F]])
    # query 1: relevant at ranks 2 and 4 -> (1/2 + 2/4) / 2 = 0.5
    # query 2: relevant at rank 1, two more never ranked -> (1/1) / 3 = 1/3
    # query 3: its one relevant image was never ranked -> 0
    aps = average_precisions(same, np.array([2, 3, 1]))
    np.testing.assert_allclose(aps, [0.5, 1 / 3, 0.0])


def test_retrieval_metrics_by_hand():
    same = np.zeros((2, 25), dtype=bool)
    same[0, [0, 2]] = True  # ranks 1 and 3: AP (1 + 2/3) / 2 = 5/6
    same[1, [6, 21]] = True  # ranks 7 and 22: AP (1/7 + 2/22) / 2
    metrics = retrieval_metrics(same, np.array([2, 2]))
    assert metrics.hit_at_1 == 0.5
    assert metrics.hit_at_5 == 0.5
    assert metrics.hit_at_20 == 1.0
    assert metrics.map == pytest.approx((5 / 6 + (1 / 7 + 2 / 22) / 2) / 2)
    assert metrics.mean_same_in_top20 == pytest.approx((2 + 1) / 2)
    assert metrics.hit_curve[:7] == [0.5] * 6 + [1.0]
    assert len(metrics.hit_curve) == 20


def test_best_threshold_by_hand():
    # thresholds 1.5 and 3.5 both classify 3 of 4 right; the first is kept
    assert best_threshold(np.array([1.0, 2.0, 3.0, 4.0]), np.array([T, F, T, F])) == 1.5


def test_separable_pairs_are_all_verified():
    distances = np.concatenate([np.linspace(0.1, 0.4, 10), np.linspace(0.6, 0.9, 10)])
    is_same = np.array([T] * 10 + [F] * 10)
    metrics = verification_metrics(distances, is_same)
    assert metrics.accuracy == 1.0 and metrics.roc_auc == 1.0
    assert all(0.4 < t < 0.6 for t in metrics.thresholds)
    assert metrics.chance_accuracy == 0.5 and metrics.pairs == 20 and metrics.matched == 10


def test_roc_auc_by_hand():
    # same at 1 and 3, different at 2 and 4: of the 4 (same, different) pairs,
    # (1,2), (1,4), (3,4) are ordered right, (3,2) wrong -> AUC 3/4
    distances = np.array([1.0, 3.0, 2.0, 4.0] * 5)
    is_same = np.array([T, T, F, F] * 5)
    assert verification_metrics(distances, is_same).roc_auc == pytest.approx(0.75)


def test_cross_validated_accuracy_is_below_one_on_overlap():
    rng = np.random.default_rng(0)
    distances = np.concatenate([rng.normal(1.0, 0.3, 200), rng.normal(1.6, 0.3, 200)])
    is_same = np.array([T] * 200 + [F] * 200)
    metrics = verification_metrics(distances, is_same)
    # two unit-variance-0.3 normals 0.6 apart: best accuracy Phi(1) = 0.84
    assert 0.78 < metrics.accuracy < 0.9
    assert len(metrics.thresholds) == 10

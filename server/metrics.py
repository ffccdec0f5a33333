"""Retrieval and verification metrics: what `lookalike eval` reports.

Pure numpy and scikit-learn on rankings and distances, so each figure can be
checked by hand on tiny cases.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.model_selection import KFold


def same_label_matrix(query_labels: np.ndarray, ranked_labels: np.ndarray) -> np.ndarray:
    """(queries, ranked) booleans: is the ranked item the query's person?"""
    return ranked_labels == np.asarray(query_labels)[:, np.newaxis]


def hit_at_k(same: np.ndarray, k: int) -> float:
    """Share of queries with at least one image of the same person among the first k."""
    return float(same[:, :k].any(axis=1).mean())


def average_precisions(same: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
    """AP of each query over its whole ranking: mean precision at each relevant rank.

    ``n_relevant`` counts the query's same-person gallery images (itself
    excluded), so relevant images missing from a truncated ranking count as 0.
    """
    hits = np.cumsum(same, axis=1)
    ranks = np.arange(1, same.shape[1] + 1)
    precision_at_hits = np.where(same, hits / ranks, 0.0)
    return precision_at_hits.sum(axis=1) / np.maximum(n_relevant, 1)


@dataclass(frozen=True)
class RetrievalMetrics:
    hit_at_1: float
    hit_at_5: float
    hit_at_20: float
    map: float
    mean_same_in_top20: float
    hit_curve: list[float]  # hit@k for k = 1..len(hit_curve)


def retrieval_metrics(
    same: np.ndarray, n_relevant: np.ndarray, max_k: int = 20
) -> RetrievalMetrics:
    curve = np.cumsum(same[:, :max_k], axis=1) > 0
    return RetrievalMetrics(
        hit_at_1=hit_at_k(same, 1),
        hit_at_5=hit_at_k(same, 5),
        hit_at_20=hit_at_k(same, 20),
        map=float(average_precisions(same, n_relevant).mean()),
        mean_same_in_top20=float(same[:, :20].sum(axis=1).mean()),
        hit_curve=[float(v) for v in curve.mean(axis=0)],
    )


@dataclass(frozen=True)
class VerificationMetrics:
    accuracy: float
    accuracy_std: float
    thresholds: list[float]
    roc_auc: float
    fpr: list[float]
    tpr: list[float]
    pairs: int
    matched: int
    chance_accuracy: float  # always answering the commoner class; 0.5 on balanced pairs


def best_threshold(distances: np.ndarray, is_same: np.ndarray) -> float:
    """The distance threshold (same when distance <= it) with the highest accuracy."""
    values = np.unique(distances)
    candidates = np.concatenate(
        [[values[0] - 1.0], (values[:-1] + values[1:]) / 2, [values[-1] + 1.0]]
    )
    accuracies = [np.mean((distances <= t) == is_same) for t in candidates]
    return float(candidates[int(np.argmax(accuracies))])


def verification_metrics(
    distances: np.ndarray, is_same: np.ndarray, n_folds: int = 10
) -> VerificationMetrics:
    """Accuracy as in the LFW protocol: each fold's threshold is chosen on the other folds.

    View 1 has no fixed folds, so pairs are shuffled into folds once
    (KFold, random_state=0), mixing matched and mismatched pairs in each.
    """
    distances = np.asarray(distances, dtype=np.float64)
    is_same = np.asarray(is_same, dtype=bool)
    accuracies, thresholds = [], []
    for train, test in KFold(n_folds, shuffle=True, random_state=0).split(distances):
        threshold = best_threshold(distances[train], is_same[train])
        thresholds.append(threshold)
        accuracies.append(float(np.mean((distances[test] <= threshold) == is_same[test])))
    fpr, tpr, _ = roc_curve(is_same, -distances)
    return VerificationMetrics(
        accuracy=float(np.mean(accuracies)),
        accuracy_std=float(np.std(accuracies)),
        thresholds=thresholds,
        roc_auc=float(roc_auc_score(is_same, -distances)),
        fpr=fpr.tolist(),
        tpr=tpr.tolist(),
        pairs=int(len(distances)),
        matched=int(is_same.sum()),
        chance_accuracy=float(max(is_same.mean(), 1 - is_same.mean())),
    )

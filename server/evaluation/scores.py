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
    return np.asarray(ranked_labels) == np.asarray(query_labels)[:, np.newaxis]


def hit_at_k(same: np.ndarray, k: int) -> float:
    """Share of queries with at least one image of the same person among the first k."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    return float(np.asarray(same)[:, :k].any(axis=1).mean())


def mean_average_precision(same: np.ndarray, n_relevant: np.ndarray) -> float:
    """Mean over queries of the precision at each relevant rank, summed, over ``n_relevant``.

    ``n_relevant`` counts each query's same-person gallery images (itself
    excluded), not the ones ranked: a relevant image cut off by a truncated
    ranking scores 0 instead of silently raising AP. A query with nothing
    relevant has no AP, and more hits than relevant images means the counts
    are wrong (often: the query itself was ranked), so both are refused.
    """
    same = np.asarray(same, dtype=bool)
    n_relevant = np.asarray(n_relevant)
    if np.any(n_relevant < 1):
        raise ValueError("every query needs at least one relevant gallery image for AP")
    if np.any(same.sum(axis=1) > n_relevant):
        raise ValueError("a ranking has more same-person items than its n_relevant")
    hits = np.cumsum(same, axis=1)
    ranks = np.arange(1, same.shape[1] + 1)
    precision_at_hits = np.where(same, hits / ranks, 0.0)
    return float((precision_at_hits.sum(axis=1) / n_relevant).mean())


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
    """The retrieval figures of one evaluation; the curve stops early on shorter rankings."""
    same = np.asarray(same, dtype=bool)
    curve = np.cumsum(same[:, :max_k], axis=1) > 0
    return RetrievalMetrics(
        hit_at_1=hit_at_k(same, 1),
        hit_at_5=hit_at_k(same, 5),
        hit_at_20=hit_at_k(same, 20),
        map=mean_average_precision(same, n_relevant),
        mean_same_in_top20=float(same[:, :20].sum(axis=1).mean()),
        hit_curve=[float(v) for v in curve.mean(axis=0)],
    )


@dataclass(frozen=True)
class VerificationMetrics:
    accuracy: float  # mean over the held-out folds
    accuracy_std: float
    thresholds: list[float]  # one per fold, chosen on the other folds
    roc_auc: float
    fpr: list[float]
    tpr: list[float]
    pairs: int
    matched: int
    chance_accuracy: float  # always answering the commoner class; 0.5 on balanced pairs
    # The operating point: the distance threshold of best accuracy on all the pairs,
    # a starting value for `serve --max-distance` with this model.
    threshold: float = float("nan")


def best_threshold(distances: np.ndarray, is_same: np.ndarray) -> float:
    """The distance threshold (same when distance <= it) with the highest accuracy.

    Candidates are the midpoints between sorted distinct distances, plus one
    below the smallest and one above the largest so that "all different" and
    "all same" can win; ties go to the smallest threshold. Sorting once and
    counting with cumulative sums keeps this O(n log n) on big pair sets.
    """
    order = np.argsort(distances, kind="stable")
    ordered, same = distances[order], is_same[order]
    values = np.unique(ordered)
    candidates = np.concatenate(
        [[values[0] - 1.0], (values[:-1] + values[1:]) / 2, [values[-1] + 1.0]]
    )
    called_same = np.searchsorted(ordered, candidates, side="right")
    same_called_same = np.concatenate([[0], np.cumsum(same)])[called_same]
    different_called_different = (len(same) - same.sum()) - (called_same - same_called_same)
    return float(candidates[int(np.argmax(same_called_same + different_called_different))])


def verification_metrics(
    distances: np.ndarray, is_same: np.ndarray, n_folds: int = 10
) -> VerificationMetrics:
    """Accuracy as in the LFW protocol: each fold's threshold is chosen on the other folds.

    LFW View 2 has fixed folds, but View 1 (pairsDevTrain) has none and lists
    all matched pairs before all mismatched ones, so contiguous folds would be
    one-class. Pairs are shuffled into folds once instead (KFold, shuffle=True,
    random_state=0), which mixes both kinds in each fold and is reproducible.
    AUC ranks pairs by -distance: nearer means more likely the same person.
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
        pairs=len(distances),
        matched=int(is_same.sum()),
        chance_accuracy=float(max(is_same.mean(), 1 - is_same.mean())),
        threshold=best_threshold(distances, is_same),
    )

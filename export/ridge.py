"""The closed-form head: ridge regression from frozen features to teacher targets.

A dense head on frozen features is a linear least-squares problem, so it needs no
gradient steps: one solve fits it to every cached image at once, in whichever of the
primal (features x features) or dual (rows x rows) form is smaller. Kept apart from
the training loop because it is plain numpy.
"""

from __future__ import annotations

import numpy as np


def ridge_head(
    features: np.ndarray, targets: np.ndarray, penalty: float
) -> tuple[np.ndarray, np.ndarray]:
    """(weights, bias) minimising ||features @ weights + bias - targets||^2 +
    lam ||weights||^2, with lam = ``penalty`` times the mean squared norm of a centred
    feature row (so one penalty suits any layer's scale). The bias is not penalised: it
    takes the means of features and targets. ``features`` is centred in place, to spare
    a copy of the largest array."""
    if penalty <= 0:
        raise ValueError("the ridge penalty must be positive")
    features = features.astype(np.float32, copy=False)
    mean = features.mean(axis=0)
    features -= mean
    dual = len(features) < features.shape[1]
    gram = features @ features.T if dual else features.T @ features
    gram[np.diag_indices_from(gram)] += penalty * np.trace(gram) / len(features)
    targets = targets.astype(np.float32, copy=False)
    if dual:
        weights = features.T @ np.linalg.solve(gram, targets)
    else:
        weights = np.linalg.solve(gram, features.T @ targets)
    return weights, targets.mean(axis=0) - mean @ weights

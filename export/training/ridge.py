"""The closed-form head: ridge regression from frozen features to teacher targets.

A dense head on frozen features is a linear least-squares problem, so it needs no
gradient steps: scikit-learn's ``Ridge`` fits it to every cached image at once in one
solve (its Cholesky solver takes the dual, rows x rows, form when there are more
features than rows, as with the flattened conv2 map). What this module adds is the
scale of the penalty, so one ``--ridge-penalty`` suits any layer.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import Ridge


def ridge_head(
    features: np.ndarray, targets: np.ndarray, penalty: float
) -> tuple[np.ndarray, np.ndarray]:
    """(weights, bias) of the dense head minimising ||features @ weights + bias -
    targets||^2 + lam ||weights||^2, with lam = ``penalty`` times the mean squared norm
    of a centred feature row; the bias is not penalised. float32 ``features`` are
    centred in place, to spare a copy of the largest array."""
    if penalty <= 0:
        raise ValueError("the ridge penalty must be positive")
    features = features.astype(np.float32, copy=False)
    mean = features.mean(axis=0)
    mean_squared_norm = np.einsum("ij,ij->", features, features) / len(features) - mean @ mean
    model = Ridge(alpha=penalty * float(mean_squared_norm), copy_X=False)
    model.fit(features, targets.astype(np.float32, copy=False))
    return model.coef_.T, model.intercept_

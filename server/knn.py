"""Exact k-nearest-neighbour search with scikit-learn over the mapped matrix."""

from __future__ import annotations

import numpy as np
from sklearn.neighbors import NearestNeighbors

from lookalike.server.config import Algorithm


class KnnSearcher:
    """Euclidean k-NN over the gallery's feature matrix.

    With ``algorithm="brute"`` scikit-learn keeps the memory map it is given,
    so the gallery lives in the page cache, shared, instead of in the heap;
    tree algorithms copy the matrix into their own structure.
    """

    def __init__(self, features: np.ndarray, algorithm: Algorithm = "brute") -> None:
        if features.dtype != np.float32:
            raise TypeError(f"the feature matrix must be float32, not {features.dtype}")
        self.algorithm = algorithm
        self._nn = NearestNeighbors(algorithm=algorithm, metric="euclidean").fit(features)
        self.size = features.shape[0]

    @property
    def backend(self) -> str:
        return f"sklearn-{self.algorithm}"

    @property
    def matrix(self) -> np.ndarray:
        """The matrix scikit-learn searches: for brute force, the caller's memmap itself."""
        tree = getattr(self._nn, "_tree", None)
        return self._nn._fit_X if tree is None else np.asarray(tree.data)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Distances and row indices of the k nearest rows, nearest first, per query."""
        k = min(k, self.size)
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        distances, indices = self._nn.kneighbors(queries, n_neighbors=k)
        return distances.astype(np.float32, copy=False), indices

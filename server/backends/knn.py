"""Exact k-nearest-neighbour search over the mapped matrix: scikit-learn, or faiss."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from functools import cache

import numpy as np
from sklearn.neighbors import NearestNeighbors
from threadpoolctl import ThreadpoolController

from lookalike.server.backends.base import DEFAULT_ALGORITHM, Algorithm

# Galleries smaller than this are searched by scikit-learn on one OpenMP thread. On two,
# its brute force cost about 13 ms a call over 278 or 2,810 rows of 2048 dimensions,
# against 0.9-2.8 ms on one; from 5,000 rows on two threads were the faster
# (benchmarks/knn_threads.py, docs/BENCHMARKS.md). Below this size, 128-d rows took at
# most 0.1 ms longer on one thread, for half the CPU.
ONE_THREAD_ROWS = 4_096


class KnnSearcher:
    """Euclidean k-NN over the gallery's feature matrix.

    With ``algorithm="brute"`` scikit-learn keeps the memory map it is given,
    so the gallery lives in the page cache, shared, instead of in the heap;
    tree algorithms copy the matrix into their own structure. ``"faiss"`` runs
    faiss' exact brute-force ``knn`` on the same mapping (the ``faiss`` extra).

    scikit-learn's brute force and faiss' ``knn`` recompute the squared norms
    of every gallery row on each call, a second pass over the matrix; they are
    computed once here and handed to scikit-learn through the ``Y_norm_squared``
    argument of its Euclidean reduction, and to faiss' ``knn_L2sqr``.
    """

    def __init__(self, features: np.ndarray, algorithm: Algorithm = DEFAULT_ALGORITHM) -> None:
        if features.dtype != np.float32:
            raise TypeError(f"the feature matrix must be float32, not {features.dtype}")
        self.algorithm = algorithm
        self.size = features.shape[0]
        self._features = features
        self._nn: NearestNeighbors | None = None
        self._norms: np.ndarray | None = None
        if algorithm == "faiss":
            import faiss  # noqa: F401 (fail at start, not at the first query)

            self._norms = row_norms_squared(features).astype(np.float32)
        else:
            self._nn = NearestNeighbors(algorithm=algorithm, metric="euclidean").fit(features)
            if algorithm == "brute":
                self._norms = row_norms_squared(features)

    @property
    def name(self) -> str:
        return "faiss-flat" if self.algorithm == "faiss" else f"sklearn-{self.algorithm}"

    @property
    def matrix(self) -> np.ndarray:
        """The matrix searched: for brute force and faiss, the caller's memmap itself."""
        if self._nn is None:
            return self._features
        tree = getattr(self._nn, "_tree", None)
        return self._nn._fit_X if tree is None else np.asarray(tree.data)

    def search(
        self, queries: np.ndarray, k: int, breadth: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """Distances and row indices of the k nearest rows, nearest first, per query
        (``breadth`` is for approximate searchers: an exact one reads every row)."""
        k = min(k, self.size)
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if self._nn is None:
            return self._faiss_search(queries, k)
        if self._norms is not None:
            # scikit-learn pops this from the dict it is given, so give it afresh
            self._nn.effective_metric_params_ = {"Y_norm_squared": self._norms}
        with self._threads():
            distances, indices = self._nn.kneighbors(queries, n_neighbors=k)
        return distances.astype(np.float32, copy=False), indices

    def _threads(self) -> AbstractContextManager:
        """One OpenMP thread for a small gallery (``ONE_THREAD_ROWS``), else as many as
        scikit-learn takes."""
        if self.size >= ONE_THREAD_ROWS:
            return nullcontext()
        return _openmp().limit(limits=1, user_api="openmp")

    def _faiss_search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """faiss' exact search (the function behind ``faiss.knn``) with the stored norms."""
        from faiss import knn_L2sqr, swig_ptr

        squared = np.empty((len(queries), k), dtype=np.float32)
        indices = np.empty((len(queries), k), dtype=np.int64)
        rows, dim = self._features.shape
        knn_L2sqr(
            swig_ptr(queries),
            swig_ptr(self._features),
            dim,
            len(queries),
            rows,
            k,
            swig_ptr(squared),
            swig_ptr(indices),
            swig_ptr(self._norms),
        )
        return np.sqrt(np.maximum(squared, 0)), indices


@cache
def _openmp() -> ThreadpoolController:
    """The process's thread pools, found once: finding them reads every loaded library."""
    return ThreadpoolController()


def row_norms_squared(features: np.ndarray, block: int = 65_536) -> np.ndarray:
    """Squared row norms in float64, read block by block so the mapping is not copied."""
    norms = np.empty(features.shape[0], dtype=np.float64)
    for start in range(0, features.shape[0], block):
        rows = np.asarray(features[start : start + block], dtype=np.float64)
        norms[start : start + block] = np.einsum("ij,ij->i", rows, rows)
    return norms

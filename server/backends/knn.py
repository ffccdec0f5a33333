"""Exact k-nearest-neighbour search over the mapped matrix: scikit-learn, or faiss."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

import numpy as np
from sklearn.neighbors import NearestNeighbors
from threadpoolctl import ThreadpoolController

from lookalike.server.backends.base import DEFAULT_ALGORITHM, Algorithm

# Galleries smaller than this are searched on one OpenMP thread. On two, scikit-learn's
# brute force cost about 13 ms a call over 278 or 2,810 rows of 2048 dimensions, against
# 0.9-2.8 ms on one; from 5,000 rows on two threads were the faster
# (benchmarks/knn_threads.py, docs/BENCHMARKS.md). Below this size, 128-d rows took at
# most 0.1 ms longer on one thread, for half the CPU. faiss on two threads spent twice
# the CPU of one over 278 rows, for the same wall time.
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
        with self._threads():
            if self._nn is None:
                return self._faiss_search(queries, k)
            if self._norms is not None:
                # scikit-learn pops this from the dict it is given, so give it afresh
                self._nn.effective_metric_params_ = {"Y_norm_squared": self._norms}
            distances, indices = self._nn.kneighbors(queries, n_neighbors=k)
        return distances.astype(np.float32, copy=False), indices

    @contextmanager
    def _threads(self) -> Iterator[None]:
        """One OpenMP thread on this thread for a small gallery (``ONE_THREAD_ROWS``),
        else as many as the library takes."""
        if self.size >= ONE_THREAD_ROWS:
            yield
            return
        with openmp_threads(1, faiss=self._nn is None):
            yield

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


@contextmanager
def openmp_threads(threads: int, faiss: bool = False) -> Iterator[None]:
    """``threads`` OpenMP threads for the parallel regions this thread starts meanwhile
    (scikit-learn's, or faiss' with ``faiss``).

    OpenMP keeps the count per thread, so concurrent batcher threads do not undo each
    other's. The runtimes are found once: threadpoolctl's ``limit`` looks every
    loaded library up again on each call, about 0.1 ms, more than the search of a
    small gallery takes in faiss.
    """
    if faiss:
        import faiss as library

        before = [library.omp_get_max_threads()]
        setters = [library.omp_set_num_threads]
    else:
        runtimes = _openmp_runtimes()
        before = [runtime.get_num_threads() for runtime in runtimes]
        setters = [runtime.set_num_threads for runtime in runtimes]
    for set_threads in setters:
        set_threads(threads)
    try:
        yield
    finally:
        for set_threads, count in zip(setters, before, strict=True):
            set_threads(count)


@cache
def _openmp_runtimes() -> tuple:
    """The OpenMP runtimes loaded (scikit-learn's), found once: finding them reads every
    loaded library."""
    return tuple(ThreadpoolController().select(user_api="openmp").lib_controllers)


def row_norms_squared(features: np.ndarray, block: int = 65_536) -> np.ndarray:
    """Squared row norms in float64, read block by block so the mapping is not copied."""
    norms = np.empty(features.shape[0], dtype=np.float64)
    for start in range(0, features.shape[0], block):
        rows = np.asarray(features[start : start + block], dtype=np.float64)
        norms[start : start + block] = np.einsum("ij,ij->i", rows, rows)
    return norms

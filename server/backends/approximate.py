"""Searchers of an index folder's rows other than the exact float32 scan (``knn.py``):
a faiss approximate structure (IVF-Flat, IVF-SQ8, IVF-PQ, HNSW), and the exact scan of a
float16 matrix.

Each answers like ``KnnSearcher.search``: Euclidean distances and row numbers,
nearest first, so the View above merges them with the added rows' exact hits
and filters erased rows the same way whatever searched the base.
"""

from __future__ import annotations

import mmap
from typing import Protocol

import numpy as np

from lookalike.server.backends.base import Algorithm
from lookalike.server.backends.knn import KnnSearcher
from lookalike.server.index import ann
from lookalike.server.index.store import GalleryIndex

MAX_BREADTH_FACTOR = 16  # a request may search up to this many times the server's breadth
# Candidates fetched per wanted row from a structure of codes, ranked again on the exact
# matrix: 8-bit scalar codes are close; 4-bit product codes coarser, and cheap to scan.
RERANK_FACTORS = {"ivf-sq8": 4, "ivf-pq": 32}


class RowSearcher(Protocol):
    @property
    def name(self) -> str: ...

    def search(
        self, queries: np.ndarray, k: int, breadth: int = 0
    ) -> tuple[np.ndarray, np.ndarray]: ...


class AnnSearcher:
    """An approximate structure over the matrix, searched ``breadth`` wide.

    IVF-Flat and HNSW hold the rows themselves, so their distances are exact;
    IVF-SQ8 and IVF-PQ hold codes, so they fetch ``RERANK_FACTORS`` times the rows
    wanted and rank them again by their exact distance in the mapped matrix,
    which stays the source of truth (and a few rows of it are all a query reads).
    """

    def __init__(self, index: GalleryIndex, breadth: int = 0) -> None:
        layout = index.manifest.layout
        self.index_type = layout.index_type
        self.default_breadth = breadth or layout.breadth
        self._features = index.features
        self._faiss = ann.faiss_module()
        self._index = ann.load(index.path.resolve(), index.features, layout)
        self._rerank_factor = RERANK_FACTORS.get(self.index_type, 0)
        if self._rerank_factor:  # a query reads a few scattered rows: no read-ahead
            advise_random(index.features)

    @property
    def name(self) -> str:
        return f"faiss-{self.index_type}"

    @property
    def max_breadth(self) -> int:
        return MAX_BREADTH_FACTOR * self.default_breadth

    def search(
        self, queries: np.ndarray, k: int, breadth: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, self._index.ntotal)
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        breadth = breadth or self.default_breadth
        rerank = bool(self._rerank_factor)
        fetch = min(self._index.ntotal, k * self._rerank_factor) if rerank else k
        if self.index_type == "hnsw":
            params = self._faiss.SearchParametersHNSW(efSearch=max(breadth, fetch))
        else:
            params = self._faiss.SearchParametersIVF(nprobe=breadth)
        squared, rows = self._index.search(queries, fetch, params=params)
        if rerank:
            return self._rerank(queries, rows, k)
        return np.sqrt(np.maximum(squared, 0)), rows

    def _rerank(
        self, queries: np.ndarray, rows: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The k candidates nearest by the exact matrix; -1 (too few found) stays last."""
        wanted = np.unique(rows[rows >= 0])
        if not len(wanted):  # every list probed was empty
            return np.full((len(rows), k), np.inf, np.float32), rows[:, :k]
        exact = np.asarray(self._features[wanted], dtype=np.float32)
        position = np.searchsorted(wanted, np.maximum(rows, 0))
        differences = exact[position] - queries[:, None, :]
        distances = np.sqrt(np.einsum("qcd,qcd->qc", differences, differences))
        distances[rows < 0] = np.inf
        order = np.argsort(distances, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(distances, order, 1), np.take_along_axis(rows, order, 1)


class HalfSearcher:
    """Exact search of a float16 matrix: faiss' fp16 scalar quantizer holds the rows (half
    the float32 size, in the heap: faiss cannot search a numpy mapping of float16) and
    decodes them on the fly while it scans."""

    def __init__(self, features: np.ndarray) -> None:
        faiss = ann.faiss_module()
        rows, dim = features.shape
        self._index = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_fp16)
        # The codes sized once and encoded into place: add() grows them by doubling, which
        # for a moment holds the rows twice (5 GB of heap for 10M rows, beside the old
        # searcher during a reload or a compaction).
        size = self._index.code_size
        if not rows:
            return
        self._index.codes.resize(rows * size)
        codes = faiss.rev_swig_ptr(self._index.codes.data(), rows * size).reshape(-1, size)
        for start in range(0, rows, ann.BLOCK):
            block = np.ascontiguousarray(features[start : start + ann.BLOCK], np.float32)
            self._index.sa_encode(block, codes[start : start + len(block)])
        self._index.ntotal = rows

    @property
    def name(self) -> str:
        return "faiss-flat-fp16"

    def search(
        self, queries: np.ndarray, k: int, breadth: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, self._index.ntotal)
        squared, rows = self._index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return np.sqrt(np.maximum(squared, 0)), rows


def advise_random(features: np.ndarray) -> None:
    """Tell the kernel the mapping is read at random, so a row read pulls in its page, not
    the next 128 KiB with it."""
    mapping = getattr(features, "_mmap", None)
    if mapping is not None and hasattr(mmap, "MADV_RANDOM"):
        mapping.madvise(mmap.MADV_RANDOM)


def open_searcher(index: GalleryIndex, algorithm: Algorithm, breadth: int = 0) -> RowSearcher:
    """The searcher of the index's layout: its approximate structure, a float16 scan, or
    the exact float32 scan by ``algorithm``."""
    if index.manifest.layout.approximate:
        return AnnSearcher(index, breadth)
    return exact_searcher(index, algorithm)


def exact_searcher(index: GalleryIndex, algorithm: Algorithm) -> RowSearcher:
    """Exact search over the stored rows, whatever else the index holds: a float16 scan,
    or the float32 scan by ``algorithm`` (evaluation ranks every row, which only an
    exact searcher can)."""
    if index.manifest.layout.storage == "float16":
        return HalfSearcher(index.features)
    return KnnSearcher(index.features, algorithm)

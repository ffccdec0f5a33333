"""The approximate k-NN structure of an index folder, built from its matrix with faiss.

The matrix (features.npy) stays the source of truth: this structure is derived
from it at build and at compaction, stored beside it as ``ann.faiss``, and
built again in memory when that file is missing or does not match (an index
copied without it, a faiss that cannot read it). Rows are added in blocks read
from the mapping, so a build never holds a float32 copy of a float16 matrix.
Needs the ``faiss`` extra.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.server.index.store import ANN_FILE, InvalidIndexError, Layout

log = logging.getLogger(__name__)

BLOCK = 262_144  # rows converted to float32 and added at a time
MAX_LISTS = 8192
MIN_ROWS_PER_LIST = 64
TRAIN_ROWS = 262_144  # k-means training rows, and at least 16 a list (faiss warns under 39)
HNSW_LINKS = 32
HNSW_BUILD_BREADTH = 80  # efConstruction
HNSW_BREADTH = 256  # efSearch
SEED = 1234
KMEANS_ITERATIONS = 10  # faiss' default 25 costs 2.5x the training time for little recall
# ivf-pq: one 4-bit code per 2 dimensions (128-d: 32 bytes a row). One per 4 dimensions
# left recall near 0.73 at 1M faces however wide the search (docs/BENCHMARKS.md).
PQ_DIMENSIONS_PER_CODE = 2


def faiss_module() -> Any:
    """faiss, or an error that says which extra brings it."""
    try:
        import faiss
    except ImportError:
        raise InvalidIndexError(
            "an approximate index needs faiss: pip install 'lookalike[faiss]'"
        ) from None
    return faiss


def resolved(layout: Layout, rows: int) -> Layout:
    """``layout`` with its automatic (zero) parameters chosen for ``rows`` rows.

    IVF: about 4 sqrt(rows) lists, a power of two, at most 8192 (k-means, and placing
    10M rows among more, cost many minutes on two cores), at least 64 rows a list; by
    default a search visits 1/8 of them. HNSW: 32 links, efSearch 256. Both defaults
    favour recall, about 0.98 recall@10 for real faces at 1M rows (docs/BENCHMARKS.md,
    "Approximate k-NN"); ``serve --search-breadth`` trades it for speed.
    """
    if layout.index_type.startswith("ivf"):
        lists = layout.lists or 2 ** round(math.log2(max(1.0, 4 * math.sqrt(rows))))
        lists = max(1, min(lists, MAX_LISTS, rows // MIN_ROWS_PER_LIST))
        breadth = layout.breadth or min(lists, max(8, lists // 8))
        return replace(layout, lists=lists, links=0, breadth=breadth)
    if layout.index_type == "hnsw":
        return replace(
            layout,
            lists=0,
            links=layout.links or HNSW_LINKS,
            breadth=layout.breadth or HNSW_BREADTH,
        )
    return replace(layout, lists=0, links=0, breadth=0)


def build(features: np.ndarray, layout: Layout) -> Any:
    """The faiss index of ``layout`` over every row of ``features``, row i as id i."""
    faiss = faiss_module()
    rows, dim = features.shape
    started = time.perf_counter()
    if layout.index_type == "hnsw":
        index = faiss.IndexHNSWFlat(dim, layout.links)
        index.hnsw.efConstruction = HNSW_BUILD_BREADTH
    else:
        # a flat quantizer: every row goes to its nearest list (an HNSW over the centroids
        # adds faster, but misplaced about 1 row in 10 at efSearch 16 and 1 in 50 at 128)
        quantizer = faiss.IndexFlatL2(dim)
        if layout.index_type == "ivf-sq8":
            index = faiss.IndexIVFScalarQuantizer(
                quantizer, dim, layout.lists, faiss.ScalarQuantizer.QT_8bit
            )
        elif layout.index_type == "ivf-pq":
            index = faiss.IndexIVFPQFastScan(quantizer, dim, layout.lists, _pq_codes(dim), 4)
        else:
            index = faiss.IndexIVFFlat(quantizer, dim, layout.lists)
        index.cp.seed = SEED
        index.cp.niter = KMEANS_ITERATIONS
        index.train(_float32(_sample(features, max(16 * layout.lists, TRAIN_ROWS))))

    for start in range(0, rows, BLOCK):
        index.add(_float32(features[start : start + BLOCK]))
    log.info(
        "built the %s structure of %d rows in %.1f s",
        layout.index_type,
        rows,
        time.perf_counter() - started,
    )
    return index


def _pq_codes(dim: int) -> int:
    """Sub-quantizers of an ivf-pq index: one per PQ_DIMENSIONS_PER_CODE dimensions, an
    even number (faiss' fast scan reads codes in pairs)."""
    codes = dim // PQ_DIMENSIONS_PER_CODE
    if dim % PQ_DIMENSIONS_PER_CODE or codes % 2:
        raise InvalidIndexError(
            f"ivf-pq needs embeddings of a multiple of {2 * PQ_DIMENSIONS_PER_CODE} "
            f"dimensions, not {dim}; use ivf-sq8"
        )
    return codes


def _sample(features: np.ndarray, count: int) -> np.ndarray:
    """``count`` rows spread evenly over the matrix (a fixed choice: builds repeat)."""
    if count >= len(features):
        return np.asarray(features)
    rows = np.unique(np.linspace(0, len(features) - 1, count).astype(np.int64))
    return features[rows]


def _float32(rows: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(rows, dtype=np.float32)


def write(index: Any, folder: Path) -> Path:
    """Store ``index`` as the folder's ann.faiss."""
    faiss = faiss_module()
    path = folder / ANN_FILE
    faiss.write_index(index, str(path))
    return path


def load(folder: Path, features: np.ndarray, layout: Layout) -> Any:
    """The folder's structure, or one built now when the file is missing or stale."""
    faiss = faiss_module()
    path = folder / ANN_FILE
    if path.is_file():
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as error:
            log.warning("cannot read %s (%s); building it again in memory", path, error)
        else:
            if index.ntotal == len(features) and index.d == features.shape[1]:
                return index
            log.warning(
                "%s holds %d rows, not %d; building it again", path, index.ntotal, len(features)
            )
    else:
        log.warning("%s is missing; building the %s structure in memory", path, layout.index_type)
    return build(features, layout)

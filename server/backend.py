"""The seam between the server and wherever its gallery's vectors live.

The engine, the batcher and the service see a SearchBackend and nothing else.
There are two: MemmapBackend, the default (the mapped matrix searched with
scikit-learn or faiss), and MilvusBackend (lookalike.server.milvus, the
``milvus`` extra), for galleries that outgrow one machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from lookalike.server.config import Algorithm, ServerConfig
from lookalike.server.embedder import ModelInfo
from lookalike.server.index import GalleryIndex, GalleryInfo, Item
from lookalike.server.knn import KnnSearcher


class BackendUnavailable(RuntimeError):
    """The vector store did not answer in time; the same call may succeed later."""


@dataclass(frozen=True)
class Hit:
    item: Item
    distance: float  # Euclidean, as for every backend


class SearchBackend(Protocol):
    info: GalleryInfo

    @property
    def name(self) -> str:
        """What GetInfo reports as the k-NN backend, e.g. ``sklearn-brute``."""
        ...

    def __len__(self) -> int: ...

    def search(self, queries: np.ndarray, k: int) -> list[list[Hit]]:
        """The k nearest items of each query row, nearest first (fewer if the gallery is
        smaller). Raises BackendUnavailable when the store cannot be reached."""
        ...

    def check_model(self, model: ModelInfo) -> None:
        """Raise InvalidIndexError unless ``model`` embedded this gallery."""
        ...

    def reopen(self, location: str | None = None) -> SearchBackend:
        """The gallery now at ``location`` (an index folder, a collection), default the same."""
        ...


class MemmapBackend:
    """An index folder: the memory-mapped matrix and its manifest."""

    def __init__(self, index: GalleryIndex, algorithm: Algorithm = "brute") -> None:
        self.index = index
        self.info = index.manifest.info
        self.knn = KnnSearcher(index.features, algorithm)

    @property
    def name(self) -> str:
        return self.knn.backend

    def __len__(self) -> int:
        return len(self.index)

    def search(self, queries: np.ndarray, k: int) -> list[list[Hit]]:
        distances, rows = self.knn.search(queries, k)
        items = self.index.manifest.items
        return [
            [Hit(items[row], float(d)) for row, d in zip(found, near, strict=True)]
            for found, near in zip(rows, distances, strict=True)
        ]

    def check_model(self, model: ModelInfo) -> None:
        self.index.check_model(model)

    def reopen(self, location: str | None = None) -> MemmapBackend:
        path = Path(location) if location else self.index.path
        return MemmapBackend(GalleryIndex.open(path), self.knn.algorithm)


def open_backend(config: ServerConfig) -> SearchBackend:
    if config.backend == "milvus":
        from lookalike.server.milvus import MilvusBackend, MilvusTarget

        return MilvusBackend.open(MilvusTarget.from_server_config(config))
    return MemmapBackend(GalleryIndex.open(config.index), config.knn_algorithm)

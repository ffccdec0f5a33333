"""The default backend: an index folder's memory-mapped matrix, searched exactly in process."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lookalike.server.backends.base import Algorithm, Hit
from lookalike.server.backends.knn import KnnSearcher
from lookalike.server.index.store import GalleryIndex
from lookalike.server.vision.embedder import ModelInfo


class MemmapBackend:
    """An index folder: the memory-mapped matrix and its manifest."""

    def __init__(self, index: GalleryIndex, algorithm: Algorithm = "brute") -> None:
        self.index = index
        self.info = index.manifest.info
        self.knn = KnnSearcher(index.features, algorithm)

    @property
    def name(self) -> str:
        return self.knn.name

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

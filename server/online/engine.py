"""One search path from photo bytes to ranked gallery items, as the service runs it."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from functools import partial

import numpy as np

from lookalike.server.backends.base import Hit, SearchBackend
from lookalike.server.backends.memmap import MemmapBackend
from lookalike.server.index.store import GalleryIndex
from lookalike.server.online.batcher import DeadlinePassed, MicroBatcher
from lookalike.server.online.config import ServerConfig
from lookalike.server.vision.align import load_models as load_alignment_models
from lookalike.server.vision.embedder import Embedder
from lookalike.server.vision.imaging import DEFAULT_MAX_PIXELS, Prepared, load


@dataclass(frozen=True)
class SearchOutcome:
    """What one search found, with the crop it used and the time each stage took."""

    hits: list[Hit]
    prepared: Prepared
    decode_ms: float
    embed_ms: float
    search_ms: float


def open_backend(config: ServerConfig) -> SearchBackend:
    """The backend ``config`` names: the index folder, or a Milvus collection."""
    if config.backend == "milvus":
        from lookalike.server.backends.milvus import MilvusBackend, MilvusTarget

        return MilvusBackend.open(
            MilvusTarget.with_token_file(
                config.milvus_uri or "",
                config.collection or "",
                config.milvus_token_file,
                config.milvus_timeout_s,
            )
        )
    return MemmapBackend(
        GalleryIndex.open(config.index), config.knn_algorithm, breadth=config.search_breadth
    )


class SearchEngine:
    """The embedder and the gallery it embedded, behind whichever search backend.

    With a batcher, concurrent searches share embedder runs and k-NN calls; an
    engine made by ``with_backend`` after an index swap shares it too.
    """

    def __init__(
        self,
        embedder: Embedder,
        backend: SearchBackend,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        batcher: MicroBatcher | None = None,
    ) -> None:
        backend.check_model(embedder.info)
        if backend.info.crop.mode == "align":
            load_alignment_models()
        self.embedder = embedder
        self.backend = backend
        self.max_pixels = max_pixels
        self.batcher = batcher
        self._steps: dict[int, Callable] = {}  # breadth -> the batcher step of that breadth

    @classmethod
    def open(cls, config: ServerConfig) -> SearchEngine:
        embedder = Embedder(config.model, config.device, config.threads)
        return cls(embedder, open_backend(config), config.max_pixels)

    def with_backend(self, backend: SearchBackend) -> SearchEngine:
        """The same embedder and batcher over another gallery (checked against the model)."""
        return SearchEngine(self.embedder, backend, self.max_pixels, self.batcher)

    def with_batcher(self, batcher: MicroBatcher) -> SearchEngine:
        return SearchEngine(self.embedder, self.backend, self.max_pixels, batcher)

    def prepare(self, data: bytes) -> Prepared:
        """Decode and crop the way the gallery was embedded (raises ImageError)."""
        info = self.backend.info
        return load(data, info.crop, info.input_size, self.max_pixels)

    def warm_up(self, runs: int, batch_sizes: tuple[int, ...] = (1,)) -> float:
        """First runs are slow (allocation, kernel choice); pay for them before SERVING."""
        started = time.perf_counter()
        size = self.embedder.info.input_size
        for batch in batch_sizes:
            for _ in range(runs):
                features = self.embedder.embed(np.zeros((batch, size, size, 3), np.float32))
            if runs:
                self.backend.search(features, 1)
        return time.perf_counter() - started

    def embed_and_search(
        self, pixels: np.ndarray, k: int, breadth: int = 0
    ) -> tuple[list[list[Hit]], float, float]:
        """The k nearest items of each image of a batch, and the ms spent embedding and
        searching: the one step every search runs, alone or in a micro-batch."""
        started = time.perf_counter()
        features = self.embedder.embed(pixels)
        embedded = time.perf_counter()
        found = self.backend.search(features, k, breadth)
        return found, (embedded - started) * 1e3, (time.perf_counter() - embedded) * 1e3

    def _step(self, breadth: int) -> Callable:
        """One step object per breadth: the batcher batches searches of the same step, so
        searches of one breadth share a k-NN call and no search gets another's."""
        if not breadth:
            return self.embed_and_search
        return self._steps.setdefault(breadth, partial(self.embed_and_search, breadth=breadth))

    def search(
        self,
        data: bytes,
        k: int,
        checkpoint: Callable[[], None] = lambda: None,
        deadline: float | None = None,
        breadth: int = 0,
    ) -> SearchOutcome:
        """Decode, embed, search. ``checkpoint`` runs between stages and raises to stop a
        call nobody waits for; ``deadline`` (time.monotonic()) bounds the wait for a batch;
        ``breadth``: an approximate index's nprobe / efSearch (0: the server's).
        """
        checkpoint()
        started = time.perf_counter()
        prepared = self.prepare(data)
        decoded = time.perf_counter()
        checkpoint()
        if self.batcher is None:
            (hits,), embed_ms, search_ms = self.embed_and_search(
                prepared.pixels[np.newaxis], k, breadth
            )
        else:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            future = self.batcher.submit(self._step(breadth), prepared.pixels, k, deadline)
            try:
                answer = future.result(timeout=wait)
            except (FutureTimeout, DeadlinePassed):
                future.cancel()
                checkpoint()  # the deadline passed: the checkpoint ends the call
                raise
            hits, embed_ms, search_ms = answer.hits, answer.embed_ms, answer.search_ms
        return SearchOutcome(
            hits=hits,
            prepared=prepared,
            decode_ms=(decoded - started) * 1e3,
            embed_ms=embed_ms,
            search_ms=search_ms,
        )

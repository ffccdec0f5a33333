"""One search path from photo bytes to ranked gallery items.

The gRPC service and `lookalike eval` both call this, so what eval measures is
what the server answers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

import numpy as np

from lookalike.server.backend import Hit, SearchBackend, open_backend
from lookalike.server.batcher import DeadlinePassed, MicroBatcher
from lookalike.server.config import DEFAULT_MAX_PIXELS, ServerConfig
from lookalike.server.embedder import Embedder
from lookalike.server.imaging import Prepared, load


@dataclass(frozen=True)
class SearchResult:
    hits: list[Hit]
    prepared: Prepared
    decode_ms: float
    embed_ms: float
    search_ms: float


class SearchEngine:
    """The embedder and the gallery it embedded, behind whichever search backend."""

    def __init__(
        self, embedder: Embedder, gallery: SearchBackend, max_pixels: int = DEFAULT_MAX_PIXELS
    ) -> None:
        gallery.check_model(embedder.info)
        self.embedder = embedder
        self.gallery = gallery
        self.max_pixels = max_pixels

    @classmethod
    def open(cls, config: ServerConfig) -> SearchEngine:
        embedder = Embedder(config.model, config.device)
        return cls(embedder, open_backend(config), config.max_pixels)

    def prepare(self, data: bytes) -> Prepared:
        """Decode and crop the way the gallery was embedded (raises ImageError)."""
        info = self.gallery.info
        return load(data, info.crop, info.input_size, self.max_pixels)

    def warm_up(self, runs: int, batch_sizes: tuple[int, ...] = (1,)) -> float:
        """First runs are slow (allocation, kernel choice); pay for them before SERVING."""
        started = time.perf_counter()
        size = self.embedder.info.input_size
        for batch in batch_sizes:
            for _ in range(runs):
                features = self.embedder.embed(np.zeros((batch, size, size, 3), np.float32))
            if runs:
                self.gallery.search(features, 1)
        return time.perf_counter() - started

    def search(
        self,
        data: bytes,
        k: int,
        checkpoint: Callable[[], None] = lambda: None,
        batcher: MicroBatcher | None = None,
        deadline: float | None = None,
    ) -> SearchResult:
        """Decode, embed, search. ``checkpoint`` runs between stages and raises to stop a
        call nobody waits for; with a ``batcher``, embedding and k-NN are shared with
        concurrent calls, and ``deadline`` (time.monotonic()) bounds the wait for them.
        """
        checkpoint()
        started = time.perf_counter()
        prepared = self.prepare(data)
        decoded = time.perf_counter()
        checkpoint()
        if batcher is None:
            features = self.embedder.embed(prepared.pixels[np.newaxis])
            embedded = time.perf_counter()
            checkpoint()
            (hits,) = self.gallery.search(features, k)
            embed_ms, search_ms = (embedded - decoded) * 1e3, (time.perf_counter() - embedded) * 1e3
        else:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            future = batcher.submit(self, prepared.pixels, k, deadline)
            try:
                answer = future.result(timeout=wait)
            except (FutureTimeout, DeadlinePassed):
                future.cancel()
                checkpoint()  # the deadline passed: the checkpoint ends the call
                raise
            hits, embed_ms, search_ms = answer.hits, answer.embed_ms, answer.search_ms
        return SearchResult(
            hits=hits,
            prepared=prepared,
            decode_ms=(decoded - started) * 1e3,
            embed_ms=embed_ms,
            search_ms=search_ms,
        )

"""Micro-batching: concurrent callers share embedder runs, and each gets its own answer."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from lookalike.client import SearchClient
from lookalike.server.index.gallery import list_gallery
from lookalike.server.online.batcher import DeadlinePassed, MicroBatcher
from lookalike.server.online.telemetry import Telemetry
from tests.serving import engine_over, running_server, search_once


def test_concurrent_callers_each_get_their_own_answer(embedder, index_dir, gallery_dir):
    images = list_gallery(gallery_dir)[:16]
    engine = engine_over(embedder, index_dir)
    expected = {
        image.path: [
            match.id
            for match in search_once(
                engine, (gallery_dir / image.path).read_bytes(), 1 + n % 9
            ).matches
        ]
        for n, image in enumerate(images)
    }
    answers: dict[str, list[str]] = {}
    start = threading.Barrier(len(images))

    def call(target: str, n: int, path: str) -> None:
        with SearchClient(target) as client:
            data = (gallery_dir / path).read_bytes()
            start.wait()
            answers[path] = [m.id for m in client.search(data, k=1 + n % 9).matches]

    with running_server(embedder, index_dir, batch_window_ms=50, max_batch=8) as server:
        target = f"127.0.0.1:{server.port}"
        threads = [
            threading.Thread(target=call, args=(target, n, image.path))
            for n, image in enumerate(images)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        registry = server.telemetry.registry
        batches = registry.get_sample_value("lookalike_embed_batch_size_count")
        searched = registry.get_sample_value("lookalike_embed_batch_size_sum")
    assert answers == expected  # own image first, own k, same as alone
    assert searched == 16  # every call embedded once (warm-up bypasses the batcher)
    assert batches < 16  # some calls shared a run


def test_a_call_whose_deadline_passed_costs_no_work(embedder, index_dir):
    engine = engine_over(embedder, index_dir)
    telemetry = Telemetry()
    batcher = MicroBatcher(0.01, 4, telemetry)
    try:
        size = embedder.info.input_size
        late = batcher.submit(
            engine.nearest(),
            np.zeros((size, size, 3), np.float32),
            3,
            deadline=time.monotonic() - 1,
        )
        with pytest.raises(DeadlinePassed):
            late.result(timeout=10)
        on_time = batcher.submit(engine.nearest(), np.zeros((size, size, 3), np.float32), 3)
        assert len(on_time.result(timeout=10).hits) == 3
    finally:
        batcher.close()
    assert telemetry.registry.get_sample_value("lookalike_embed_batch_size_sum") == 1

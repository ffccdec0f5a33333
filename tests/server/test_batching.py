"""Micro-batching: concurrent callers share embedder runs, and each gets its own answer."""

from __future__ import annotations

import threading

from lookalike.client import SearchClient
from lookalike.server.index.gallery import list_gallery
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

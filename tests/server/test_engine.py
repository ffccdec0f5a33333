"""The engine: built once per server, the whole Search answer in one place."""

from __future__ import annotations

from lookalike.client import SearchClient
from lookalike.server.online.engine import SearchEngine
from tests.serving import running_server


def test_the_server_builds_one_engine_and_a_reload_shares_its_parts(
    embedder, index_dir, gallery_dir, monkeypatch
):
    built: list[SearchEngine] = []
    build = SearchEngine.__init__

    def counted(self, *args, **kwargs) -> None:
        build(self, *args, **kwargs)
        built.append(self)

    monkeypatch.setattr(SearchEngine, "__init__", counted)
    photo = next(gallery_dir.glob("*/*.jpg")).read_bytes()
    with running_server(embedder, index_dir) as server, SearchClient(server.target) as client:
        assert client.search(photo, k=3).matches
        assert len(built) == 1 and server.service.engine is built[0]
        client.reload_index()
        assert client.search(photo, k=3).matches
    first, second = built
    assert len(built) == 2  # the reload's sibling, over the gallery read afresh
    assert second.embedder is first.embedder and second.batcher is first.batcher
    assert second.config is first.config and second.backend is not first.backend


def test_each_search_stage_is_timed_and_the_process_cpu_is_exported(
    embedder, index_dir, gallery_dir
):
    photo = next(gallery_dir.glob("*/*.jpg")).read_bytes()
    with running_server(embedder, index_dir) as server, SearchClient(server.target) as client:
        timings = client.search(photo, k=3).timings
        registry = server.telemetry.registry
        counts = {
            stage: registry.get_sample_value("lookalike_stage_seconds_count", {"stage": stage})
            for stage in ("decode", "crop", "embed", "knn", "response")
        }
        cpu = registry.get_sample_value("process_cpu_seconds_total")
    assert counts == dict.fromkeys(counts, 1.0)
    assert cpu is not None and cpu > 0
    assert min(timings.decode_ms, timings.embed_ms, timings.search_ms) > 0
    assert timings.decode_ms + timings.embed_ms + timings.search_ms <= timings.total_ms

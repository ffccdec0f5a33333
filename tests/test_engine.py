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

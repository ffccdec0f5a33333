"""SearchClient and AsyncSearchClient: the same calls, results and errors on a real server."""

from __future__ import annotations

import asyncio
import inspect
import math
import time
from collections.abc import Callable

import grpc
import pytest

from lookalike.client import AsyncSearchClient, LookalikeError, SearchClient
from tests.serving import free_port, start_server_process

KINDS = ("sync", "async")


def use(kind: str, target: str, action: Callable, **options):
    """``action(client)`` on a new client of ``kind``; awaited when the client is async."""
    if kind == "sync":
        with SearchClient(target, **options) as client:
            return action(client)

    async def run():
        async with AsyncSearchClient(target, **options) as client:
            answer = action(client)
            return await answer if inspect.isawaitable(answer) else answer

    return asyncio.run(run())


def test_both_clients_have_the_same_methods():
    def public(cls: type) -> dict[str, list[str]]:
        return {
            name: list(inspect.signature(member).parameters)
            for name, member in vars(cls).items()
            if callable(member) and not name.startswith("_")
        }

    assert public(SearchClient) == public(AsyncSearchClient)
    assert all(
        inspect.iscoroutinefunction(getattr(AsyncSearchClient, name))
        for name in public(AsyncSearchClient)
    )


def test_the_public_modules_define_only_the_public_api():
    """Wire plumbing lives in the private client/_wire.py, not beside the public names."""
    import lookalike.client
    from lookalike.client import _wire, aio, client, values

    def defined(module) -> set[str]:
        return {
            name
            for name, value in vars(module).items()
            if getattr(value, "__module__", None) == module.__name__ and name[0] != "_"
        }

    public = set(lookalike.client.__all__)
    assert defined(client) | defined(aio) | defined(values) == public
    assert not defined(_wire) & public


@pytest.mark.parametrize("kind", KINDS)
def test_search_info_and_reload_answer_alike(kind, server_target, gallery_dir):
    query = gallery_dir / "person_02" / "person_02_0001.jpg"
    result = use(kind, server_target, lambda c: c.search(query, k=3, thumbnails=True))
    assert [m.rank for m in result.matches] == [1, 2, 3]
    assert result.matches[0].path == "person_02/person_02_0001.jpg"
    assert result.matches[0].distance < 1e-3 and result.matches[0].thumbnail
    assert result.max_distance is None and result.timings.total_ms > 0
    same = use("sync", server_target, lambda c: c.search(query, k=3, thumbnails=True))
    assert [m.id for m in result.matches] == [m.id for m in same.matches]

    info = use(kind, server_target, lambda c: c.info())
    assert info.gallery_size == 18 and info.model_fingerprint == result.model_fingerprint
    version, size = use(kind, server_target, lambda c: c.reload_index())
    assert size == 18 and version == info.index_version


@pytest.mark.parametrize("kind", KINDS)
def test_errors_are_lookalike_errors_with_the_status(kind, server_target):
    with pytest.raises(LookalikeError) as bad_k:
        use(kind, server_target, lambda c: c.search(b"not an image", k=0))
    assert bad_k.value.code == grpc.StatusCode.INVALID_ARGUMENT and "k must be" in str(bad_k.value)
    with pytest.raises(LookalikeError) as bad_image:
        use(kind, server_target, lambda c: c.search(b"not an image", k=1))
    assert bad_image.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "bad image" in bad_image.value.message


@pytest.mark.parametrize("kind", KINDS)
def test_wait_until_ready_on_a_serving_server_returns(kind, server_target):
    assert use(kind, server_target, lambda c: c.wait_until_ready(10)) is None


@pytest.mark.parametrize("kind", KINDS)
def test_wait_until_ready_gives_up_after_its_timeout(kind):
    target = f"127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    with pytest.raises(LookalikeError) as waited:
        use(kind, target, lambda c: c.wait_until_ready(1.5))
    elapsed = time.monotonic() - started
    assert waited.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "not ready after 1.5 s" in waited.value.message
    assert 1.4 < elapsed < 10


@pytest.mark.parametrize("kind", KINDS)
def test_wait_until_ready_waits_out_a_starting_server(kind, onnx_model, index_dir, gallery_dir):
    """Called before the process even listens: returns once warm-up is over, then Search works."""
    port = free_port()
    server = start_server_process(onnx_model, index_dir, port, "--warmup-runs", "3")
    try:
        query = gallery_dir / "person_01" / "person_01_0002.jpg"

        def ready_then_search(client):
            if kind == "sync":
                client.wait_until_ready(120)
                return client.search(query, k=1)

            async def both():
                await client.wait_until_ready(120)
                return await client.search(query, k=1)

            return both()

        result = use(kind, f"127.0.0.1:{port}", ready_then_search, retries=0)
        assert result.matches[0].path == "person_01/person_01_0002.jpg"
    finally:
        server.terminate()
        server.communicate(timeout=60)


@pytest.mark.parametrize("kind", KINDS)
def test_max_distance_drops_far_matches(kind, server_target, gallery_dir):
    query = gallery_dir / "person_03" / "person_03_0003.jpg"
    everything = use(kind, server_target, lambda c: c.search(query, k=6))
    distances = [m.distance for m in everything.matches]
    limit = (distances[1] + distances[2]) / 2  # between the 2nd and 3rd match
    near = use(kind, server_target, lambda c: c.search(query, k=6, max_distance=limit))
    assert [m.id for m in near.matches] == [m.id for m in everything.matches[:2]]
    assert math.isclose(near.max_distance, limit, rel_tol=1e-6)
    tiny = use(kind, server_target, lambda c: c.search(query, k=6, max_distance=1e-9))
    assert len(tiny.matches) <= 1  # only the query itself, at distance ~0
    with pytest.raises(LookalikeError) as negative:
        use(kind, server_target, lambda c: c.search(query, k=6, max_distance=-1))
    assert negative.value.code == grpc.StatusCode.INVALID_ARGUMENT

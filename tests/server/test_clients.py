"""SearchClient and AsyncSearchClient: the same calls, results and errors on a real server,
and retries of UNAVAILABLE only."""

from __future__ import annotations

import math
import time

import grpc
import pytest

from lookalike.client import LookalikeError, SearchClient
from tests.serving import KINDS, running_server, sample, use


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


def test_the_client_retries_only_unavailable(embedder, index_dir, gallery_dir):
    image = (gallery_dir / "person_01" / "person_01_0002.jpg").read_bytes()
    with running_server(embedder, index_dir, max_in_flight=1) as server:
        target = f"127.0.0.1:{server.port}"

        def attempts(code: str, retries: int, k: int = 3) -> float:
            def counted() -> float:
                return sample(server, "lookalike_requests_total", rpc="Search", code=code)

            before = counted()
            with SearchClient(target, retries=retries) as client, pytest.raises(LookalikeError):
                client.search(image, k=k)
            # Every attempt was made before the client gave up; the server counts each
            # just after sending its status, so wait for the first count to land.
            for _ in range(500):
                if counted() > before:
                    break
                time.sleep(0.01)
            time.sleep(0.1)
            return counted() - before

        server.service.ready.clear()  # answers UNAVAILABLE, as during warm-up
        started = time.monotonic()
        assert attempts("UNAVAILABLE", retries=3) == 4
        backed_off = time.monotonic() - started
        assert attempts("UNAVAILABLE", retries=0) == 1
        server.service.ready.set()
        assert attempts("INVALID_ARGUMENT", retries=3, k=0) == 1
        with server.service._slots:  # busy: RESOURCE_EXHAUSTED is not retried either
            assert attempts("RESOURCE_EXHAUSTED", retries=3) == 1
    # gRPC waits a random share of 0.2, 0.4, 0.8 s before the retries: more than nothing.
    assert backed_off > 0.01

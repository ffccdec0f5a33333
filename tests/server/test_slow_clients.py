"""Calls that never finish sending their request cannot starve the server: health
answers, and an authenticated search still succeeds."""

from __future__ import annotations

import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lookalike.client import LookalikeError, SearchClient
from tests.serving import never_sending_calls, running_server


def test_health_and_search_survive_200_never_sending_calls(
    embedder, index_dir, gallery_dir, tmp_path
):
    (tmp_path / "token").write_text("t0ken")
    image = (gallery_dir / "person_03" / "person_03_0001.jpg").read_bytes()
    with running_server(
        embedder, index_dir, auth_token_file=tmp_path / "token", max_in_flight=2
    ) as server:
        target = f"127.0.0.1:{server.port}"
        with never_sending_calls(target, 200) as pending:
            with grpc.insecure_channel(target) as channel:
                health = health_pb2_grpc.HealthStub(channel)
                for _ in range(20):
                    answer = health.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                    assert answer.status == health_pb2.HealthCheckResponse.SERVING
            with SearchClient(target, token="t0ken", timeout=30) as client:
                info = client.info()
                assert len(client.search(image, k=3).matches) == 3
            assert not any(call.done() for call in pending)
    assert info.gallery_size == 18


def test_past_max_open_calls_new_calls_are_refused_not_queued(embedder, index_dir):
    """The never-sending calls do reach the server: past --max-open-calls they are what
    fills it (the bound that keeps their memory finite)."""
    with running_server(embedder, index_dir, max_open_calls=50) as server:
        target = f"127.0.0.1:{server.port}"
        with (
            never_sending_calls(target, 60, channels=1),
            SearchClient(target, retries=0, timeout=5) as client,
        ):
            codes = []
            for _ in range(100):  # until the server has taken all the open calls
                try:
                    client.info()
                    codes.append(grpc.StatusCode.OK)
                except LookalikeError as error:
                    codes.append(error.code)
                    break
                time.sleep(0.1)
        assert codes[-1] == grpc.StatusCode.RESOURCE_EXHAUSTED, codes
        with SearchClient(target) as client:
            assert client.info().gallery_size == 18  # and they leave no trace

"""A starting server process: health NOT_SERVING and Search UNAVAILABLE until warm-up ends,
and both clients' wait_until_ready waiting it out."""

from __future__ import annotations

import signal
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lookalike.client import LookalikeError, SearchClient
from tests.serving import KINDS, free_port, start_server_process, use


def test_health_is_not_serving_and_search_unavailable_until_warm_up_ends(
    onnx_model, index_dir, gallery_dir
):
    port = free_port()
    # Seconds of warm-up with the tiny model (about 66 us a run at batch 1 and 16): enough
    # to be seen; 60 runs were over before the first health check once (a CI run).
    server = start_server_process(onnx_model, index_dir, port, "--warmup-runs", "30000")
    seen: list[int] = []
    early: list[LookalikeError | None] = []
    try:
        fast_reconnect = [
            ("grpc.initial_reconnect_backoff_ms", 20),
            ("grpc.min_reconnect_backoff_ms", 20),
            ("grpc.max_reconnect_backoff_ms", 50),
        ]
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=fast_reconnect) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    status = health.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                except grpc.RpcError:
                    time.sleep(0.02)
                    continue
                if not seen or seen[-1] != status:
                    seen.append(status)
                if status == health_pb2.HealthCheckResponse.NOT_SERVING and not early:
                    early.append(try_search(f"127.0.0.1:{port}", gallery_dir))
                if status == health_pb2.HealthCheckResponse.SERVING:
                    break
                time.sleep(0.02)
        with SearchClient(f"127.0.0.1:{port}") as client:
            info = client.info()
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=60)
    assert seen == [
        health_pb2.HealthCheckResponse.NOT_SERVING,
        health_pb2.HealthCheckResponse.SERVING,
    ]
    assert early[0] is not None and early[0].code == grpc.StatusCode.UNAVAILABLE
    assert "warming up" in early[0].message
    assert info.warmup_seconds > 0
    assert info.startup_seconds >= info.warmup_seconds


def try_search(target: str, gallery_dir) -> LookalikeError | None:
    query = (gallery_dir / "person_00" / "person_00_0001.jpg").read_bytes()
    with SearchClient(target, retries=0) as client:
        try:
            client.search(query, k=1)
        except LookalikeError as error:
            return error
    return None


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

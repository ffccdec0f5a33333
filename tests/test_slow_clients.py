"""Calls that never finish sending their request cannot starve the server: health
answers, and an authenticated search still succeeds."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lookalike.client import LookalikeError, SearchClient
from lookalike.v1 import search_pb2, search_pb2_grpc
from tests.serving import running_server

SEARCH = "/lookalike.v1.SearchService/Search"


@contextmanager
def never_sending_calls(target: str, calls: int, channels: int = 4) -> Iterator[list]:
    """``calls`` Search calls, no token, that open their stream and never send the
    request. Yields once the server has read every one of them."""
    release = threading.Event()

    def nothing() -> Iterator[search_pb2.SearchRequest]:
        release.wait()
        return
        yield  # a generator that sends no message until released

    opened = [grpc.insecure_channel(target) for _ in range(channels)]
    pending = []
    try:
        for channel in opened:  # connected first, so calls go out in the order made
            grpc.channel_ready_future(channel).result(timeout=30)
        for n in range(calls):
            channel = opened[n % channels]
            start = channel.stream_unary(
                SEARCH,
                request_serializer=search_pb2.SearchRequest.SerializeToString,
                response_deserializer=search_pb2.SearchResponse.FromString,
            )
            pending.append(start.future(nothing()))
        for channel in opened:
            # Frames of one connection arrive in order: once this call is answered
            # (with anything), the server has read the headers of the calls before it.
            stub = search_pb2_grpc.SearchServiceStub(channel)
            try:
                stub.GetInfo(search_pb2.GetInfoRequest(), timeout=30)
            except grpc.RpcError as error:
                assert error.code() != grpc.StatusCode.DEADLINE_EXCEEDED
        yield pending
    finally:
        for call in pending:
            call.cancel()
        release.set()
        for channel in opened:
            channel.close()


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

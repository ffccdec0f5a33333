"""Deadlines on a real server: a call whose deadline passes is ended by the server (while it
waits for a batch, or decodes), costs no work once late, and a call without a deadline
(grpcurl, Go and Java stubs by default, a Python stub without ``timeout``) is a call
without a limit, not an error."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import grpc
import numpy as np
import pytest

from lookalike.client import LookalikeError, SearchClient
from lookalike.server.online.batcher import DeadlinePassed, MicroBatcher
from lookalike.server.online.telemetry import Telemetry
from lookalike.v1 import search_pb2, search_pb2_grpc
from tests.imagegen import GOOD, encode, photo
from tests.serving import (
    engine_over,
    running_server,
    sample,
)


def test_search_info_and_reload_answer_without_a_deadline(server_target, gallery_dir):
    query = (gallery_dir / "person_04" / "person_04_0002.jpg").read_bytes()
    with grpc.insecure_channel(server_target) as channel:
        stub = search_pb2_grpc.SearchServiceStub(channel)
        found = stub.Search(search_pb2.SearchRequest(image=query, k=2))  # no timeout
        info = stub.GetInfo(search_pb2.GetInfoRequest())
        reloaded = stub.ReloadIndex(search_pb2.ReloadIndexRequest())
    assert found.matches[0].path == "person_04/person_04_0002.jpg"
    assert info.gallery_size == reloaded.gallery_size > 0


def test_a_deadline_that_passes_while_the_call_waits_ends_it_on_the_server(
    embedder, index_dir, gallery_dir
):
    """The call reaches the server and waits for company in its batch (a 3 s window);
    its 1 s deadline passes there. The server ends it, and its embedding never runs."""
    image = (gallery_dir / "person_01" / "person_01_0002.jpg").read_bytes()
    with running_server(embedder, index_dir, batch_window_ms=3000) as server:
        target = f"127.0.0.1:{server.port}"
        with SearchClient(target, timeout=1, retries=0) as client:
            with pytest.raises(LookalikeError) as raised:
                client.search(image, k=3)
            assert raised.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        with SearchClient(target, timeout=60) as client:
            # The batcher runs one batch at a time: once this answer is back, the late
            # call's batch has been dealt with too.
            assert len(client.search(image, k=3).matches) == 3
        late = ("lookalike_requests_total", {"rpc": "Search", "code": "DEADLINE_EXCEEDED"})
        assert sample(server, late[0], **late[1]) == 1  # counted by the server itself
        assert sample(server, "lookalike_embed_batch_size_count") == 1
        assert sample(server, "lookalike_embed_batch_size_sum") == 1  # only the second
        assert sample(server, "lookalike_stage_seconds_count", stage="embed") == 1


@contextmanager
def delaying_proxy(port: int) -> Iterator[tuple[int, Callable[[float, float], None]]]:
    """A TCP proxy to ``port`` on loopback, and ``hold(seconds, within)``: bytes from the
    client that arrive in the next ``within`` seconds reach the server ``seconds`` late;
    later ones pass at once (a request slow in transit, its cancel not)."""
    listener = socket.create_server(("127.0.0.1", 0))
    window = {"until": 0.0, "seconds": 0.0}
    sockets: list[socket.socket] = [listener]

    def pipe(source: socket.socket, sink: socket.socket, held: bool) -> None:
        try:
            while data := source.recv(1 << 16):
                if held and time.monotonic() < window["until"]:
                    time.sleep(window["seconds"])
                sink.sendall(data)
        except OSError:
            pass
        finally:
            sink.close()

    def accept() -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # closed: the test is over
                return
            server = socket.create_connection(("127.0.0.1", port))
            sockets.extend((client, server))
            for source, sink, held in ((client, server, True), (server, client, False)):
                threading.Thread(target=pipe, args=(source, sink, held), daemon=True).start()

    def hold(seconds: float, within: float) -> None:
        window.update(until=time.monotonic() + within, seconds=seconds)

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield listener.getsockname()[1], hold
    finally:
        for sock in sockets:
            sock.close()


def test_a_caller_whose_deadline_reached_the_server_late_is_counted_past_its_deadline(
    embedder, index_dir, gallery_dir
):
    """The request reaches the server 0.15 s after it was sent, so the server's copy of
    the 1 s deadline ends 0.15 s after the caller's, and the caller's cancel at its
    deadline arrives first. The server counts the call DEADLINE_EXCEEDED, as the caller
    saw it, not CANCELLED (a caller that went away). Before DEADLINE_SLACK_SECONDS it
    counted CANCELLED: the race behind a rare failure of the test above."""
    image = (gallery_dir / "person_01" / "person_01_0002.jpg").read_bytes()
    with (
        running_server(embedder, index_dir, batch_window_ms=3000) as server,
        delaying_proxy(server.port) as (port, hold),
        SearchClient(f"127.0.0.1:{port}", timeout=1, retries=0) as client,
    ):
        client.info()  # connected: only the search's own bytes are held
        hold(seconds=0.15, within=0.05)
        with pytest.raises(LookalikeError) as raised:
            client.search(image, k=3)
        assert raised.value.code == grpc.StatusCode.DEADLINE_EXCEEDED

        def ended(code: str) -> float:
            return sample(server, "lookalike_requests_total", rpc="Search", code=code)

        until = time.monotonic() + 10
        while not ended("DEADLINE_EXCEEDED") + ended("CANCELLED"):
            assert time.monotonic() < until, "the server never ended the call"
            time.sleep(0.02)
        assert (ended("DEADLINE_EXCEEDED"), ended("CANCELLED")) == (1, 0)


def test_deadline_is_honoured(server_target):
    big = encode(photo((2500, 2500)), "PNG")
    with (
        SearchClient(server_target, timeout=0.01) as client,
        pytest.raises(LookalikeError) as raised,
    ):
        client.search(big, k=3)
    assert raised.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    with SearchClient(server_target) as client:
        assert len(client.search(GOOD, k=1).matches) == 1


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

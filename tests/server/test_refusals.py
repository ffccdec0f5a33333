"""Refusals: overload refused at once while accepted calls succeed, and every refusal seen
(counted and logged)."""

from __future__ import annotations

import logging
import threading

import grpc

from lookalike.client import LookalikeError, SearchClient
from tests.imagegen import GOOD, encode, photo
from tests.serving import (
    in_process_server,
    refusal,
    running_server,
    scrape,
)


def test_auth_and_busy_refusals_are_counted_and_logged(
    embedder, index_dir, gallery_dir, tmp_path, caplog
):
    caplog.set_level(logging.INFO, logger="lookalike")
    (tmp_path / "token").write_text("t0ken")
    image = (gallery_dir / "person_02" / "person_02_0001.jpg").read_bytes()
    with running_server(
        embedder, index_dir, auth_token_file=tmp_path / "token", max_in_flight=1, metrics_port=0
    ) as server:
        target = f"127.0.0.1:{server.port}"
        assert refusal(target, lambda c: c.info()) == grpc.StatusCode.UNAUTHENTICATED
        search = lambda c: c.search(image, k=1)  # noqa: E731
        assert refusal(target, search, token="wrong") == grpc.StatusCode.UNAUTHENTICATED
        with server.service._slots:  # the one slot taken, as by a long search
            busy = refusal(target, search, token="t0ken")
        assert busy == grpc.StatusCode.RESOURCE_EXHAUSTED
        metrics = scrape(server.metrics_port)
    refused = "lookalike_refused_total"
    assert metrics[(refused, (("reason", "missing_token"), ("rpc", "GetInfo")))] == 1
    assert metrics[(refused, (("reason", "bad_token"), ("rpc", "Search")))] == 1
    assert metrics[(refused, (("reason", "busy"), ("rpc", "Search")))] == 1
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused")]
    assert [line.split(" peer=")[0] for line in lines] == [
        "refused rpc=GetInfo reason=missing_token",
        "refused rpc=Search reason=bad_token",
        "refused rpc=Search reason=busy",
    ]
    assert all("peer=ipv4:127.0.0.1:" in line for line in lines)


def test_overload_is_refused_at_once_and_accepted_calls_succeed(embedder, index_dir):
    big = encode(photo((2000, 2000)), "PNG")  # slow enough to decode to overlap
    codes: list[grpc.StatusCode] = []
    start = threading.Barrier(12)

    def call(target: str) -> None:
        with SearchClient(target, retries=0) as client:
            start.wait()
            try:
                client.search(big, k=3)
                codes.append(grpc.StatusCode.OK)
            except LookalikeError as error:
                codes.append(error.code)

    with in_process_server(
        embedder, index_dir, max_in_flight=1, max_message_bytes=32 << 20
    ) as target:
        threads = [threading.Thread(target=call, args=(target,)) for _ in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        with SearchClient(target) as client:
            assert len(client.search(GOOD, k=1).matches) == 1
    assert len(codes) == 12
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) >= 1
    assert codes.count(grpc.StatusCode.OK) >= 1

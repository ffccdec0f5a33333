"""Helpers to run a real server, in this process or as a process on a free loopback port,
and to call it: both clients, calls that never send, refusals, metrics."""

from __future__ import annotations

import asyncio
import inspect
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from lookalike.client import AsyncSearchClient, LookalikeError, SearchClient
from lookalike.v1 import search_pb2, search_pb2_grpc

# The `lookalike` command, run by this interpreter.
LOOKALIKE = [sys.executable, "-m", "lookalike.client.cli"]


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """`lookalike ARGS` to its end, output captured as text; ``env`` adds to os.environ."""
    return subprocess.run(
        [*LOOKALIKE, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server_process(
    model: Path, index: Path, port: int, *extra: str, env: dict[str, str] | None = None
) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lookalike.client.cli",
            "serve",
            "--model",
            str(model),
            "--index",
            str(index),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--device",
            "cpu",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env} if env else None,
    )


def wait_until_serving(target: str, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"server exited early: {process.communicate()[1]}")
            try:
                answer = health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise TimeoutError(f"server on {target} not SERVING after {timeout} s")


def engine_over(embedder, index: Path, **settings):
    """A SearchEngine over the index folder ``index``, without a batcher or a server."""
    from lookalike.server.backends.memmap import MemmapBackend
    from lookalike.server.index.store import GalleryIndex
    from lookalike.server.online.config import ServerConfig
    from lookalike.server.online.engine import SearchEngine

    config = ServerConfig(model=embedder.info.path, index=index, **settings)
    return SearchEngine(config, embedder, MemmapBackend(GalleryIndex.open(index)))


def search_once(engine, data: bytes, k: int):
    """The SearchResponse ``engine`` answers for a call without a deadline."""
    from lookalike.server.online.calls import CallLimits
    from lookalike.v1 import search_pb2

    return engine.search(search_pb2.SearchRequest(image=data, k=k), CallLimits(None))


def started_server(embedder, index_dir: Path | None, **settings):
    """A real, started Server on a free loopback port with the given ServerConfig settings;
    the caller stops it."""
    from lookalike.server.online.app import Server
    from lookalike.server.online.config import ServerConfig

    settings = {"host": "127.0.0.1", **settings}
    config = ServerConfig(model=embedder.info.path, index=index_dir, port=0, **settings)
    server = Server(config, embedder)
    server.start()
    return server


@contextmanager
def running_server(embedder, index_dir: Path | None, **settings) -> Iterator:
    """A real, started Server on a free loopback port with the given ServerConfig settings."""
    server = started_server(embedder, index_dir, **settings)
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def in_process_server(embedder, index_dir: Path, **settings) -> Iterator[str]:
    """The target ("127.0.0.1:PORT") of a running_server."""
    with running_server(embedder, index_dir, **settings) as server:
        yield f"127.0.0.1:{server.port}"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


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


def non_loopback_address() -> str | None:
    """An address of this machine that is not loopback, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: only picks the interface
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def refusal(target: str, call, **client) -> grpc.StatusCode:
    with SearchClient(target, retries=0, **client) as c, pytest.raises(LookalikeError) as raised:
        call(c)
    return raised.value.code


def ids_listed(client: SearchClient) -> set[str]:
    return {entry.id for entry in client.list_images()}


def ids_found(client: SearchClient, query: bytes) -> set[str]:
    return {match.id for match in client.search(query, k=100).matches}


def sample(server, name: str, **labels: str) -> float:
    return server.telemetry.registry.get_sample_value(name, labels) or 0.0


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

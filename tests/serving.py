"""Helpers to run a real server process on a free loopback port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


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

"""Milvus as processes apart: `lookalike serve` refusing a missing collection or an unreachable
Milvus, the LOOKALIKE indexing into Milvus Lite and serving from it, a milvus-lite server process
lost while serving, and an idle Milvus Lite connection that earns no ping strikes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import grpc
import pytest
from pymilvus import MilvusClient, MilvusException

from lookalike.client import LookalikeError, SearchClient
from lookalike.server.backends.milvus import (
    MilvusTarget,
    load_index,
)
from lookalike.server.index.store import GalleryIndex
from tests.serving import LOOKALIKE, free_port, in_process_server, wait_until_serving


def test_a_missing_collection_is_refused_with_the_command_that_makes_it(onnx_model, lite_uri):
    serve = subprocess.run(
        [*LOOKALIKE, "serve", "--model", str(onnx_model), "--backend", "milvus"]
        + ["--milvus-uri", lite_uri, "--collection", "nobody", "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert serve.returncode == 2
    assert "there is no collection 'nobody'" in serve.stderr
    assert "lookalike to-milvus INDEX_DIR" in serve.stderr


def test_index_into_milvus_then_serve_from_it(onnx_model, gallery_dir, lite_uri, tmp_path):
    """The LOOKALIKE end to end, in subprocesses: embed, load, serve, search."""
    index = subprocess.run(
        [*LOOKALIKE, "index", str(gallery_dir), "--model", str(onnx_model)]
        + ["--out", str(tmp_path / "index"), "--device", "cpu", "--backend", "milvus"]
        + ["--milvus-uri", lite_uri, "--collection", "faces"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert index.returncode == 0, index.stderr
    assert "loaded 18 rows into collection faces" in index.stdout
    port = free_port()
    server = subprocess.Popen(  # no --index; the collection named by the environment
        [*LOOKALIKE, "serve", "--model", str(onnx_model), "--backend", "milvus"]
        + ["--milvus-uri", lite_uri, "--host", "127.0.0.1", "--port", str(port)]
        + ["--device", "cpu", "--warmup-runs", "1"],
        env={**os.environ, "LOOKALIKE_COLLECTION": "faces"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until_serving(f"127.0.0.1:{port}", server)
        with SearchClient(f"127.0.0.1:{port}") as client:
            result = client.search(gallery_dir / "person_04" / "person_04_0002.jpg", k=3)
            info = client.info()
        assert result.matches[0].path == "person_04/person_04_0002.jpg"
        assert (info.knn_backend, info.gallery_size) == ("milvus-flat", 18)
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=60)


def test_milvus_unreachable_at_start_fails_fast(onnx_model):
    serve = subprocess.run(
        [*LOOKALIKE, "serve", "--model", str(onnx_model), "--backend", "milvus", "--device", "cpu"]
        + ["--milvus-uri", f"http://127.0.0.1:{free_port()}", "--collection", "faces"]
        + ["--milvus-timeout-s", "2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert serve.returncode == 2
    assert "cannot reach Milvus at http://127.0.0.1:" in serve.stderr


@pytest.fixture
def milvus_server(tmp_path):
    """Milvus Lite as its own gRPC server process, the way a remote Milvus is reached."""
    port = free_port()
    process = subprocess.Popen(
        ["milvus-lite", "server", "--data-dir", str(tmp_path / "milvus-data")]
        + ["--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            MilvusClient(uri, timeout=1).close()
            break
        except MilvusException:  # not listening yet
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "milvus-lite server did not start"
            time.sleep(0.2)
    yield process, uri
    process.kill()
    process.wait()


def test_milvus_lost_while_serving_gives_unavailable_not_a_hang(
    embedder, index_dir, gallery_dir, milvus_server
):
    process, uri = milvus_server
    load_index(GalleryIndex.open(index_dir), MilvusTarget(uri, "faces"), progress=False)
    query = gallery_dir / "person_02" / "person_02_0001.jpg"
    settings = {"backend": "milvus", "milvus_uri": uri, "collection": "faces"}
    with (
        in_process_server(embedder, None, milvus_timeout_s=2, **settings) as target,
        SearchClient(target, timeout=120) as client,
    ):
        assert client.search(query, k=1).matches[0].path == "person_02/person_02_0001.jpg"
        process.kill()
        process.wait()
        with pytest.raises(LookalikeError) as raised:
            client.search(query, k=1)
        assert raised.value.code == grpc.StatusCode.UNAVAILABLE
        assert uri not in raised.value.message and "127.0.0.1" not in raised.value.message
        assert client.info().gallery_size == 18  # the server itself is still up


IDLE_CONNECTION = """
import sys, time
from lookalike.server.backends.milvus import MilvusTarget, connect
client = connect(MilvusTarget(sys.argv[1], "faces"))
client.list_collections()
time.sleep(12)  # pymilvus' default keepalive pings at 10 s
client.list_collections()
"""


# a ping the server judges against an earlier one; "@-∞" (the first ping) never matches
JUDGED_PING = re.compile(r"received ping \d+: now=@(\d+)ms \S+ next_allowed_ping=@(\d+)ms")


def test_an_idle_lite_connection_earns_no_ping_strikes(lite_uri):
    """Milvus Lite's gRPC server allows no pings on an idle connection; three
    strikes and it closes the connection (GOAWAY "too_many_pings"), and a
    client that meets that during a reconnect fails.
    """
    run = subprocess.run(
        [sys.executable, "-c", IDLE_CONNECTION, lite_uri],
        env={**os.environ, "GRPC_VERBOSITY": "debug", "GRPC_TRACE": "http_keepalive"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "received ping" in run.stderr, "gRPC's keepalive trace changed: nothing to judge"
    pings = JUDGED_PING.findall(run.stderr)
    assert [(now, allowed) for now, allowed in pings if int(now) < int(allowed)] == []

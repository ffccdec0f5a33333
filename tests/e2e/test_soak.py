"""A soak: a server process's resident memory stays flat over thousands of calls."""

from __future__ import annotations

import signal

import pytest

from lookalike.client import LookalikeError, SearchClient
from tests.imagegen import GOOD
from tests.serving import (
    free_port,
    rss_mb,
    start_server_process,
    wait_until_serving,
)


def test_soak_memory_stays_flat(onnx_model, index_dir):
    port = free_port()
    server = start_server_process(onnx_model, index_dir, port, "--log-level", "WARNING")
    target = f"127.0.0.1:{port}"
    try:
        wait_until_serving(target, server)
        with SearchClient(target) as client:
            for _ in range(300):
                client.search(GOOD, k=10)
            settled = rss_mb(server.pid)
            for n in range(2000):  # one call in ten is a bad image
                if n % 10:
                    client.search(GOOD, k=10)
                else:
                    with pytest.raises(LookalikeError):
                        client.search(b"junk", k=10)
            grown = rss_mb(server.pid) - settled
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=60)
    assert grown < 25, f"resident memory grew {grown:.1f} MB over 2,000 calls"

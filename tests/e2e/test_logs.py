"""The server's logs: JSON call logs that parse and hold no image bytes."""

from __future__ import annotations

import io
import json
import signal

import pytest

from lookalike.client import LookalikeError, SearchClient
from tests.imagegen import noise_image
from tests.serving import free_port, start_server_process, wait_until_serving


def test_json_logs_parse_and_hold_no_image_bytes(onnx_model, index_dir):
    marker = "MARKER-7f3a9c-in-the-image"
    image = noise_image((64, 64))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", comment=marker.encode())
    query = buffer.getvalue()
    port = free_port()
    server = start_server_process(onnx_model, index_dir, port, "--log-format", "json")
    try:
        wait_until_serving(f"127.0.0.1:{port}", server)
        with SearchClient(f"127.0.0.1:{port}") as client:
            client.search(query, k=3)
            with pytest.raises(LookalikeError):
                client.search(query[:200] + marker.encode(), k=3)
    finally:
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=60)
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    calls = [line for line in lines if line.get("rpc") == "Search"]
    assert [call["code"] for call in calls] == ["OK", "INVALID_ARGUMENT"]
    assert calls[0]["k"] == 3 and calls[0]["embed_ms"] > 0 and calls[0]["matches"] == 3
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    assert marker not in stderr

"""--threads on a server: GetInfo reports the intra-op threads in use."""

from __future__ import annotations

from lookalike.client import SearchClient
from lookalike.server.vision.cpus import default_threads
from lookalike.server.vision.embedder import Embedder
from tests.serving import (
    in_process_server,
)


def test_get_info_reports_the_threads_in_use(onnx_model, index_dir):
    one = Embedder(onnx_model, "cpu", threads=1)
    with in_process_server(one, index_dir) as target, SearchClient(target) as client:
        assert client.info().intra_op_threads == 1
    default = Embedder(onnx_model, "cpu")
    assert default.threads == default_threads().threads
    with in_process_server(default, index_dir) as target, SearchClient(target) as client:
        assert client.info().intra_op_threads == default_threads().threads

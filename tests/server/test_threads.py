"""--threads and --model-instances on a server: GetInfo reports what is in use, and
searches run on every instance."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from lookalike.client import SearchClient
from lookalike.server.online.app import Server
from lookalike.server.online.config import ServerConfig
from lookalike.server.vision.cpus import default_threads
from lookalike.server.vision.embedder import Embedder
from tests.serving import (
    in_process_server,
)


def test_get_info_reports_the_threads_in_use(onnx_model, index_dir):
    one = Embedder(onnx_model, "cpu", threads=1)
    with in_process_server(one, index_dir) as target, SearchClient(target) as client:
        assert client.info().intra_op_threads == 1
        assert client.info().model_instances == 1
        exact = client.info()  # an exact index: a Search's breadth means nothing
        assert (exact.default_search_breadth, exact.max_search_breadth) == (0, 0)
    default = Embedder(onnx_model, "cpu")
    assert default.threads == default_threads().threads
    with in_process_server(default, index_dir) as target, SearchClient(target) as client:
        assert client.info().intra_op_threads == default_threads().threads


def test_model_instances_share_the_cpu_budget_and_answer_alike(onnx_model, index_dir, gallery_dir):
    photos = sorted(gallery_dir.rglob("*.jpg"))[:8]
    config = ServerConfig(
        model=onnx_model, index=index_dir, host="127.0.0.1", port=0, model_instances=2
    )
    server = Server(config)  # the server loads the model itself, its threads shared
    server.start()
    try:
        with SearchClient(f"127.0.0.1:{server.port}") as client:
            info = client.info()
            assert info.model_instances == 2
            assert info.intra_op_threads == max(1, default_threads().threads // 2)
            alone = [[m.id for m in client.search(p.read_bytes(), k=3).matches] for p in photos]
            with ThreadPoolExecutor(8) as pool:
                together = list(pool.map(lambda p: client.search(p.read_bytes(), k=3), photos))
        assert [[m.id for m in r.matches] for r in together] == alone
        assert server.telemetry.registry.get_sample_value("lookalike_embed_batch_size_count")
    finally:
        server.stop()

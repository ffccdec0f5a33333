"""SearchService over a real gRPC server on loopback, a real model and a mapped index (and
faiss as its k-NN)."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from lookalike.client import LookalikeError, SearchClient
from lookalike.server.index.store import GalleryIndex
from lookalike.v1 import search_pb2, search_pb2_grpc
from tests.serving import running_server


def test_gallery_image_finds_itself_first(server_target, gallery_dir, index_dir):
    query = gallery_dir / "person_03" / "person_03_0002.jpg"
    with SearchClient(server_target) as client:
        result = client.search(query, k=5)
    best = result.matches[0]
    assert (best.rank, best.label, best.path) == (1, "person_03", "person_03/person_03_0002.jpg")
    assert best.distance == pytest.approx(0.0, abs=1e-3)
    distances = [m.distance for m in result.matches]
    assert distances == sorted(distances)
    assert [m.rank for m in result.matches] == [1, 2, 3, 4, 5]
    assert result.timings.total_ms >= result.timings.embed_ms > 0


@pytest.mark.parametrize("k", [1, 3, 18])
def test_k_is_honoured(server_target, gallery_dir, k):
    with SearchClient(server_target) as client:
        result = client.search(gallery_dir / "person_00" / "person_00_0001.jpg", k=k)
    assert len(result.matches) == k
    assert len({m.path for m in result.matches}) == k


def test_k_beyond_gallery_returns_whole_gallery(server_target, gallery_dir):
    with SearchClient(server_target) as client:
        result = client.search(gallery_dir / "person_00" / "person_00_0001.jpg", k=50)
    assert len(result.matches) == 18


def test_pil_image_and_bytes_are_accepted(server_target, gallery_dir):
    from PIL import Image

    path = gallery_dir / "person_01" / "person_01_0003.jpg"
    with SearchClient(server_target) as client, Image.open(path) as image:
        from_pil = client.search(image.convert("RGB"), k=1).matches[0]
        from_bytes = client.search(path.read_bytes(), k=1).matches[0]
    assert from_pil.path == from_bytes.path == "person_01/person_01_0003.jpg"


def test_get_info_reports_model_index_and_provider(server_target, backend, embedder, index_dir):
    with SearchClient(server_target) as client:
        info = client.info()
    assert info.model_fingerprint == embedder.info.fingerprint
    assert info.model_name == "pixels"
    assert info.embedding_size == embedder.info.embedding_size == 3072
    assert info.input_size == embedder.info.input_size
    assert info.execution_provider == "CPUExecutionProvider"
    assert info.providers == ["CPUExecutionProvider"]
    assert info.gallery_size == 18
    assert info.knn_backend == {"memmap": "sklearn-brute", "milvus": "milvus-flat"}[backend]
    assert info.index_version == GalleryIndex.open(index_dir).manifest.version
    assert info.weights == embedder.info.weights == "none (no network)"


def test_health_and_reflection_answer(server_target):
    with grpc.insecure_channel(server_target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "lookalike.v1.SearchService"):
            status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert status.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        (answer,) = reflection.ServerReflectionInfo(iter([request]), timeout=5)
        names = {s.name for s in answer.list_services_response.service}
    assert {"lookalike.v1.SearchService", "grpc.health.v1.Health"} <= names


@pytest.mark.parametrize(
    ("image", "k", "message"),
    [
        (b"", 5, "empty"),
        (b"this is not an image at all", 5, "not an image"),
        (None, 0, "k must be between 1 and"),
        (None, -3, "k must be between 1 and"),
        (None, 101, "k must be between 1 and 100"),
    ],
)
def test_bad_requests_get_invalid_argument_and_server_keeps_serving(
    server_target, gallery_dir, image, k, message
):
    good = (gallery_dir / "person_02" / "person_02_0001.jpg").read_bytes()
    with SearchClient(server_target) as client:
        with pytest.raises(LookalikeError) as raised:
            client.search(good if image is None else image, k=k)
        assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert message in raised.value.message
        assert client.search(good, k=1).matches[0].path == "person_02/person_02_0001.jpg"


def test_truncated_jpeg_is_invalid_argument(server_target, gallery_dir):
    data = (gallery_dir / "person_02" / "person_02_0001.jpg").read_bytes()
    with SearchClient(server_target) as client, pytest.raises(LookalikeError) as raised:
        client.search(data[: len(data) // 3], k=1)
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "truncated" in raised.value.message


def test_raw_stub_matches_client(server_target, gallery_dir):
    """Backends in other languages use the proto directly; the answer is the same."""
    data = (gallery_dir / "person_04" / "person_04_0001.jpg").read_bytes()
    with grpc.insecure_channel(server_target) as channel:
        stub = search_pb2_grpc.SearchServiceStub(channel)
        response = stub.Search(search_pb2.SearchRequest(image=data, k=3), timeout=30)
    with SearchClient(server_target) as client:
        result = client.search(data, k=3)
    assert [m.id for m in response.matches] == [m.id for m in result.matches]
    assert np.allclose([m.distance for m in response.matches], [m.distance for m in result.matches])


def test_request_over_the_size_limit_is_resource_exhausted(server_target):
    with SearchClient(server_target) as client, pytest.raises(LookalikeError) as raised:
        client.search(b"\xff" * (9 * 1024 * 1024), k=1)
    assert raised.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_detect_index_reports_fallback_in_the_response(embedder, gallery_dir, tmp_path):
    from lookalike.server.index.build import build_index
    from lookalike.server.vision.imaging import NO_FACE_NOTE, Crop
    from tests.serving import in_process_server

    build_index(gallery_dir, embedder, tmp_path / "index", crop=Crop("detect"), progress=False)
    noise = np.random.default_rng(0).integers(0, 255, (80, 80, 3), dtype=np.uint8)
    from PIL import Image

    from tests.imagegen import encode

    with in_process_server(embedder, tmp_path / "index") as target, SearchClient(target) as client:
        result = client.search(encode(Image.fromarray(noise), "PNG"), k=2)
    assert result.crop_note == NO_FACE_NOTE


def test_knn_algorithm_faiss_in_the_server(embedder, index_dir, gallery_dir):
    pytest.importorskip("faiss", reason="faiss is not installed (the faiss extra)")
    query = (gallery_dir / "person_04" / "person_04_0003.jpg").read_bytes()
    with (
        running_server(embedder, index_dir) as brute,
        SearchClient(f"127.0.0.1:{brute.port}") as client,
    ):
        expected = [(m.path, round(m.distance, 3)) for m in client.search(query, k=5).matches]
    with (
        running_server(embedder, index_dir, knn_algorithm="faiss") as server,
        SearchClient(f"127.0.0.1:{server.port}") as client,
    ):
        assert "faiss" in client.info().knn_backend
        found = [(m.path, round(m.distance, 3)) for m in client.search(query, k=5).matches]
    assert found == expected


def test_lookalike_info_lines_up_every_field(server_target):
    from tests.serving import run_cli

    shown = run_cli("info", "--server", server_target, "--timeout", "10")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert any(line.strip().startswith("default_search_breadth:") for line in lines)
    assert len({line.index(":") for line in lines}) == 1  # one column of colons

"""Approximate indexes (#26): IVF-Flat, IVF-SQ8 and HNSW built from the exact matrix, and
float16 storage, on real faces: about 200 LFW photos embedded by dlib's face network.

They must find what exact search finds for real faces, and live through what an exact
index lives through: enrolment, erasure, compaction, hot reload, a missing structure
file. Speed and recall at scale are in benchmarks/ann.py, not here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import grpc
import numpy as np
import pytest

from lookalike.client import LookalikeError, SearchClient
from lookalike.server.backends.memmap import MemmapBackend
from lookalike.server.index.build import build_index, publish_staged
from lookalike.server.index.gallery import list_gallery
from lookalike.server.index.store import (
    ANN_FILE,
    FEATURES,
    MANIFEST,
    GalleryIndex,
    Item,
    Layout,
)
from lookalike.server.vision.imaging import load
from lookalike.v1 import search_pb2, search_pb2_grpc
from tests.serving import in_process_server

pytestmark = pytest.mark.lfw

APPROXIMATE = ("ivf-flat", "ivf-sq8", "ivf-pq", "hnsw")
PEOPLE = 40  # people with at least 4 photos: all but the last in the gallery, that one a query


@pytest.fixture(scope="module")
def faces(lfw_dir, tmp_path_factory) -> tuple[Path, list[Path]]:
    """A gallery folder of LFW photos (links) and one held-out photo of each person."""
    by_person: dict[str, list[str]] = {}
    for image in list_gallery(lfw_dir / "images", "all"):
        by_person.setdefault(image.label, []).append(image.path)
    chosen = [paths for paths in by_person.values() if len(paths) >= 4][:PEOPLE]
    root = tmp_path_factory.mktemp("faces") / "gallery"
    queries = []
    for paths in chosen:
        for path in paths[:-1][:6]:
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).symlink_to(lfw_dir / "images" / path)
        queries.append(lfw_dir / "images" / paths[-1])
    return root, queries


@pytest.fixture(scope="module")
def face_embedder(face_model):
    from lookalike.server.vision.embedder import Embedder

    return Embedder(face_model, device="cpu")


@pytest.fixture(scope="module")
def exact_dir(faces, face_embedder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("exact") / "index"
    build_index(faces[0], face_embedder, out, progress=False)
    return out


@pytest.fixture(scope="module")
def query_vectors(faces, face_embedder, exact_dir) -> np.ndarray:
    info = GalleryIndex.open(exact_dir).manifest
    pixels = [load(path.read_bytes(), info.crop, info.input_size).pixels for path in faces[1]]
    return face_embedder.embed(np.stack(pixels))


def with_layout(exact_dir: Path, out: Path, layout: Layout) -> Path:
    """The exact index's rows published again with ``layout``, as a build publishes them."""
    base = GalleryIndex.open(exact_dir)
    staging = out.parent / f".{out.name}.staging"
    staging.mkdir(parents=True)
    np.save(staging / FEATURES, np.asarray(base.features))
    publish_staged(staging, out, base.manifest.info, base.manifest.items, [], layout)
    return out


def top_ids(backend: MemmapBackend, queries: np.ndarray, k: int = 1) -> list[list[str]]:
    return [[hit.item.id for hit in hits] for hits in backend.search(queries, k)]


@pytest.mark.parametrize(
    "layout",
    [Layout(index_type=kind) for kind in APPROXIMATE]
    + [Layout(storage="float16"), Layout(storage="float16", index_type="ivf-sq8")],
    ids=lambda layout: f"{layout.index_type}-{layout.storage}",
)
def test_approximate_index_finds_the_same_top_face_as_exact_search(
    exact_dir, query_vectors, tmp_path, layout
):
    exact = MemmapBackend(GalleryIndex.open(exact_dir))
    other = MemmapBackend(GalleryIndex.open(with_layout(exact_dir, tmp_path / "index", layout)))
    assert top_ids(other, query_vectors) == top_ids(exact, query_vectors)
    nearest = other.search(query_vectors, 5)
    truth = exact.search(query_vectors, 5)
    for found, expected in zip(nearest, truth, strict=True):  # exact distances, nearest first
        assert [h.distance for h in found] == sorted(h.distance for h in found)
        assert found[0].distance == pytest.approx(expected[0].distance, abs=2e-3)


def test_manifest_records_index_type_and_storage_and_old_ones_read_as_exact(exact_dir, tmp_path):
    out = with_layout(exact_dir, tmp_path / "index", Layout("float16", "ivf-flat"))
    body = json.loads((out / MANIFEST).read_text())
    assert body["features"]["dtype"] == "float16"
    assert body["search"]["index_type"] == "ivf-flat" and body["search"]["file"] == ANN_FILE
    assert body["search"]["lists"] >= 1 and body["search"]["breadth"] >= 1
    assert (out / ANN_FILE).is_file()
    assert GalleryIndex.open(out).features.dtype == np.float16
    old = json.loads((exact_dir / MANIFEST).read_text())
    del old["search"]  # as written before approximate indexes
    copy = tmp_path / "old"
    shutil.copytree(exact_dir.resolve(), copy)
    (copy / MANIFEST).write_text(json.dumps(old))
    index = GalleryIndex.open(copy)
    assert index.manifest.layout == Layout()
    assert MemmapBackend(index).name == "sklearn-brute"


@pytest.mark.parametrize("kind", APPROXIMATE)
def test_enrolment_erasure_compaction_and_reload_keep_working(
    exact_dir, query_vectors, tmp_path, kind
):
    folder = with_layout(exact_dir, tmp_path / "index", Layout(index_type=kind))
    backend = MemmapBackend(GalleryIndex.open(folder))
    everyone = len(backend)
    first_hits = top_ids(backend, query_vectors)
    erased = sorted({ids[0] for ids in first_hits[:10]})
    added = Item("f" * 16, "Someone_New", "Someone_New/Someone_New_0001.jpg")
    newcomer = query_vectors[-1] + 0.01
    backend.add(added, newcomer)
    backend.remove(erased)

    def check(backend: MemmapBackend) -> None:
        assert top_ids(backend, newcomer[np.newaxis])[0] == [added.id]  # found while pending
        for ids in top_ids(backend, query_vectors, k=everyone):  # erased rows never come back
            assert not set(ids) & set(erased)
        assert len(backend) == everyone + 1 - len(erased)

    check(backend)
    check(backend.reopen())  # a hot reload replays the journal onto the same version
    old, new, folded = backend.compact()
    assert old != new and folded == 1 + len(erased) and backend.pending_rows == 0
    compacted = GalleryIndex.open(folder)
    assert compacted.manifest.layout.index_type == kind and (compacted.path / ANN_FILE).exists()
    check(backend)
    check(backend.reopen())
    (folder.resolve() / ANN_FILE).unlink()  # an index copied without its structure
    check(backend.reopen())


def test_cli_builds_an_approximate_float16_index(faces, face_model, tmp_path):
    from lookalike.client.cli import main

    out = tmp_path / "index"
    argv = ["index", str(faces[0]), "--model", str(face_model), "--out", str(out)]
    assert main([*argv, "--index-type", "hnsw", "--storage", "float16", "--device", "cpu"]) == 0
    layout = GalleryIndex.open(out).manifest.layout
    assert (layout.index_type, layout.storage, layout.links) == ("hnsw", "float16", 32)
    assert main([*argv, "--index-type", "HNSW"]) == 2  # Milvus's, without --backend milvus


def test_search_breadth_beyond_the_servers_limit_is_refused(
    exact_dir, faces, face_embedder, tmp_path
):
    folder = with_layout(exact_dir, tmp_path / "index", Layout(index_type="ivf-flat"))
    photo = faces[1][0].read_bytes()
    person = faces[1][0].parent.name
    with (
        in_process_server(face_embedder, folder, search_breadth=2) as target,
        grpc.insecure_channel(target) as channel,
    ):
        stub = search_pb2_grpc.SearchServiceStub(channel)
        for breadth in (-1, 33):  # the limit: 16 times the server's breadth
            with pytest.raises(grpc.RpcError) as refused:
                stub.Search(search_pb2.SearchRequest(image=photo, k=3, search_breadth=breadth))
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "search_breadth" in refused.value.details()
        for breadth in (0, 1, 32):
            answer = stub.Search(search_pb2.SearchRequest(image=photo, k=3, search_breadth=breadth))
            assert answer.matches[0].label == person
    with in_process_server(face_embedder, folder, search_breadth=2) as target:
        with SearchClient(target, retries=0) as client:  # the library passes it on
            info = client.info()  # and GetInfo says what a Search may ask for
            assert (info.default_search_breadth, info.max_search_breadth) == (2, 32)
            assert client.search(photo, k=3, search_breadth=32).matches[0].label == person
            with pytest.raises(LookalikeError) as refused:
                client.search(photo, k=3, search_breadth=33)
        assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_eval_ranks_a_float16_approximate_index_exactly_over_its_rows(
    faces, face_model, exact_dir, tmp_path
):
    from lookalike.server.evaluation.evaluate import EvalConfig, evaluate

    layout = Layout(storage="float16", index_type="ivf-pq")
    folder = with_layout(exact_dir, tmp_path / "index", layout)
    exact, half = (
        evaluate(EvalConfig(faces[0], model=face_model, index=index, progress=False))
        for index in (exact_dir, folder)
    )
    assert half.summary["knn_backend"] == "faiss-flat-fp16"  # every row, exactly, in float16
    assert half.summary["queries"] == exact.summary["queries"] > 0
    assert half.retrieval.hit_at_1 == pytest.approx(exact.retrieval.hit_at_1, abs=0.01)
    assert half.retrieval.map == pytest.approx(exact.retrieval.map, abs=0.01)

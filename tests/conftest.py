"""Shared fixtures: a tiny ONNX embedder, a real exported ResNet101 for the tests about it, a
generated gallery, its index, a live server, a TLS certificate; and each test marked with its
layer (unit, server, models, e2e) from its folder."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.imagegen import write_gallery
from tests.serving import in_process_server
from tests.sharing import BackgroundExport, run_folder, tf2onnx_turn
from tests.tiny_model import write_tiny_model

TEST_IMAGE_SIZE = 32  # the smallest a ResNet101 takes: five halvings to one cell
ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
# The layers, one folder each (README, "Layout"): a test is marked with its folder's name.
LAYERS = ("unit", "server", "models", "e2e")
RUN_ORDER = ("unit", "server", "e2e", "models")  # lightest first (pytest_collection_modifyitems)


def pytest_itemcollected(item):
    """Each test marked with its layer, from its folder (before -m selects), the end-to-end
    ones also "slow"."""
    layer = item.path.resolve().relative_to(TESTS).parts[0]
    if layer not in LAYERS:
        folders = ", ".join(f"tests/{name}/" for name in LAYERS)
        raise pytest.UsageError(f"{item.nodeid}: a test belongs in one of {folders}")
    item.add_marker(layer)
    if layer == "e2e":
        item.add_marker("slow")


@pytest.hookimpl(trylast=True)  # after pytest has grouped the tests by fixture parameter
def pytest_collection_modifyitems(config, items):
    """The light layers first (unit, server), while the ResNet is exported in the background
    (see model_export); then the end-to-end and model tests; the tests that need the ResNet
    last. Within each, the collection's own order."""

    def place(item: pytest.Item) -> tuple[bool, int]:
        needs_resnet = "resnet_model" in getattr(item, "fixturenames", ())
        return needs_resnet, RUN_ORDER.index(item.path.resolve().relative_to(TESTS).parts[0])

    items[:] = sorted(items, key=place)


def reused_model() -> Path | None:
    reuse = os.environ.get("LOOKALIKE_TEST_MODEL")
    return Path(reuse) if reuse and Path(reuse).is_file() else None


@pytest.fixture(scope="session", autouse=True)
def model_export(request, tmp_path_factory):
    """Starts exporting the test ResNet as the session starts, if any test to run needs it."""
    if reused_model() or not any(
        "resnet_model" in getattr(item, "fixturenames", ()) for item in request.session.items
    ):
        yield None
        return
    export = BackgroundExport(run_folder(tmp_path_factory), TEST_IMAGE_SIZE)
    yield export
    export.stop()


@pytest.fixture(scope="session")
def resnet_model(model_export) -> Path:
    """A random-weight ResNet101 exported once per test run (about a minute on 2 cores),
    shared by the pytest-xdist workers (tests/sharing.py): for the tests about the ResNet
    and its export.

    Set LOOKALIKE_TEST_MODEL to an exported .onnx file to reuse it while developing.
    """
    return reused_model() or model_export.result()


@pytest.fixture(scope="session")
def onnx_model(tmp_path_factory) -> Path:
    """The embedder every test not about the ResNet serves: tests/tiny_model.py, written
    in milliseconds and loaded by a server in milliseconds."""
    return write_tiny_model(tmp_path_factory.mktemp("tiny-model") / "tiny.onnx")


@pytest.fixture
def tf2onnx_alone(tmp_path_factory):
    """For a test that runs a tf2onnx export in-process: not while another one runs. After
    it, the worker hands the export's memory back to the system (the graphs' cycles
    collected, glibc's free lists trimmed), or the worker keeps gigabytes for the rest
    of the run while the other worker exports."""
    with tf2onnx_turn(run_folder(tmp_path_factory)):
        yield
        release_memory()


def release_memory() -> None:
    import contextlib
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc
        ctypes.CDLL("libc.so.6").malloc_trim(0)


@pytest.fixture(scope="session")
def face_model(tmp_path_factory) -> Path:
    """dlib's face network, ported and exported to ONNX (seconds: no training, no download)."""
    from lookalike.export.convert import ExportConfig, export_onnx

    out = tmp_path_factory.mktemp("face-model") / "face.onnx"
    export_onnx(ExportConfig(out=out, architecture="dlib-resnet"))
    return out


@pytest.fixture(scope="session")
def embedder(onnx_model):
    from lookalike.server.vision.embedder import Embedder

    return Embedder(onnx_model, device="cpu")


@pytest.fixture(scope="session")
def resnet_embedder(resnet_model):
    from lookalike.server.vision.embedder import Embedder

    return Embedder(resnet_model, device="cpu")


@pytest.fixture(scope="session")
def gallery_dir(tmp_path_factory) -> Path:
    """6 people with 3 photos each."""
    return write_gallery(tmp_path_factory.mktemp("gallery"), people=6, photos=3)


@pytest.fixture
def own_gallery(gallery_dir, embedder, tmp_path) -> tuple[Path, Path]:
    """(gallery root, index link ``indexes/idx``): a copy of people 0-2 and its own index,
    for a test to change."""
    import shutil

    from lookalike.server.index.build import build_index

    root = tmp_path / "gallery"
    for person in range(3):
        shutil.copytree(gallery_dir / f"person_{person:02d}", root / f"person_{person:02d}")
    index = tmp_path / "indexes" / "idx"
    build_index(root, embedder, index, progress=False)
    return root, index


@pytest.fixture(scope="session")
def index_dir(gallery_dir, embedder, tmp_path_factory) -> Path:
    from lookalike.server.index.build import build_index

    out = tmp_path_factory.mktemp("indexes") / "index"
    build_index(gallery_dir, embedder, out, progress=False)
    return out


@pytest.fixture(scope="session")
def milvus_settings(index_dir, tmp_path_factory) -> dict[str, str]:
    """index_dir loaded into a Milvus Lite collection: the server settings that search it."""
    from lookalike.server.backends.milvus import MilvusTarget, load_index
    from lookalike.server.index.store import GalleryIndex

    uri = str(tmp_path_factory.mktemp("milvus") / "gallery.db")
    load_index(GalleryIndex.open(index_dir), MilvusTarget(uri, "gallery"), progress=False)
    return {"backend": "milvus", "milvus_uri": uri, "collection": "gallery"}


@pytest.fixture(scope="session", params=["memmap", "milvus"])
def backend(request) -> str:
    """Each end-to-end test runs against both search backends."""
    return request.param


@pytest.fixture(scope="session")
def server_target(request, backend, embedder, index_dir):
    """A real gRPC server on a free loopback port, in this process."""
    settings = request.getfixturevalue("milvus_settings") if backend == "milvus" else {}
    with in_process_server(embedder, index_dir, **settings) as target:
        yield target


@pytest.fixture(scope="session")
def lfw_dir() -> Path:
    """The LFW development images; tests that need real faces skip without them."""
    path = Path(os.environ.get("LOOKALIKE_LFW_DIR", ROOT.parent / "shared" / "lfw"))
    if not (path / "images").is_dir():
        pytest.skip(f"LFW images not found at {path} (set LOOKALIKE_LFW_DIR)")
    return path


@pytest.fixture(scope="session")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    """(certificate, key): a self-signed certificate for localhost and 127.0.0.1."""
    folder = tmp_path_factory.mktemp("tls")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            str(folder / "key.pem"),
            "-out",
            str(folder / "cert.pem"),
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return folder / "cert.pem", folder / "key.pem"


@pytest.fixture
def live(request, backend, gallery_dir, embedder, tmp_path):
    """(gallery root, index folder, server settings): a copy of people 0-3 and its own index,
    on the backend under test, so that tests may change it."""
    import shutil

    from lookalike.server.index.build import build_index
    from lookalike.server.index.store import GalleryIndex

    root = tmp_path / "gallery"
    for person in range(4):
        shutil.copytree(gallery_dir / f"person_{person:02d}", root / f"person_{person:02d}")
    index = tmp_path / "index"
    build_index(root, embedder, index, progress=False)
    settings: dict[str, object] = {}
    if backend == "milvus":
        from lookalike.server.backends.milvus import MilvusTarget, load_index

        uri = str(tmp_path / "milvus.db")
        load_index(GalleryIndex.open(index), MilvusTarget(uri, "live"), progress=False)
        settings = {"backend": "milvus", "milvus_uri": uri, "collection": "live"}
    return root, index, settings


@pytest.fixture
def lite_uri(tmp_path) -> str:
    """A Milvus Lite database file of the test's own."""
    return str(tmp_path / "milvus.db")

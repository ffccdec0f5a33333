"""No UNKNOWN and no server internals: every failure a client can cause or meet has its
status and a message without server paths."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys

import grpc
import numpy as np
import pytest

from lookalike.client import LookalikeError, SearchClient
from lookalike.server.index.store import FEATURES, MANIFEST
from lookalike.server.online.config import ConfigError, ServerConfig
from tests.serving import running_server


def bad_json(index) -> None:
    (index / MANIFEST).write_text('{"format": 1, "items": [')


def a_list(index) -> None:
    (index / MANIFEST).write_text("[]")


def features_a_folder(index) -> None:
    (index / FEATURES).unlink()
    (index / FEATURES).mkdir()


def other_embedding_size(index) -> None:
    """A consistent index (checksum and shape agree) whose rows are not the model's size."""
    manifest = json.loads((index / MANIFEST).read_text())
    rows = manifest["features"]["shape"][0]
    np.save(index / FEATURES, np.ones((rows, 16), np.float32))
    manifest["model"]["embedding_size"] = 16
    manifest["features"]["shape"] = [rows, 16]
    manifest["features"]["sha256"] = hashlib.sha256((index / FEATURES).read_bytes()).hexdigest()
    (index / MANIFEST).write_text(json.dumps(manifest))


BREAKAGES = [bad_json, a_list, features_a_folder, other_embedding_size]


@pytest.mark.parametrize("breakage", BREAKAGES, ids=[b.__name__ for b in BREAKAGES])
def test_a_broken_index_is_refused_with_failed_precondition_and_no_path(
    embedder, index_dir, tmp_path, breakage
):
    root = tmp_path / "root"
    shutil.copytree(index_dir, root / "served")
    shutil.copytree(index_dir, root / "broken")
    breakage(root / "broken")
    with running_server(embedder, root / "served", index_root=root) as server:
        target = f"127.0.0.1:{server.port}"
        with SearchClient(target, retries=0) as client:
            with pytest.raises(LookalikeError) as raised:
                client.reload_index("broken")
            assert raised.value.code == grpc.StatusCode.FAILED_PRECONDITION
            assert "kept the old index" in raised.value.message
            assert str(tmp_path) not in raised.value.message
            assert FEATURES not in raised.value.message and MANIFEST not in raised.value.message
            assert client.info().gallery_size == 18


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("thumbnail_size", 0),
        ("max_k", 0),
        ("max_in_flight", 0),
        ("max_batch", -1),
        ("grace_seconds", -1.0),
        ("port", 70_000),
    ],
)
def test_settings_out_of_range_are_refused_at_start(setting, value):
    with pytest.raises(ConfigError, match=setting):
        ServerConfig(model="m.onnx", index="i", **{setting: value})


def test_serve_with_thumbnail_size_zero_exits_with_a_message():
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "lookalike.client.cli",
            "serve",
            "--model",
            "m.onnx",
            "--index",
            "i",
            "--thumbnail-size",
            "0",
            "--print-config",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert "thumbnail_size must be at least 1, got 0" in run.stderr

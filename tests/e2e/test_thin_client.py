"""`pip install .` alone is the thin client: no tensorflow, onnxruntime, scikit-learn or numpy."""

from __future__ import annotations

import os
import subprocess
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("tensorflow", "onnxruntime", "sklearn", "numpy", "tf2onnx")


@pytest.fixture(scope="session")  # not module: the backend parameter splits this module
def thin_venv(tmp_path_factory) -> Path:
    """A fresh virtual environment with only `pip install .` in it."""
    where = tmp_path_factory.mktemp("thin") / "venv"
    venv.create(where, with_pip=True)
    python = where / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(ROOT)],
        check=True,
        timeout=600,
        env={**os.environ, "PIP_NO_INPUT": "1"},
    )
    return python


def test_thin_install_has_no_heavy_dependencies(thin_venv):
    probe = (
        "import importlib.util, lookalike.client, lookalike.v1.search_pb2_grpc;"
        f"print([m for m in {HEAVY!r} if importlib.util.find_spec(m)])"
    )
    result = subprocess.run(
        [str(thin_venv), "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_thin_client_searches_a_real_server(thin_venv, server_target, gallery_dir):
    query = gallery_dir / "person_04" / "person_04_0002.jpg"
    cli = thin_venv.parent / "lookalike"
    result = subprocess.run(
        [str(cli), "search", str(query), "--server", server_target, "-k", "2", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert '"path": "person_04/person_04_0002.jpg"' in result.stdout


def test_thin_client_names_the_missing_extra(thin_venv, tmp_path):
    cli = thin_venv.parent / "lookalike"
    result = subprocess.run(
        [str(cli), "index", str(tmp_path), "--model", "m.onnx", "--out", str(tmp_path / "i")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "pip install 'lookalike[server]'" in result.stderr

"""What `lookalike serve` refuses at start, exiting 2 with a message and no traceback:
missing or bad secrets, CUDA without CUDA, an index of another model, a missing model,
--max-distance 0, --threads 0."""

from __future__ import annotations

import json
import shutil

import pytest

from lookalike.server.vision.embedder import Embedder
from tests.serving import (
    free_port,
    run_cli,
    start_server_process,
    wait_until_serving,
)


@pytest.mark.parametrize(
    ("option", "content", "message"),
    [
        ("--auth-token-file", None, "cannot read the auth token file"),
        ("--auth-token-file", "", "the auth token file"),
        ("--admin-token-file", None, "cannot read the admin token file"),
        ("--tls-cert", None, "cannot read the TLS certificate or key"),
        ("--tls-cert", "not a certificate", "TLS"),
    ],
)
def test_serve_refuses_to_start_without_its_secrets(
    onnx_model,
    index_dir,
    certificate,  # noqa: F811 (the fixture)
    tmp_path,
    option,
    content,
    message,
):
    secret = tmp_path / "secret"
    if content is not None:
        secret.write_text(content)
    extra = [option, str(secret)]
    if option == "--tls-cert":
        extra += ["--tls-key", str(certificate[1])]
    port = free_port()
    server = start_server_process(onnx_model, index_dir, port, *extra)
    _, stderr = server.communicate(timeout=120)
    assert server.returncode == 2, stderr
    assert message in stderr
    assert "Traceback" not in stderr


def test_device_cuda_refuses_to_start_without_cuda(onnx_model, index_dir):
    from lookalike.server.vision.embedder import ModelError

    try:
        Embedder(onnx_model, "cuda")
    except ModelError:
        pass  # no CUDA here: the server must refuse
    else:
        pytest.skip("CUDA loads on this machine: nothing to refuse")
    server = start_server_process(onnx_model, index_dir, free_port(), "--device", "cuda")
    _, stderr = server.communicate(timeout=120)  # the last --device given is the one used
    assert server.returncode == 2, stderr
    assert "--device cuda was asked for" in stderr


def test_serve_refuses_a_limit_that_is_not_above_zero(onnx_model, index_dir):
    server = start_server_process(onnx_model, index_dir, free_port(), "--max-distance", "0")
    _, err = server.communicate(timeout=120)
    assert server.returncode == 2 and "--max-distance must be above 0" in err


def test_serve_logs_its_threads_and_refuses_zero(onnx_model, index_dir):
    port = free_port()
    server = start_server_process(onnx_model, index_dir, port, "--threads", "1")
    try:
        wait_until_serving(f"127.0.0.1:{port}", server)
    finally:
        server.terminate()
        _, log = server.communicate(timeout=60)
    assert "1 intra-op threads (--threads)" in log
    assert "(1 intra-op threads)" in log

    refused = start_server_process(onnx_model, index_dir, free_port(), "--threads", "0")
    _, err = refused.communicate(timeout=120)
    assert refused.returncode == 2
    assert "--threads must be at least 1" in err


def test_serve_refuses_an_index_of_another_model(onnx_model, index_dir, tmp_path):
    copy = tmp_path / "index"
    shutil.copytree(index_dir, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["model"]["fingerprint"] = "feedfacefeedface"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    result = run_cli("serve", "--model", str(onnx_model), "--index", str(copy), "--port", "0")
    assert result.returncode == 2
    assert "built by model feedfacefeedface" in result.stderr


def test_serve_with_missing_model_says_so(index_dir, tmp_path):
    result = run_cli("serve", "--model", str(tmp_path / "nope.onnx"), "--index", str(index_dir))
    assert result.returncode == 2
    assert "model file not found" in result.stderr

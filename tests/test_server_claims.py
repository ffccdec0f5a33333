"""What README says the server and its client do, each checked on a real server: the
server's own deadline guard, retries, shutdown, signals, TLS and tokens from the
command line, refusing to start without its secrets, CUDA, and faiss."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lookalike.client import LookalikeError, SearchClient
from tests.serving import free_port, running_server, start_server_process, wait_until_serving
from tests.test_hardening import certificate  # noqa: F401 (a fixture)
from tests.test_slow_clients import never_sending_calls

CLI = [sys.executable, "-m", "lookalike.client.cli"]


def sample(server, name: str, **labels: str) -> float:
    return server.telemetry.registry.get_sample_value(name, labels) or 0.0


def test_a_deadline_that_passes_while_the_call_waits_ends_it_on_the_server(
    embedder, index_dir, gallery_dir
):
    """The call reaches the server and waits for company in its batch (a 3 s window);
    its 1 s deadline passes there. The server ends it, and its embedding never runs."""
    image = (gallery_dir / "person_01" / "person_01_0002.jpg").read_bytes()
    with running_server(embedder, index_dir, batch_window_ms=3000) as server:
        target = f"127.0.0.1:{server.port}"
        with SearchClient(target, timeout=1, retries=0) as client:
            with pytest.raises(LookalikeError) as raised:
                client.search(image, k=3)
            assert raised.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        with SearchClient(target, timeout=60) as client:
            # The batcher runs one batch at a time: once this answer is back, the late
            # call's batch has been dealt with too.
            assert len(client.search(image, k=3).matches) == 3
        late = ("lookalike_requests_total", {"rpc": "Search", "code": "DEADLINE_EXCEEDED"})
        assert sample(server, late[0], **late[1]) == 1  # counted by the server itself
        assert sample(server, "lookalike_embed_batch_size_count") == 1
        assert sample(server, "lookalike_embed_batch_size_sum") == 1  # only the second
        assert sample(server, "lookalike_stage_seconds_count", stage="embed") == 1


def test_the_client_retries_only_unavailable(embedder, index_dir, gallery_dir):
    image = (gallery_dir / "person_01" / "person_01_0002.jpg").read_bytes()
    with running_server(embedder, index_dir, max_in_flight=1) as server:
        target = f"127.0.0.1:{server.port}"

        def attempts(code: str, retries: int, k: int = 3) -> float:
            def counted() -> float:
                return sample(server, "lookalike_requests_total", rpc="Search", code=code)

            before = counted()
            with SearchClient(target, retries=retries) as client, pytest.raises(LookalikeError):
                client.search(image, k=k)
            # Every attempt was made before the client gave up; the server counts each
            # just after sending its status, so wait for the first count to land.
            for _ in range(500):
                if counted() > before:
                    break
                time.sleep(0.01)
            time.sleep(0.1)
            return counted() - before

        server.service.ready.clear()  # answers UNAVAILABLE, as during warm-up
        started = time.monotonic()
        assert attempts("UNAVAILABLE", retries=3) == 4
        backed_off = time.monotonic() - started
        assert attempts("UNAVAILABLE", retries=0) == 1
        server.service.ready.set()
        assert attempts("INVALID_ARGUMENT", retries=3, k=0) == 1
        with server.service._slots:  # busy: RESOURCE_EXHAUSTED is not retried either
            assert attempts("RESOURCE_EXHAUSTED", retries=3) == 1
    # gRPC waits a random share of 0.2, 0.4, 0.8 s before the retries: more than nothing.
    assert backed_off > 0.01


def test_sigterm_turns_health_not_serving_and_grace_seconds_cut_off_open_calls(
    onnx_model, index_dir
):
    port = free_port()
    target = f"127.0.0.1:{port}"
    server = start_server_process(onnx_model, index_dir, port, "--grace-seconds", "3")
    try:
        wait_until_serving(target, server)
        with (
            grpc.insecure_channel(target) as channel,
            never_sending_calls(target, 1, channels=1) as (open_call,),
        ):
            watch = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(), timeout=60
            )
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            signalled = time.monotonic()
            server.send_signal(signal.SIGTERM)
            assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
            server.wait(timeout=60)
            stopped = time.monotonic() - signalled
            assert open_call.exception(timeout=30) is not None  # cut off, not answered
    finally:
        if server.poll() is None:
            server.kill()
        _, stderr = server.communicate(timeout=60)
    assert server.returncode == 0, stderr
    assert "received SIGTERM" in stderr
    assert 3 <= stopped < 30  # the open call kept it up until the grace period ended


def test_sigint_exits_0(onnx_model, index_dir):
    port = free_port()
    server = start_server_process(onnx_model, index_dir, port)
    wait_until_serving(f"127.0.0.1:{port}", server)
    server.send_signal(signal.SIGINT)
    _, stderr = server.communicate(timeout=60)
    assert server.returncode == 0, stderr
    assert "received SIGINT" in stderr and "stopped" in stderr


def test_cli_connects_with_tls_ca_and_token_file(
    embedder,
    index_dir,
    certificate,  # noqa: F811 (the fixture)
    tmp_path,
):
    cert, key = certificate
    token = tmp_path / "token"
    token.write_text("cli-token\n")
    with running_server(
        embedder, index_dir, tls_cert=cert, tls_key=key, auth_token_file=token
    ) as server:
        address = f"localhost:{server.port}"
        base = [*CLI, "info", "--server", address, "--json", "--timeout", "10"]
        ok = subprocess.run(
            [*base, "--tls", "--ca", str(cert), "--token-file", str(token)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        no_token = subprocess.run(
            [*base, "--ca", str(cert)], capture_output=True, text=True, timeout=120
        )
        no_ca = subprocess.run(
            [*base, "--tls", "--token-file", str(token)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["gallery_size"] == 18
    assert no_token.returncode == 1 and "UNAUTHENTICATED" in no_token.stderr
    assert no_ca.returncode == 1 and "UNAVAILABLE" in no_ca.stderr  # an unknown issuer


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
    from lookalike.server.vision.embedder import Embedder, ModelError

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

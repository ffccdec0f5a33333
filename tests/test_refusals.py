"""Every refusal is seen (counted and logged), metrics stay on this machine by default,
tokens without TLS are warned about, and token files are re-read on SIGHUP."""

from __future__ import annotations

import logging
import signal
import socket
import time
import urllib.request

import grpc
import pytest

from lookalike.client import LookalikeError, SearchClient
from tests.serving import free_port, running_server, start_server_process, wait_until_serving
from tests.test_operating import scrape
from tests.test_reload_safety import non_loopback_address


def refusal(target: str, call, **client) -> grpc.StatusCode:
    with SearchClient(target, retries=0, **client) as c, pytest.raises(LookalikeError) as raised:
        call(c)
    return raised.value.code


def test_auth_and_busy_refusals_are_counted_and_logged(
    embedder, index_dir, gallery_dir, tmp_path, caplog
):
    caplog.set_level(logging.INFO, logger="lookalike")
    (tmp_path / "token").write_text("t0ken")
    image = (gallery_dir / "person_02" / "person_02_0001.jpg").read_bytes()
    with running_server(
        embedder, index_dir, auth_token_file=tmp_path / "token", max_in_flight=1, metrics_port=0
    ) as server:
        target = f"127.0.0.1:{server.port}"
        assert refusal(target, lambda c: c.info()) == grpc.StatusCode.UNAUTHENTICATED
        search = lambda c: c.search(image, k=1)  # noqa: E731
        assert refusal(target, search, token="wrong") == grpc.StatusCode.UNAUTHENTICATED
        with server.service._slots:  # the one slot taken, as by a long search
            busy = refusal(target, search, token="t0ken")
        assert busy == grpc.StatusCode.RESOURCE_EXHAUSTED
        metrics = scrape(server.metrics_port)
    refused = "lookalike_refused_total"
    assert metrics[(refused, (("reason", "missing_token"), ("rpc", "GetInfo")))] == 1
    assert metrics[(refused, (("reason", "bad_token"), ("rpc", "Search")))] == 1
    assert metrics[(refused, (("reason", "busy"), ("rpc", "Search")))] == 1
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused")]
    assert [line.split(" peer=")[0] for line in lines] == [
        "refused rpc=GetInfo reason=missing_token",
        "refused rpc=Search reason=bad_token",
        "refused rpc=Search reason=busy",
    ]
    assert all("peer=ipv4:127.0.0.1:" in line for line in lines)


def test_metrics_listen_on_loopback_by_default(embedder, index_dir):
    with running_server(embedder, index_dir, host="0.0.0.0", metrics_port=0) as server:
        port = server.metrics_port
        assert server.telemetry._http.server_address[0] == "127.0.0.1"
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
        assert b"lookalike_requests_total" in body or b"lookalike_gallery_size" in body
        address = non_loopback_address()
        if address is not None:  # reachable from this machine only
            with pytest.raises(OSError), socket.create_connection((address, port), timeout=5):
                pass


def test_a_bearer_token_without_tls_is_warned_about(embedder, index_dir, tmp_path, caplog):
    (tmp_path / "token").write_text("t0ken")
    caplog.set_level(logging.WARNING, logger="lookalike")
    with running_server(embedder, index_dir, auth_token_file=tmp_path / "token"):
        pass
    assert any("TLS is not" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with running_server(embedder, index_dir):
        pass
    assert not any("TLS is not" in r.getMessage() for r in caplog.records)


def test_sighup_rereads_the_token_files(onnx_model, index_dir, tmp_path):
    search_file, admin_file = tmp_path / "token", tmp_path / "admin"
    search_file.write_text("old-token")
    admin_file.write_text("old-admin")
    port = free_port()
    server = start_server_process(
        onnx_model,
        index_dir,
        port,
        "--auth-token-file",
        str(search_file),
        "--admin-token-file",
        str(admin_file),
    )
    target = f"127.0.0.1:{port}"
    try:
        wait_until_serving(target, server)
        with SearchClient(target, token="old-token") as client:
            assert client.info().gallery_size == 18
        search_file.write_text("new-token\n")
        admin_file.write_text("new-admin\n")
        server.send_signal(signal.SIGHUP)
        with SearchClient(target, token="new-token", retries=0) as client:
            for _ in range(600):  # until the handler has run (it logs the re-read)
                try:
                    client.info()
                    break
                except LookalikeError as error:
                    assert error.code == grpc.StatusCode.UNAUTHENTICATED
            assert client.info().gallery_size == 18
        assert refusal(target, lambda c: c.info(), token="old-token") == (
            grpc.StatusCode.UNAUTHENTICATED
        )
        with SearchClient(target, token="new-admin") as client:
            for _ in range(600):  # the SIGHUP's own index reload may still run
                try:
                    assert client.reload_index()[1] == 18
                    break
                except LookalikeError as error:
                    assert error.code == grpc.StatusCode.ABORTED
                    time.sleep(0.1)
            else:
                pytest.fail("the SIGHUP reload did not end")
        search_file.write_text("")  # an emptied file keeps the token in use
        server.send_signal(signal.SIGHUP)
    finally:
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=60)
    assert server.returncode == 0, stderr
    assert "kept the old auth token" in stderr
    assert "TLS is not" in stderr


def test_reflection_needs_the_token_when_one_is_set(embedder, index_dir, tmp_path):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    (tmp_path / "token").write_text("t0ken")
    ask = reflection_pb2.ServerReflectionRequest(list_services="")
    with (
        running_server(embedder, index_dir, auth_token_file=tmp_path / "token") as server,
        grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            list(stub.ServerReflectionInfo(iter([ask]), timeout=10))
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
        token = (("authorization", "Bearer t0ken"),)
        (answer,) = stub.ServerReflectionInfo(iter([ask]), metadata=token, timeout=10)
    names = {service.name for service in answer.list_services_response.service}
    assert "lookalike.v1.SearchService" in names

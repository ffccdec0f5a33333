"""Bearer tokens and TLS on an in-process server: what a token guards and what it leaves open,
TLS with a token from the client and from the command line, a token without TLS warned
about, reflection behind the token."""

from __future__ import annotations

import json
import logging
import subprocess

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lookalike.client import LookalikeError, SearchClient
from tests.imagegen import GOOD
from tests.serving import (
    LOOKALIKE,
    in_process_server,
    running_server,
)


def test_bearer_token_guards_search_but_not_health(embedder, index_dir, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    with in_process_server(embedder, index_dir, auth_token_file=token_file) as target:
        for token, expected in [(None, "missing"), ("wrong", "not valid")]:
            with (
                SearchClient(target, token=token) as client,
                pytest.raises(LookalikeError) as raised,
            ):
                client.info()
            assert raised.value.code == grpc.StatusCode.UNAUTHENTICATED
            assert expected in raised.value.message
        with SearchClient(target, token="s3cret-token") as client:
            assert len(client.search(GOOD, k=2).matches) == 2
        with grpc.insecure_channel(target) as channel:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_tls_with_token(embedder, index_dir, certificate, tmp_path):
    cert, key = certificate
    token_file = tmp_path / "token"
    token_file.write_text("tls-token")
    with in_process_server(
        embedder, index_dir, tls_cert=cert, tls_key=key, auth_token_file=token_file
    ) as target:
        target = target.replace("127.0.0.1", "localhost")
        with SearchClient(target, ca=cert, token="tls-token") as client:
            assert client.info().gallery_size == 18
        with (
            SearchClient(target, timeout=3, retries=0) as plain,
            pytest.raises(LookalikeError) as raised,
        ):
            plain.info()
        assert raised.value.code == grpc.StatusCode.UNAVAILABLE


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
        base = [*LOOKALIKE, "info", "--server", address, "--json", "--timeout", "10"]
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

"""Signals to a `lookalike serve` process: SIGTERM turns health NOT_SERVING, lets calls in
flight finish and cuts off open ones after --grace-seconds; SIGINT exits 0; SIGHUP reloads
the served folder and re-reads the token files."""

from __future__ import annotations

import signal
import threading
import time
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lookalike.client import LookalikeError, SearchClient
from lookalike.server.index.build import build_index
from tests.imagegen import encode, gallery_of, photo
from tests.serving import (
    free_port,
    never_sending_calls,
    refusal,
    start_server_process,
    wait_until_serving,
)


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


def test_sigterm_lets_calls_in_flight_finish(onnx_model, index_dir):
    """Calls under way at SIGTERM complete; only calls that arrive after it are refused."""
    slow = encode(photo((4000, 4000)), "JPEG")  # ~0.2 s to decode, so calls overlap it
    port = free_port()
    metrics = free_port()
    server = start_server_process(
        onnx_model,
        index_dir,
        port,
        *("--grace-seconds", "20", "--max-message-bytes", str(32 << 20)),
        *("--metrics-port", str(metrics)),
    )
    target = f"127.0.0.1:{port}"
    wait_until_serving(target, server)
    calls: list[grpc.StatusCode] = []
    stop = threading.Event()

    def keep_searching() -> None:
        with SearchClient(target, retries=0) as client:
            while not stop.is_set():
                try:
                    client.search(slow, k=5)
                    calls.append(grpc.StatusCode.OK)
                except LookalikeError as error:
                    calls.append(error.code)
                    return

    threads = [threading.Thread(target=keep_searching) for _ in range(4)]
    started_at = time.monotonic()
    for thread in threads:
        thread.start()
    while len(calls) < 8 or not searches_in_flight(metrics):  # signalled mid-search
        assert time.monotonic() - started_at < 300, "the searches did not get going"
        time.sleep(0.01)
    server.send_signal(signal.SIGTERM)
    _, stderr = server.communicate(timeout=60)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    assert server.returncode == 0, stderr
    # The server's own line for each call it took: every one of them was answered OK,
    # some after SIGTERM; the calls refused were ones it never took (UNAVAILABLE).
    _, _, after = stderr.partition("received SIGTERM")
    taken = [line for line in stderr.splitlines() if "rpc=Search" in line]
    assert taken and all("code=OK" in line for line in taken), taken
    assert "rpc=Search" in after, "no call was under way at SIGTERM"
    assert calls.count(grpc.StatusCode.OK) == len(taken)
    # Refused: UNAVAILABLE once the server has stopped listening; CANCELLED for a call
    # whose headers reach it in the instant it stops taking calls.
    refused = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}
    assert set(calls) <= {grpc.StatusCode.OK} | refused


def searches_in_flight(metrics_port: int) -> bool:
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read()
    for line in text.decode().splitlines():
        if line.startswith("lookalike_searches_in_flight "):
            return float(line.split()[1]) > 0
    return False


def test_sighup_reloads_the_served_folder(onnx_model, embedder, gallery_dir, tmp_path):
    served = tmp_path / "index"
    build_index(
        gallery_of(gallery_dir, ["person_02"], tmp_path / "a"), embedder, served, progress=False
    )
    port = free_port()
    server = start_server_process(onnx_model, served, port)
    try:
        wait_until_serving(f"127.0.0.1:{port}", server)
        with SearchClient(f"127.0.0.1:{port}") as client:
            assert client.info().gallery_size == 3
            build_index(
                gallery_of(gallery_dir, ["person_02", "person_05"], tmp_path / "b"),
                embedder,
                served,
                progress=False,
            )
            server.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 30
            while client.info().gallery_size != 6 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert client.info().gallery_size == 6
    finally:
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=60)
    assert server.returncode == 0 and "switched from gallery" in stderr


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

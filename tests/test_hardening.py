"""Bad input, overload, deadlines, shutdown, authentication, TLS and a soak, on real servers."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
import urllib.request

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from lookalike.client import LookalikeError, SearchClient
from lookalike.server.vision.imaging import ImageError, decode
from tests.imagegen import encode, noise_image
from tests.serving import (
    free_port,
    in_process_server,
    rss_mb,
    start_server_process,
    wait_until_serving,
)
from tests.test_imaging import png_declaring


def photo(size: tuple[int, int] = (120, 90)) -> Image.Image:
    return noise_image(size, seed=1)


GOOD = encode(photo(), "JPEG")
BAD_INPUTS = {
    "empty": (b"", 5, grpc.StatusCode.INVALID_ARGUMENT, "empty"),
    "not an image": (b"%PDF-1.4 hello", 5, grpc.StatusCode.INVALID_ARGUMENT, "not an image"),
    "truncated jpeg": (GOOD[: len(GOOD) // 2], 5, grpc.StatusCode.INVALID_ARGUMENT, "truncated"),
    "truncated png": (
        encode(photo(), "PNG")[:300],
        5,
        grpc.StatusCode.INVALID_ARGUMENT,
        "truncated",
    ),
    "decompression bomb": (
        png_declaring(30_000, 30_000),
        5,
        grpc.StatusCode.INVALID_ARGUMENT,
        "limit",
    ),
    "k zero": (GOOD, 0, grpc.StatusCode.INVALID_ARGUMENT, "k must be between 1 and 100"),
    "k negative": (GOOD, -1, grpc.StatusCode.INVALID_ARGUMENT, "k must be between 1 and 100"),
    "k over max": (GOOD, 101, grpc.StatusCode.INVALID_ARGUMENT, "k must be between 1 and 100"),
    "too large": (b"\0" * (9 << 20), 5, grpc.StatusCode.RESOURCE_EXHAUSTED, ""),
}
UNUSUAL_GOOD = {
    "cmyk": encode(photo().convert("CMYK"), "JPEG"),
    "16-bit": encode(Image.fromarray(np.full((40, 40), 51_000, np.uint16)), "PNG"),
    "palette": encode(photo().convert("P"), "PNG"),
    "alpha": encode(photo().convert("RGBA"), "PNG"),
    "grayscale": encode(photo().convert("L"), "JPEG"),
    "animated gif": encode(photo(), "GIF", save_all=True, append_images=[photo((120, 90))]),
    "webp": encode(photo(), "WEBP"),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_gets_its_status_and_the_server_keeps_serving(server_target, case):
    data, k, code, message = BAD_INPUTS[case]
    with SearchClient(server_target) as client:
        with pytest.raises(LookalikeError) as raised:
            client.search(data, k=k)
        assert raised.value.code == code
        assert message in raised.value.message
        assert len(client.search(GOOD, k=3).matches) == 3


@pytest.mark.parametrize("case", UNUSUAL_GOOD, ids=list(UNUSUAL_GOOD))
def test_unusual_but_valid_images_are_searched(server_target, case):
    with SearchClient(server_target) as client:
        assert len(client.search(UNUSUAL_GOOD[case], k=2).matches) == 2


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=2048),
        st.builds(
            lambda cut, flips: (cut, flips),
            st.integers(0, len(GOOD)),
            st.lists(st.tuples(st.integers(0, len(GOOD) - 1), st.integers(0, 255)), max_size=8),
        ),
    )
)
def test_fuzzed_bytes_decode_or_raise_image_error(sample):
    if isinstance(sample, tuple):  # a mutated real JPEG: truncated, with bytes flipped
        cut, flips = sample
        data = bytearray(GOOD[:cut])
        for position, value in flips:
            if position < len(data):
                data[position] = value
        sample = bytes(data)
    try:
        image = decode(sample, max_pixels=4_000_000)
    except ImageError:
        return
    assert image.mode == "RGB" and image.width > 0 and image.height > 0


def test_overload_is_refused_at_once_and_accepted_calls_succeed(embedder, index_dir):
    big = encode(photo((2000, 2000)), "PNG")  # slow enough to decode to overlap
    codes: list[grpc.StatusCode] = []
    start = threading.Barrier(12)

    def call(target: str) -> None:
        with SearchClient(target, retries=0) as client:
            start.wait()
            try:
                client.search(big, k=3)
                codes.append(grpc.StatusCode.OK)
            except LookalikeError as error:
                codes.append(error.code)

    with in_process_server(
        embedder, index_dir, max_in_flight=1, max_message_bytes=32 << 20
    ) as target:
        threads = [threading.Thread(target=call, args=(target,)) for _ in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        with SearchClient(target) as client:
            assert len(client.search(GOOD, k=1).matches) == 1
    assert len(codes) == 12
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) >= 1
    assert codes.count(grpc.StatusCode.OK) >= 1


def test_deadline_is_honoured(server_target):
    big = encode(photo((2500, 2500)), "PNG")
    with (
        SearchClient(server_target, timeout=0.01) as client,
        pytest.raises(LookalikeError) as raised,
    ):
        client.search(big, k=3)
    assert raised.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    with SearchClient(server_target) as client:
        assert len(client.search(GOOD, k=1).matches) == 1


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


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
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


def test_soak_memory_stays_flat(onnx_model, index_dir):
    port = free_port()
    server = start_server_process(onnx_model, index_dir, port, "--log-level", "WARNING")
    target = f"127.0.0.1:{port}"
    try:
        wait_until_serving(target, server)
        with SearchClient(target) as client:
            for _ in range(300):
                client.search(GOOD, k=10)
            settled = rss_mb(server.pid)
            for n in range(2000):  # one call in ten is a bad image
                if n % 10:
                    client.search(GOOD, k=10)
                else:
                    with pytest.raises(LookalikeError):
                        client.search(b"junk", k=10)
            grown = rss_mb(server.pid) - settled
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=60)
    assert grown < 25, f"resident memory grew {grown:.1f} MB over 2,000 calls"

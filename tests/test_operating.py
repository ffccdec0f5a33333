"""Warm-up before SERVING, Prometheus metrics, JSON call logs, configuration precedence."""

from __future__ import annotations

import argparse
import io
import json
import signal
import subprocess
import sys
import time
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from lookalike.client import LookalikeError, SearchClient
from lookalike.server.online.config import ConfigError, add_server_arguments, load_config
from tests.imagegen import noise_image
from tests.serving import free_port, running_server, start_server_process, wait_until_serving


def test_health_is_not_serving_and_search_unavailable_until_warm_up_ends(
    onnx_model, index_dir, gallery_dir
):
    port = free_port()
    server = start_server_process(onnx_model, index_dir, port, "--warmup-runs", "60")
    seen: list[int] = []
    early: list[LookalikeError | None] = []
    try:
        fast_reconnect = [
            ("grpc.initial_reconnect_backoff_ms", 20),
            ("grpc.min_reconnect_backoff_ms", 20),
            ("grpc.max_reconnect_backoff_ms", 50),
        ]
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=fast_reconnect) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    status = health.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                except grpc.RpcError:
                    time.sleep(0.02)
                    continue
                if not seen or seen[-1] != status:
                    seen.append(status)
                if status == health_pb2.HealthCheckResponse.NOT_SERVING and not early:
                    early.append(try_search(f"127.0.0.1:{port}", gallery_dir))
                if status == health_pb2.HealthCheckResponse.SERVING:
                    break
                time.sleep(0.02)
        with SearchClient(f"127.0.0.1:{port}") as client:
            info = client.info()
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=60)
    assert seen == [
        health_pb2.HealthCheckResponse.NOT_SERVING,
        health_pb2.HealthCheckResponse.SERVING,
    ]
    assert early[0] is not None and early[0].code == grpc.StatusCode.UNAVAILABLE
    assert "warming up" in early[0].message
    assert info.warmup_seconds > 0
    assert info.startup_seconds >= info.warmup_seconds


def try_search(target: str, gallery_dir) -> LookalikeError | None:
    query = (gallery_dir / "person_00" / "person_00_0001.jpg").read_bytes()
    with SearchClient(target, retries=0) as client:
        try:
            client.search(query, k=1)
        except LookalikeError as error:
            return error
    return None


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_count_calls_by_status_and_show_the_provider(embedder, index_dir, gallery_dir):
    good = (gallery_dir / "person_00" / "person_00_0001.jpg").read_bytes()
    with running_server(embedder, index_dir, metrics_port=0) as server:
        with SearchClient(f"127.0.0.1:{server.port}") as client:
            for _ in range(3):
                client.search(good, k=2)
            with pytest.raises(LookalikeError):
                client.search(b"not an image", k=2)
            client.info()
        metrics = scrape(server.metrics_port)
    assert metrics[("lookalike_requests_total", (("code", "OK"), ("rpc", "Search")))] == 3
    assert (
        metrics[("lookalike_requests_total", (("code", "INVALID_ARGUMENT"), ("rpc", "Search")))]
        == 1
    )
    assert metrics[("lookalike_requests_total", (("code", "OK"), ("rpc", "GetInfo")))] == 1
    assert metrics[("lookalike_execution_provider", (("provider", "CPUExecutionProvider"),))] == 1
    assert metrics[("lookalike_gallery_size", ())] == 18
    assert metrics[("lookalike_stage_seconds_count", (("stage", "embed"),))] == 3
    assert metrics[("lookalike_embed_batch_size_count", ())] == 3
    assert metrics[("lookalike_searches_in_flight", ())] == 0
    assert metrics[("lookalike_warmup_seconds", ())] > 0


def test_json_logs_parse_and_hold_no_image_bytes(onnx_model, index_dir):
    marker = "MARKER-7f3a9c-in-the-image"
    image = noise_image((64, 64))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", comment=marker.encode())
    query = buffer.getvalue()
    port = free_port()
    server = start_server_process(onnx_model, index_dir, port, "--log-format", "json")
    try:
        wait_until_serving(f"127.0.0.1:{port}", server)
        with SearchClient(f"127.0.0.1:{port}") as client:
            client.search(query, k=3)
            with pytest.raises(LookalikeError):
                client.search(query[:200] + marker.encode(), k=3)
    finally:
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=60)
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    calls = [line for line in lines if line.get("rpc") == "Search"]
    assert [call["code"] for call in calls] == ["OK", "INVALID_ARGUMENT"]
    assert calls[0]["k"] == 3 and calls[0]["embed_ms"] > 0 and calls[0]["matches"] == 3
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    assert marker not in stderr


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_server_arguments(parser)
    return parser.parse_args(list(argv))


def test_configuration_precedence_file_then_environment_then_flags(tmp_path):
    config_file = tmp_path / "lookalike.toml"
    config_file.write_text(
        'model = "m.onnx"\nindex = "idx"\nport = 1\nmax_k = 7\nlog_format = "json"\n'
    )
    env = {"LOOKALIKE_PORT": "2", "LOOKALIKE_MAX_IN_FLIGHT": "3"}
    from_file = load_config(parse("--config", str(config_file)), {})
    assert (from_file.port, from_file.max_k, from_file.log_format) == (1, 7, "json")
    from_env = load_config(parse("--config", str(config_file)), env)
    assert (from_env.port, from_env.max_in_flight, from_env.max_k) == (2, 3, 7)
    from_flag = load_config(parse("--config", str(config_file), "--port", "4"), env)
    assert (from_flag.port, from_flag.max_in_flight) == (4, 3)
    via_env_file = load_config(parse(), {"LOOKALIKE_CONFIG": str(config_file)})
    assert via_env_file.max_k == 7


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('model = "m"\nindex = "i"\nmax_kay = 3\n', "unknown setting 'max_kay'"),
        ('model = "m"\nindex = "i"\nport = "eighty"\n', "port = 'eighty' is not a valid value"),
        ('model = "m"\nindex = "i"\ndevice = "tpu"\n', "device must be one of auto, cpu, cuda"),
        ('index = "i"\n', "set --model"),
        ("port = [", "cannot read config file"),
    ],
)
def test_bad_configuration_is_refused(tmp_path, text, message):
    config_file = tmp_path / "bad.toml"
    config_file.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(parse("--config", str(config_file)), {})


def test_print_config_shows_the_effective_configuration(tmp_path):
    config_file = tmp_path / "lookalike.toml"
    config_file.write_text('model = "m.onnx"\nindex = "idx"\nmax_k = 7\n')
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "lookalike.client.cli",
            "serve",
            "--config",
            str(config_file),
            "--port",
            "6000",
            "--print-config",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"LOOKALIKE_MAX_IN_FLIGHT": "5", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert 'model = "m.onnx"' in result.stdout
    assert "port = 6000" in result.stdout
    assert "max_k = 7" in result.stdout
    assert "max_in_flight = 5" in result.stdout
    assert "# metrics_port is not set" in result.stdout

"""The server's configuration: file, then environment, then flags; bad files and settings
out of range refused at start; --print-config."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from lookalike.server.online.config import (
    ConfigError,
    ServerConfig,
    add_server_arguments,
    load_config,
)


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

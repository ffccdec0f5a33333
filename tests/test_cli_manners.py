"""What a command-line user expects: --version, defaults in --help, --json, exit codes."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from lookalike.client import SearchClient
from lookalike.client.cli import RESULT_COMMANDS, build_parser
from lookalike.common.output import lookalike_version
from tests.serving import in_process_server

ROOT = Path(__file__).resolve().parents[1]
LOOKALIKE = [sys.executable, "-m", "lookalike.client.cli"]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*LOOKALIKE, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def test_version_on_the_command_line_and_in_get_info(embedder, index_dir):
    shown = run("--version")
    assert shown.returncode == 0
    assert shown.stdout.strip() == f"lookalike {lookalike_version()}"
    assert lookalike_version() not in ("", "unknown")
    with in_process_server(embedder, index_dir) as target, SearchClient(target) as client:
        assert client.info().server_version == lookalike_version()


def test_help_shows_defaults():
    serve = run("serve", "--help").stdout
    assert "port to listen on (default: 50051); env LOOKALIKE_PORT" in " ".join(serve.split())
    search = " ".join(run("search", "--help").stdout.split())
    assert "(default: localhost:50051)" in search and "(default: INFO)" in search
    assert "(default: None)" not in search and "(default: False)" not in search


@pytest.mark.parametrize("command", RESULT_COMMANDS)
def test_every_result_command_takes_json(command):
    parser = build_parser(command)
    (commands,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert "--json" in commands.choices[command]._option_string_actions


def test_json_results_and_no_progress_bar_off_a_terminal(onnx_model, gallery_dir, tmp_path):
    sample = run("sample-gallery", str(tmp_path / "s"), "--people", "2", "--photos", "1", "--json")
    assert json.loads(sample.stdout)["images"] == 2

    index = tmp_path / "index"
    built = run(
        "index", str(gallery_dir), "--model", str(onnx_model), "--out", str(index),
        "--device", "cpu", "--json",
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    report = json.loads(built.stdout)
    assert report["rows"] == 18 and report["path"] == str(index) and report["skipped"] == []
    # stderr is a pipe here, not a terminal: no tqdm bar (it redraws with carriage returns).
    assert "\r" not in built.stderr and "img/s" not in built.stderr

    loaded = run(
        "to-milvus", str(index), "--milvus-uri", str(tmp_path / "m.db"), "--collection", "c",
        "--json",
    )  # fmt: skip
    assert loaded.returncode == 0, loaded.stderr
    assert json.loads(loaded.stdout)["rows"] == 18
    assert "\r" not in loaded.stderr


def test_reload_json(server_target):
    reloaded = run("reload", "--server", server_target, "--json")
    assert reloaded.returncode == 0, reloaded.stderr
    assert json.loads(reloaded.stdout)["gallery_size"] == 18


def test_invalid_log_level_is_a_usage_error():
    flag = run("info", "--log-level", "LOUD")
    assert flag.returncode == 2 and "invalid choice: 'LOUD'" in flag.stderr
    assert "Traceback" not in flag.stderr
    env = run("info", env={"LOOKALIKE_LOG_LEVEL": "loud"})
    assert env.returncode == 2 and "LOOKALIKE_LOG_LEVEL=LOUD" in env.stderr
    assert "Traceback" not in env.stderr
    assert run("--version", "--help").returncode == 0
    assert "Exit status: 0" in run("--help").stdout


def test_exit_one_is_a_failed_call(server_target, gallery_dir):
    query = gallery_dir / "person_00" / "person_00_0001.jpg"
    failed = run("search", str(query), "--server", server_target, "-k", "0")
    assert failed.returncode == 1 and "INVALID_ARGUMENT" in failed.stderr


def test_license_file_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
    assert "LICENSE" in project["license-files"]
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text

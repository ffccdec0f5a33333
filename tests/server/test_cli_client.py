"""The lookalike client commands against an in-process server: --version beside GetInfo's,
reload --json, exit status 1 for a failed call."""

from __future__ import annotations

import json

from lookalike.client import SearchClient
from lookalike.common import output
from lookalike.common.output import lookalike_version
from tests.serving import in_process_server, run_cli


def test_version_on_the_command_line_and_in_get_info(embedder, index_dir):
    shown = run_cli("--version")
    assert shown.returncode == 0
    assert shown.stdout.strip() == f"lookalike {lookalike_version()}"
    assert lookalike_version() not in ("", "unknown")
    with in_process_server(embedder, index_dir) as target, SearchClient(target) as client:
        assert client.info().server_version == lookalike_version()


def test_get_info_reports_the_version_the_server_runs_not_the_one_installed_since(
    embedder, index_dir, monkeypatch
):
    running = lookalike_version()
    monkeypatch.setattr(output, "version", lambda name: "99.0.0")  # an upgrade in place
    with in_process_server(embedder, index_dir) as target, SearchClient(target) as client:
        assert client.info().server_version == running != "99.0.0"


def test_reload_json(server_target):
    reloaded = run_cli("reload", "--server", server_target, "--json")
    assert reloaded.returncode == 0, reloaded.stderr
    assert json.loads(reloaded.stdout)["gallery_size"] == 18


def test_exit_one_is_a_failed_call(server_target, gallery_dir):
    query = gallery_dir / "person_00" / "person_00_0001.jpg"
    failed = run_cli("search", str(query), "--server", server_target, "-k", "0")
    assert failed.returncode == 1 and "INVALID_ARGUMENT" in failed.stderr

"""What a command-line user expects with no server: defaults in --help, --json on every
result command, a bad log level a usage error."""

from __future__ import annotations

import argparse

import pytest

from lookalike.client.cli import RESULT_COMMANDS, build_parser
from tests.serving import run_cli


def test_help_shows_defaults():
    serve = run_cli("serve", "--help").stdout
    assert "port to listen on (default: 50051); env LOOKALIKE_PORT" in " ".join(serve.split())
    search = " ".join(run_cli("search", "--help").stdout.split())
    assert "(default: localhost:50051)" in search and "(default: INFO)" in search
    assert "(default: None)" not in search and "(default: False)" not in search


@pytest.mark.parametrize("command", RESULT_COMMANDS)
def test_every_result_command_takes_json(command):
    parser = build_parser(command)
    (commands,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert "--json" in commands.choices[command]._option_string_actions


def test_invalid_log_level_is_a_usage_error():
    flag = run_cli("info", "--log-level", "LOUD")
    assert flag.returncode == 2 and "invalid choice: 'LOUD'" in flag.stderr
    assert "Traceback" not in flag.stderr
    env = run_cli("info", env={"LOOKALIKE_LOG_LEVEL": "loud"})
    assert env.returncode == 2 and "LOOKALIKE_LOG_LEVEL=LOUD" in env.stderr
    assert "Traceback" not in env.stderr
    assert run_cli("--version", "--help").returncode == 0
    assert "Exit status: 0" in run_cli("--help").stdout

"""The import rule holds where it matters most: the thin client loads no server code."""

from __future__ import annotations

import subprocess
import sys

import pytest

LOADED = (
    "print(sorted(m for m in sys.modules "
    "if m.startswith(('lookalike.server', 'lookalike.export'))))"
)


def loaded_modules_after(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", f"import sys\n{code}\n{LOADED}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.strip().splitlines()[-1]


def test_importing_the_client_loads_no_server_module():
    assert loaded_modules_after("import lookalike.client") == "[]"


@pytest.mark.parametrize("command", ["search", "info", "reload"])
def test_client_commands_load_no_server_module(command):
    code = (
        "from lookalike.client.cli import main\n"
        "try:\n"
        f"    main([{command!r}, '--help'])\n"
        "except SystemExit:\n"
        "    pass"
    )
    assert loaded_modules_after(code) == "[]"


def test_a_server_command_loads_only_its_own_module():
    code = (
        "from lookalike.client.cli import main\n"
        "try:\n"
        "    main(['serve', '--help'])\n"
        "except SystemExit:\n"
        "    pass"
    )
    loaded = loaded_modules_after(code)
    assert "'lookalike.server.cli'" in loaded
    assert "lookalike.export" not in loaded
    assert "lookalike.server.evaluation" not in loaded

#!/usr/bin/env bash
# Install lookalike with every extra into ./.venv and run the linters, the import rule and
# the test suite (arguments go to pytest) on LOOKALIKE_TEST_WORKERS pytest-xdist workers
# (default 2; 0 runs it in this process).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh
python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
ruff check .
ruff format --check .
lint-imports
python -m pytest --numprocesses "${LOOKALIKE_TEST_WORKERS:-2}" "$@"

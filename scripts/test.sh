#!/usr/bin/env bash
# Install lookalike with every extra and run the linters, the import rule and the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check -e '.[dev]'
ruff check .
ruff format --check .
lint-imports
python3 -m pytest "$@"

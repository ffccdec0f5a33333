#!/usr/bin/env bash
# Install lookalike with every extra into ./.venv and run the linters, the import rule and
# the test suite (arguments go to pytest) on LOOKALIKE_TEST_WORKERS pytest-xdist workers
# (default 2; 0 runs it in this process). Where node and npm are installed, the grpc-js
# client the contract tests use goes to .cache/grpc-js (else those tests skip).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh
python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
if command -v node >/dev/null && command -v npm >/dev/null && [ -z "${LOOKALIKE_GRPC_JS:-}" ]; then
    if npm install --prefix .cache/grpc-js --no-audit --no-fund --silent \
        @grpc/grpc-js@1.14 @grpc/proto-loader@0.8; then
        export LOOKALIKE_GRPC_JS="$PWD/.cache/grpc-js/node_modules"
    else
        echo "could not install @grpc/grpc-js: the grpc-js contract tests will skip" >&2
    fi
fi
ruff check .
ruff format --check .
lint-imports
python -m pytest --numprocesses "${LOOKALIKE_TEST_WORKERS:-2}" "$@"

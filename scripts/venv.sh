# Sourced by quickstart.sh and test.sh: make ./.venv if it is missing, then use it.
# LOOKALIKE_VENV_OPTIONS passes options to `python3 -m venv` (e.g. --system-site-packages
# to reuse packages the system Python already has).
python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "error: lookalike needs Python 3.11 or newer ($python is $("$python" --version 2>&1))" >&2
  exit 2
fi
if [ ! -x .venv/bin/python ]; then
  echo "creating the virtual environment .venv" >&2
  # shellcheck disable=SC2086
  "$python" -m venv ${LOOKALIKE_VENV_OPTIONS:-} .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install --quiet --disable-pip-version-check --upgrade pip

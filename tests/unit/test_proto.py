"""The committed stubs are exactly what proto/generate.py makes from the .proto."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_committed_stubs_are_fresh(tmp_path):
    # A subprocess: protoc in a process that has loaded TensorFlow can crash.
    subprocess.run(
        [sys.executable, str(ROOT / "proto" / "generate.py"), str(tmp_path)],
        check=True,
        timeout=120,
    )
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*_pb2*.py*"))
    assert generated, "protoc wrote nothing"
    for relative in generated:
        committed = ROOT / "proto" / relative
        assert committed.is_file(), f"{relative} is not committed"
        assert committed.read_text() == (tmp_path / relative).read_text(), (
            f"{relative} is stale: run `python proto/generate.py` and commit the result"
        )

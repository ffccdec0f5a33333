"""Generate the Python stubs of the lookalike protocol.

Run from anywhere: ``python proto/generate.py [OUT_DIR]``. With no OUT_DIR the
stubs are written beside the .proto files, where the package ships them; the
test suite writes them to a temporary folder and compares, so committed stubs
can never go stale unnoticed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parent
PROTO_FILES = sorted(PROTO_ROOT.glob("lookalike/**/*.proto"))


def generate(out_dir: Path = PROTO_ROOT) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for proto in PROTO_FILES:
        args = [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"--python_out={out_dir}",
            f"--pyi_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            str(proto.relative_to(PROTO_ROOT)),
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {proto}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Generate the lookalike protocol stubs.")
    parser.add_argument(
        "out_dir",
        nargs="?",
        type=Path,
        default=PROTO_ROOT,
        help="where to write them (default: beside the .proto files)",
    )
    generate(parser.parse_args().out_dir)

"""`lookalike export`. TensorFlow is imported only when the command runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    export = subparsers.add_parser(
        "export",
        help="convert the Keras ResNet101 embedder to ONNX",
        description="Build ResNet101(include_top=False, pooling='avg') and convert it to ONNX.",
    )
    export.add_argument(
        "--weights",
        default="imagenet",
        help="imagenet (Keras' download, the default), none (random, seeded) "
        "or PATH to a ResNet101 no-top weights file",
    )
    export.add_argument("--image-size", type=int, default=224, help="input side in pixels")
    export.add_argument("--out", type=Path, default=Path("model.onnx"))
    export.add_argument("--opset", type=int, default=17)
    export.add_argument("--seed", type=int, default=0, help="seed of random weights")
    export.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lookalike.export.convert import ExportConfig, export_onnx
    from lookalike.export.model import ExportError

    try:
        report = export_onnx(ExportConfig.from_args(args))
    except ExportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    size_mb = report.path.stat().st_size / 1e6
    print(
        f"wrote {report.path} ({size_mb:.0f} MB, fingerprint {report.fingerprint}) "
        f"in {report.seconds:.0f} s; Keras vs onnxruntime: max abs diff "
        f"{report.max_abs_diff:.2e}, max rel diff {report.max_rel_diff:.2e}"
    )
    return 0

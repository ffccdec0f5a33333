"""`lookalike export`, `train` and `quantize`; TensorFlow is imported only when needed."""

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
    export.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="a model.keras from `lookalike train` instead of --weights",
    )
    export.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="input side in pixels (default 224, or the checkpoint's)",
    )
    export.add_argument("--out", type=Path, default=Path("model.onnx"))
    export.add_argument("--opset", type=int, default=17)
    export.add_argument("--seed", type=int, default=0, help="seed of random weights")
    export.set_defaults(func=run)

    train = subparsers.add_parser(
        "train",
        help="fine-tune the embedder on faces",
        description="Fine-tune ResNet101 on the identities of DATA_DIR/<person>/ "
        "(Adamax, batch 16, cosine-softmax identity head) and save model.keras.",
    )
    train.add_argument("data", type=Path, metavar="DATA_DIR")
    train.add_argument("--out", type=Path, default=Path("model.keras"))
    train.add_argument("--weights", default="imagenet", help="imagenet | none | PATH")
    train.add_argument("--image-size", type=int, default=112)
    train.add_argument("--epochs", type=int, default=4)
    train.add_argument("--batch-size", type=int, default=16)
    train.add_argument("--learning-rate", type=float, default=1e-3)
    train.add_argument(
        "--trainable-from",
        default="conv4_block1_1_conv",
        help="first ResNet101 layer to train; earlier layers stay frozen",
    )
    train.add_argument("--crop", choices=["none", "center", "detect"], default="center")
    train.add_argument("--crop-fraction", type=float, default=None)
    train.add_argument(
        "--split",
        choices=["all", "train"],
        default="train",
        help="people to train on; never the test split",
    )
    train.add_argument("--max-images", type=int, default=None)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument(
        "--resume", action="store_true", help="continue from the last epoch checkpoint beside --out"
    )
    train.set_defaults(func=run_train)

    quantize = subparsers.add_parser(
        "quantize",
        help="make an int8 copy of an exported embedder",
        description="Quantise MODEL to int8 (static QDQ, onnxruntime's tools), with activation "
        "ranges calibrated on images of GALLERY_DIR/<person>/.",
    )
    quantize.add_argument("model", type=Path, metavar="MODEL")
    quantize.add_argument("--calibration", type=Path, required=True, metavar="GALLERY_DIR")
    quantize.add_argument("--out", type=Path, required=True)
    quantize.add_argument("--images", type=int, default=64, help="calibration images")
    quantize.add_argument(
        "--split", choices=["all", "train"], default="all", help="people to calibrate on"
    )
    quantize.add_argument("--crop", choices=["none", "center", "detect"], default=None)
    quantize.add_argument("--crop-fraction", type=float, default=None)
    quantize.set_defaults(func=run_quantize)


def run_train(args: argparse.Namespace) -> int:
    from lookalike.export.model import ExportError
    from lookalike.export.train import TrainConfig, TrainingError, train
    from lookalike.server.cli import crop_from_args

    config = TrainConfig(
        data=args.data,
        out=args.out,
        weights=args.weights,
        image_size=args.image_size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        trainable_from=args.trainable_from,
        crop=crop_from_args(args),
        split=args.split,
        max_images=args.max_images,
        seed=args.seed,
        resume=args.resume,
    )
    try:
        print(f"wrote {train(config)}")
    except (ExportError, TrainingError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def run_quantize(args: argparse.Namespace) -> int:
    from lookalike.export.quantize import QuantizeConfig, QuantizeError, quantize
    from lookalike.server.cli import crop_from_args
    from lookalike.server.embedder import ModelError

    try:
        report = quantize(QuantizeConfig.from_args(args, crop_from_args(args)))
    except (QuantizeError, ModelError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(
        f"wrote {report.path} ({report.path.stat().st_size / 1e6:.0f} MB, fingerprint "
        f"{report.fingerprint}) in {report.seconds:.0f} s from {report.images} calibration "
        f"images; fp32 vs int8 embeddings of those images: min cosine {report.min_cosine:.4f}"
    )
    return 0


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

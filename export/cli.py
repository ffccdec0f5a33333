"""`lookalike export`, `train` and `quantize`; TensorFlow is imported only when they run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lookalike.common.output import emit
from lookalike.export.training.losses import BATCHNORMS, FITS, LOSSES, POOLINGS
from lookalike.server.options import (
    add_crop_arguments,
    add_seed_argument,
    add_split_argument,
    add_teacher_argument,
    add_weights_argument,
    config_from_args,
    crop_from_args,
)


def add_export_parser(subparsers: argparse._SubParsersAction) -> None:
    export = subparsers.add_parser(
        "export",
        description="Build ResNet101(include_top=False, pooling='avg'), or dlib's face "
        "network from its weights, and convert it to ONNX.",
    )
    add_weights_argument(export)
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
    export.add_argument(
        "--architecture",
        choices=("resnet101", "dlib-resnet", "pixels"),
        default="resnet101",
        help="dlib-resnet: dlib's face recognition network (150 px aligned chips, 128-d), "
        "read from its published weights (--weights dlib, the default for it, or PATH to "
        "the .dat); pixels: no network, the input pixels themselves (each image's mean removed, "
        "L2-normalised): the floor a learned model must beat",
    )
    export.add_argument(
        "--mirror",
        action="store_true",
        help="embed each image and its mirror image and serve the mean of the two (twice "
        "the compute; see docs/RESULTS.md)",
    )
    export.add_argument("--out", type=Path, default=Path("model.onnx"))
    export.add_argument("--opset", type=int, default=17)
    add_seed_argument(export, "random weights")
    export.set_defaults(func=run_export)


def add_train_parser(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser(
        "train",
        description="Fine-tune ResNet101 on the identities of DATA_DIR/<person>/ (Adamax, "
        "batch 16, cosine-softmax identity head), or with --teacher, teach it to embed faces "
        "as a pretrained face model does (distillation on aligned faces); save model.keras.",
    )
    train.add_argument("data", type=Path, metavar="DATA_DIR")
    train.add_argument("--out", type=Path, default=Path("model.keras"))
    train.add_argument(
        "--architecture",
        choices=("resnet101", "dlib-resnet"),
        default=None,
        help="resnet101 (the default), or dlib-resnet: fine-tune dlib's face network from its "
        "published weights (150 px aligned chips; every layer trains unless "
        "--trainable-from conv<N>)",
    )
    add_weights_argument(train)
    train.add_argument(
        "--image-size", type=int, default=None, help="112; 64 with --teacher; 150 for dlib-resnet"
    )
    train.add_argument("--batch-size", type=int, default=None, help="16; 32 with --teacher")
    train.add_argument("--learning-rate", type=float, default=1e-3)
    train.add_argument(
        "--trainable-from",
        default=None,
        help="first ResNet101 layer to train, earlier ones frozen (conv4_block1_1_conv). "
        "With --teacher the frozen layers run once per image, their outputs cached: name "
        "the first layer of a block (e.g. conv5_block1_0_conv), or head (the default: "
        "only the dense head trains)",
    )
    add_crop_arguments(train, default=None)
    add_split_argument(train, default="train", allow_test=False)
    train.add_argument("--max-images", type=int, default=None)
    add_seed_argument(train, "random weights, shuffling and augmentation")
    train.add_argument(
        "--resume", action="store_true", help="continue from the last checkpoint beside --out"
    )
    identity = train.add_argument_group("identity training (without --teacher)")
    identity.add_argument("--epochs", type=int, default=4)
    teacher = train.add_argument_group("distillation (with --teacher)")
    add_teacher_argument(teacher, "learn from this pretrained face model's descriptors")
    teacher.add_argument(
        "--loss",
        choices=LOSSES,
        default=None,
        help="whitened: cosine to whitened descriptors; relational: batch similarities; "
        "both (the default)",
    )
    teacher.add_argument(
        "--batchnorm",
        choices=BATCHNORMS,
        default=None,
        help="frozen: BatchNormalization stays at its initial statistics and is not trained "
        "(the default); train: batch statistics while training",
    )
    teacher.add_argument(
        "--features-from",
        default=None,
        help="the ResNet101 layer whose output the head reads: conv2_block3_out (the default; "
        "read best on held-out people, see docs/RESULTS.md) or any other, e.g. "
        "conv5_block3_out (the last)",
    )
    teacher.add_argument(
        "--pooling",
        choices=POOLINGS,
        default=None,
        help="what the head sees of that layer's feature map: flatten, all of it (keeps where "
        "on the face each feature was; the default), or avg, its average",
    )
    teacher.add_argument(
        "--fit",
        choices=FITS,
        default=None,
        help="ridge: fit the head in closed form to the whitened descriptors (the default; "
        "one solve, about a minute on LFW here), then gradient steps only if "
        "--minutes/--steps are given; gradient: a random head, then steps of --loss",
    )
    teacher.add_argument(
        "--augment",
        type=int,
        default=None,
        help="ridge: also fit N jittered copies of each training face (moved, scaled, "
        "turned, mirrored, relit), each described by the teacher as the student sees it (0)",
    )
    teacher.add_argument(
        "--fresh",
        action="store_true",
        default=None,
        help="gradient steps on fresh samples: each step augments the aligned faces anew and "
        "the teacher (dlib's network, ported, in the same graph) describes them; layers "
        "before --trainable-from run every step instead of once",
    )
    teacher.add_argument(
        "--mixed-precision",
        action="store_true",
        default=None,
        help="float16 compute for --fresh steps (a GPU's tensor cores; slower on a CPU)",
    )
    teacher.add_argument(
        "--ridge-penalty",
        type=float,
        default=None,
        help="ridge penalty, times the mean squared norm of a centred feature row (0.3)",
    )
    teacher.add_argument(
        "--minutes", type=float, default=None, help="gradient training time budget"
    )
    teacher.add_argument("--steps", type=int, default=None, help="or a number of steps")
    teacher.add_argument("--embedding-size", type=int, default=None, help="of the head (128)")
    teacher.add_argument(
        "--eval-every-minutes",
        type=float,
        default=None,
        help="validation hit@1 and a checkpoint this often (10)",
    )
    train.set_defaults(func=run_train)


def add_quantize_parser(subparsers: argparse._SubParsersAction) -> None:
    quantize = subparsers.add_parser(
        "quantize",
        description="Quantise MODEL to int8 (static QDQ, onnxruntime's tools), with activation "
        "ranges calibrated on images of GALLERY_DIR/<person>/.",
    )
    quantize.add_argument("model", type=Path, metavar="MODEL")
    quantize.add_argument("--calibration", type=Path, required=True, metavar="GALLERY_DIR")
    quantize.add_argument("--out", type=Path, required=True)
    quantize.add_argument("--images", type=int, default=64, help="calibration images")
    add_split_argument(quantize, allow_test=False)
    add_crop_arguments(quantize)
    quantize.set_defaults(func=run_quantize)


def run_train(args: argparse.Namespace) -> int:
    from lookalike.export.model import ExportError
    from lookalike.export.training.train import TrainConfig, TrainingError, train

    crop = crop_from_args(args)
    given = {"crop": crop} if crop is not None else {}
    try:
        if args.teacher and args.architecture == "dlib-resnet":
            raise TrainingError(
                "--teacher trains a ResNet101 student; dlib-resnet is the teacher's own network "
                "(fine-tune it without --teacher)"
            )
        if args.teacher:
            from lookalike.export.training.distill import DistillConfig, distill

            written = distill(config_from_args(DistillConfig, args, **given))
        else:
            written = train(config_from_args(TrainConfig, args, **given))
        emit(args.json, f"wrote {written}", {"path": str(written)})
    except (ExportError, TrainingError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def run_quantize(args: argparse.Namespace) -> int:
    from lookalike.export.quantize import QuantizeConfig, QuantizeError, quantize
    from lookalike.server.vision.embedder import ModelError

    try:
        report = quantize(config_from_args(QuantizeConfig, args, crop=crop_from_args(args)))
    except (QuantizeError, ModelError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    emit(
        args.json,
        f"wrote {report.path} ({report.path.stat().st_size / 1e6:.0f} MB, fingerprint "
        f"{report.fingerprint}) in {report.seconds:.0f} s from {report.images} calibration "
        f"images; fp32 vs int8 embeddings of those images: min cosine {report.min_cosine:.4f}",
        report,
    )
    return 0


def run_export(args: argparse.Namespace) -> int:
    from lookalike.export.convert import ExportConfig, export_onnx
    from lookalike.export.model import ExportError

    try:
        report = export_onnx(config_from_args(ExportConfig, args))
    except ExportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    size_mb = report.path.stat().st_size / 1e6
    emit(
        args.json,
        f"wrote {report.path} ({size_mb:.0f} MB, fingerprint {report.fingerprint}) "
        f"in {report.seconds:.0f} s; Keras vs onnxruntime: max abs diff "
        f"{report.max_abs_diff:.2e}, max rel diff {report.max_rel_diff:.2e}",
        report,
    )
    return 0

"""`lookalike serve` and `lookalike index`.

Imported by the CLI dispatcher even on a thin-client install, so the heavy
server dependencies are imported inside the commands, not here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lookalike.server.config import add_server_arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser(
        "serve",
        help="run the gRPC search server",
        description="Serve Search over a gallery index with the model that built it.",
    )
    add_server_arguments(serve)
    serve.set_defaults(func=run_serve)

    index = subparsers.add_parser(
        "index",
        help="embed a gallery folder into an index",
        description="Embed every image under GALLERY_DIR/<label>/ into INDEX_DIR.",
    )
    index.add_argument("gallery", type=Path, metavar="GALLERY_DIR")
    index.add_argument("--model", type=Path, required=True, help="the ONNX embedder")
    index.add_argument("--out", type=Path, required=True, metavar="INDEX_DIR")
    add_crop_arguments(index)
    add_split_argument(index)
    index.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    index.add_argument("--batch-size", type=int, default=16)
    index.set_defaults(func=run_index)


def add_split_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--split",
        choices=["all", "train", "test"],
        default="all",
        help="only the people of this split (a fixed hash of each name puts 30%% in test)",
    )


def add_crop_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--crop",
        choices=["none", "center", "detect"],
        default=None,
        help="none: the whole frame; center: its middle (for pre-aligned sets like LFW); "
        "detect: the largest face OpenCV finds, else the centre; "
        "default: the crop the model was trained with, else none",
    )
    parser.add_argument(
        "--crop-fraction",
        type=float,
        default=None,
        help="side of the centre crop as a share of the shorter side (0.5)",
    )


def crop_from_args(args: argparse.Namespace):  # noqa: ANN201 (Crop, imported lazily)
    from lookalike.server.imaging import Crop

    if args.crop is None:
        return None
    return Crop(args.crop) if args.crop_fraction is None else Crop(args.crop, args.crop_fraction)


def run_serve(args: argparse.Namespace) -> int:
    from lookalike.server.app import serve
    from lookalike.server.auth import AuthError
    from lookalike.server.config import ConfigError, load_config
    from lookalike.server.embedder import ModelError
    from lookalike.server.index import InvalidIndexError
    from lookalike.server.logs import configure_logging

    try:
        config = load_config(args)
        if args.print_config:
            print(config.to_toml(), end="")
            return 0
        configure_logging(args.log_level, config.log_format)
        return serve(config)
    except (ConfigError, ModelError, InvalidIndexError, AuthError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def run_index(args: argparse.Namespace) -> int:
    from lookalike.server.embedder import Embedder, ModelError
    from lookalike.server.index import InvalidIndexError, build_index

    crop = crop_from_args(args)
    try:
        embedder = Embedder(args.model, args.device)
        print(
            f"embedding on {embedder.provider} with model {embedder.info.fingerprint}",
            file=sys.stderr,
        )
        report = build_index(
            args.gallery, embedder, args.out, crop, args.batch_size, split=args.split
        )
    except (ModelError, InvalidIndexError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(
        f"indexed {report.rows} images into {report.path} in {report.seconds:.1f} s "
        f"({report.images_per_second:.1f} images/s), {len(report.skipped)} skipped"
    )
    return 0

"""`lookalike serve` and `lookalike index`.

Imported by the CLI dispatcher even on a thin-client install, so the heavy
server dependencies are imported inside the commands, not here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lookalike.server.config import MILVUS_INDEX_TYPES, add_server_arguments


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
    where = index.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", type=Path, metavar="INDEX_DIR", help="build a new index here")
    where.add_argument(
        "--into",
        type=Path,
        metavar="INDEX_DIR",
        help="with --append: the index to add the gallery's new files to",
    )
    index.add_argument(
        "--append",
        action="store_true",
        help="embed only files whose content --into does not hold yet, and "
        "write a new version of it",
    )
    index.add_argument(
        "--resume",
        action="store_true",
        help="continue a build that was killed, from what it already embedded",
    )
    index.add_argument(
        "--max-failure-share",
        type=float,
        default=0.05,
        help="fail when more than this share of files cannot be read (0.05)",
    )
    add_crop_arguments(index)
    add_split_argument(index)
    index.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    index.add_argument("--batch-size", type=int, default=16)
    index.add_argument(
        "--backend",
        choices=["memmap", "milvus"],
        default="memmap",
        help="milvus: also load the finished index into --collection at --milvus-uri",
    )
    add_milvus_arguments(index, required=False)
    index.set_defaults(func=run_index)

    to_milvus = subparsers.add_parser(
        "to-milvus",
        help="load an index into a Milvus collection, without re-embedding",
        description="Make a Milvus collection hold exactly the rows of INDEX_DIR. Loading "
        "again adds no duplicates and deletes rows whose files left the index.",
    )
    to_milvus.add_argument("index", type=Path, metavar="INDEX_DIR")
    add_milvus_arguments(to_milvus, required=True)
    to_milvus.set_defaults(func=run_to_milvus)


def add_milvus_arguments(parser: argparse.ArgumentParser, required: bool) -> None:
    parser.add_argument(
        "--milvus-uri",
        required=required,
        help="a Milvus Lite folder ending in .db, or a Milvus server (http://host:19530)",
    )
    parser.add_argument("--collection", required=required, help="the collection to load")
    parser.add_argument(
        "--index-type",
        choices=MILVUS_INDEX_TYPES,
        default="FLAT",
        help="FLAT: exact, the same neighbours as scikit-learn; IVF_FLAT, HNSW: approximate "
        "(`lookalike eval --milvus-uri` reports their recall)",
    )
    parser.add_argument(
        "--replace",
        action="store_true",
        help="drop the collection first if it holds another model's vectors or index type",
    )
    parser.add_argument(
        "--milvus-token-file", type=Path, default=None, help="a file holding the Milvus token"
    )


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
    from lookalike.server.backend import BackendUnavailable
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
    except (
        ConfigError,
        ModelError,
        InvalidIndexError,
        AuthError,
        BackendUnavailable,
        OSError,
        ValueError,
    ) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def run_index(args: argparse.Namespace) -> int:
    from lookalike.server.build import build_index
    from lookalike.server.embedder import Embedder, ModelError
    from lookalike.server.index import InvalidIndexError

    if args.append != (args.into is not None):
        print("error: --append goes with --into INDEX_DIR (and --out without it)", file=sys.stderr)
        return 2
    if (args.backend == "milvus") != bool(args.milvus_uri and args.collection):
        print("error: --backend milvus goes with --milvus-uri and --collection", file=sys.stderr)
        return 2
    out = args.into or args.out
    try:
        embedder = Embedder(args.model, args.device)
        print(
            f"embedding on {embedder.provider} with model {embedder.info.fingerprint}",
            file=sys.stderr,
        )
        report = build_index(
            args.gallery,
            embedder,
            out,
            crop_from_args(args),
            args.batch_size,
            split=args.split,
            resume=args.resume,
            append_to=args.into,
            max_failure_share=args.max_failure_share,
        )
    except (ModelError, InvalidIndexError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(
        f"indexed {report.rows} images into {report.path}: {report.embedded} embedded in "
        f"{report.seconds:.1f} s ({report.images_per_second:.1f} images/s), "
        f"{report.duplicates} duplicates, {len(report.skipped)} skipped"
    )
    for skipped in report.skipped:
        print(f"  skipped {skipped['path']}: {skipped['error']}")
    return (
        run_to_milvus(argparse.Namespace(**{**vars(args), "index": out})) if args.milvus_uri else 0
    )


def run_to_milvus(args: argparse.Namespace) -> int:
    from lookalike.server.backend import BackendUnavailable
    from lookalike.server.index import GalleryIndex, InvalidIndexError
    from lookalike.server.milvus import MilvusTarget, load_index, read_token

    token = read_token(args.milvus_token_file)
    try:
        report = load_index(
            GalleryIndex.open(args.index),
            MilvusTarget(args.milvus_uri, args.collection, token),
            args.index_type,
            replace_collection=args.replace,
        )
    except (InvalidIndexError, BackendUnavailable, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(
        f"loaded {report.rows} rows into collection {report.collection} at {args.milvus_uri} "
        f"({report.index_type}, {report.deleted} stale rows deleted) in {report.seconds:.1f} s"
    )
    return 0

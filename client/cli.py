"""The `lookalike` command: search, info and reload here; the others loaded when asked for.

The thin client install ships the code of every command but only the client's
dependencies. A command of another part of lookalike is imported only when it
is the one run, so `lookalike search` loads no server module; one whose extra
is missing says which to install.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from dataclasses import asdict, replace
from pathlib import Path

from lookalike.client._wire import limit_note
from lookalike.client.client import SearchClient
from lookalike.client.values import Box, Faces, LookalikeError, NewImage, SearchResult
from lookalike.common.logs import configure_logging
from lookalike.common.output import LOG_LEVELS, emit, lookalike_version
from lookalike.common.tokens import TokenFileError, read_token

DEFAULT_SERVER = "localhost:50051"


# The extra of packages that only some uses of a command need.
EXTRA_OF_PACKAGE = {
    "dlib": "faces",
    "face_recognition_models": "faces",
    "pymilvus": "milvus",
    "faiss": "faiss",
    "matplotlib": "eval",
    "tensorflow": "export",
}


class MissingExtra(Exception):
    """A command's module needs a package its extra would install."""

    def __init__(self, command: str, package: str | None, extra: str) -> None:
        extra = EXTRA_OF_PACKAGE.get((package or "").split(".")[0], extra)
        super().__init__(
            f"`lookalike {command}` needs {package}, which is not installed; "
            f"install it with: pip install 'lookalike[{extra}]'"
        )


# Commands that print a result and so take --json, beyond search, info and eval.
RESULT_COMMANDS = (
    "index",
    "to-milvus",
    "export",
    "train",
    "quantize",
    "reload",
    "sample-gallery",
    "add",
    "remove",
    "list",
    "compact",
)


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Adds "(default: X)" to an option's help unless it is unset or already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        default = action.default
        if (
            default in (None, False, argparse.SUPPRESS, "", [])
            or not action.option_strings
            or "default" in help_text
            or f"({default})" in help_text
        ):
            return help_text
        return f"{help_text} (default: %(default)s)"


# The commands of the other parts: the function that adds each one's parser
# ("module:function"), the extra that brings its dependencies, and its line in
# `lookalike --help`.
COMMANDS = {
    "serve": ("lookalike.server.cli:add_serve_parser", "server", "run the gRPC search server"),
    "index": (
        "lookalike.server.cli:add_index_parser",
        "server",
        "embed a gallery folder into an index",
    ),
    "to-milvus": (
        "lookalike.server.cli:add_to_milvus_parser",
        "milvus",
        "load an index into a Milvus collection, without re-embedding",
    ),
    "sample-gallery": (
        "lookalike.server.cli:add_sample_gallery_parser",
        "server",
        "draw a small gallery of synthetic faces to try lookalike on",
    ),
    "eval": (
        "lookalike.server.evaluation.cli:add_eval_parser",
        "eval",
        "measure retrieval and verification quality",
    ),
    "export": (
        "lookalike.export.cli:add_export_parser",
        "export",
        "convert the Keras ResNet101 embedder to ONNX",
    ),
    "train": ("lookalike.export.cli:add_train_parser", "export", "fine-tune the embedder on faces"),
    "quantize": (
        "lookalike.export.cli:add_quantize_parser",
        "export",
        "make an int8 copy of an exported embedder",
    ),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser, with the real parser of ``command`` alone among the other parts' commands
    (the rest are listed by name and help line, without importing their modules)."""
    parser = argparse.ArgumentParser(
        prog="lookalike",
        description="Reverse image search for faces.",
        epilog="Exit status: 0 done; 1 the server answered with an error (a failed call); "
        "2 a usage or input error here (bad option, missing file or extra, bad config).",
    )
    parser.add_argument("--version", action="version", version=f"lookalike {lookalike_version()}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _register_client_commands(subparsers)
    for name, (adder, extra, help_line) in COMMANDS.items():
        if name != command:
            subparsers.add_parser(name, help=help_line, add_help=False)
            continue
        module_name, _, function = adder.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            raise MissingExtra(name, error.name, extra) from None
        getattr(module, function)(subparsers)
        subparsers.choices[name].set_defaults(extra=extra)
    for name, command_parser in subparsers.choices.items():
        if name not in COMMANDS or name == command:
            command_parser.formatter_class = DefaultsHelpFormatter
            command_parser.add_argument(
                "--log-level",
                type=str.upper,
                choices=LOG_LEVELS,
                default=os.environ.get("LOOKALIKE_LOG_LEVEL", "INFO").upper(),
                help="how much to log (env LOOKALIKE_LOG_LEVEL)",
            )
            if name in RESULT_COMMANDS:
                command_parser.add_argument(
                    "--json", action="store_true", help="print the result as JSON"
                )
    return parser


def _register_client_commands(subparsers: argparse._SubParsersAction) -> None:
    search = subparsers.add_parser("search", help="find the gallery images most like a photo")
    search.add_argument("image", type=Path, metavar="IMAGE")
    search.add_argument("-k", type=int, default=20, help="how many matches (default 20)")
    search.add_argument(
        "--max-distance",
        type=float,
        default=None,
        metavar="D",
        help="drop matches farther than D (default: the server's --max-distance, if any)",
    )
    search.add_argument("--json", action="store_true", help="print JSON instead of a table")
    search.add_argument(
        "--sheet",
        type=Path,
        default=None,
        metavar="PNG",
        help="also draw a contact sheet of the query and its matches",
    )
    search.add_argument(
        "--label", default=None, help="the query's person: the sheet marks matches of that person"
    )
    faces = search.add_argument_group("faces", "which faces of the photo to search")
    chosen = faces.add_mutually_exclusive_group()
    chosen.add_argument(
        "--faces",
        choices=("largest", "all"),
        default="largest",
        help="the largest face (default), or every face: one table (and sheet row) per face",
    )
    chosen.add_argument("--point", type=_numbers(2), metavar="X,Y", help="the face at this point")
    chosen.add_argument(
        "--box", type=_numbers(4), metavar="L,T,R,B", help="the face that overlaps this box most"
    )
    faces.add_argument(
        "--max-faces",
        type=int,
        default=0,
        help="with --faces all: at most this many (default: the server's most)",
    )
    faces.add_argument(
        "--faces-only",
        action="store_true",
        help="fail (NOT_FOUND) when the photo has no such face, instead of searching the "
        "crop's fallback region",
    )
    add_connection_arguments(search)
    search.set_defaults(func=run_search, extra="client")

    info = subparsers.add_parser("info", help="show the server's model, index and device")
    info.add_argument("--json", action="store_true", help="print JSON instead of lines")
    info.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="first wait up to SECONDS for the server to be ready (health SERVING)",
    )
    add_connection_arguments(info)
    info.set_defaults(func=run_info, extra="client")

    reload = subparsers.add_parser("reload", help="make the server switch to a rebuilt index")
    reload.add_argument(
        "--index",
        default="",
        help="a folder name under the server's --index-root, or a collection for a "
        "server on Milvus (default: the index it serves); send the admin token "
        "with --token-file when the server has one",
    )
    add_connection_arguments(reload)
    reload.set_defaults(func=run_reload, extra="client")
    _register_gallery_commands(subparsers)


def _register_gallery_commands(subparsers: argparse._SubParsersAction) -> None:
    """Enrolment and erasure on a running server (admin calls: --token-file the admin token)."""
    add = subparsers.add_parser("add", help="enrol images of one person on the live server")
    add.add_argument("paths", type=Path, nargs="+", metavar="PATH")
    add.add_argument("--label", required=True, help="the person (a folder name in the gallery)")
    add.add_argument(
        "--external-id",
        action="append",
        default=None,
        help="your own id of each image, in the order of the paths (default: its content id)",
    )
    add_connection_arguments(add)
    add.set_defaults(func=run_add, extra="client")

    remove = subparsers.add_parser("remove", help="erase images from the live server")
    remove.add_argument("--id", action="append", default=[], help="a content or external id")
    remove.add_argument("--label", action="append", default=[], help="every image of a person")
    remove.add_argument(
        "--image", type=Path, action="append", default=[], help="the image of exactly this file"
    )
    remove.add_argument(
        "--delete-files", action="store_true", help="also delete their files from the gallery"
    )
    add_connection_arguments(remove)
    remove.set_defaults(func=run_remove, extra="client")

    listing = subparsers.add_parser("list", help="list the images of the live gallery")
    listing.add_argument("--label", default="", help="only this person's")
    add_connection_arguments(listing)
    listing.set_defaults(func=run_list, extra="client")

    compact = subparsers.add_parser(
        "compact", help="fold added and removed images into a new index version"
    )
    add_connection_arguments(compact)
    compact.set_defaults(func=run_compact, extra="client")


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server",
        default=os.environ.get("LOOKALIKE_SERVER", DEFAULT_SERVER),
        help="HOST:PORT of the server (env LOOKALIKE_SERVER)",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")
    parser.add_argument(
        "--token-file",
        type=Path,
        default=os.environ.get("LOOKALIKE_TOKEN_FILE"),
        help="send the bearer token in this file (env LOOKALIKE_TOKEN_FILE)",
    )
    parser.add_argument("--tls", action="store_true", help="connect with TLS")
    parser.add_argument(
        "--ca",
        type=Path,
        default=None,
        help="PEM file of the CA that signed the server's certificate (implies --tls)",
    )


def connect(args: argparse.Namespace) -> SearchClient:
    token = read_token(args.token_file) if args.token_file else None
    return SearchClient(args.server, timeout=args.timeout, token=token, tls=args.tls, ca=args.ca)


def _numbers(count: int):  # noqa: ANN202 (an argparse type)
    """An argparse type: ``count`` whole numbers separated by commas."""

    def parse(text: str) -> tuple[int, ...]:
        try:
            values = tuple(int(part) for part in text.split(","))
        except ValueError:
            values = ()
        if len(values) != count:
            raise argparse.ArgumentTypeError(
                f"expected {count} whole numbers like 1,2, got {text!r}"
            )
        return values

    return parse


def faces_of(args: argparse.Namespace) -> Faces:
    """The search's ``faces`` argument from --faces, --point or --box."""
    if args.point:
        return args.point
    if args.box:
        return Box(*args.box)
    return args.faces


def format_faces(result: SearchResult) -> str:
    """One table per face of the query, each headed by where the face is."""
    parts = []
    for face in result.faces:
        box = face.box
        head = (
            f"face {face.number} at ({box.left}, {box.top}, {box.right}, {box.bottom}), "
            f"detector score {face.score:.2f}"
        )
        table = format_table(replace(result, matches=face.matches, crop_note=face.crop_note))
        parts.append(f"{head}\n{table}")
    return "\n\n".join(parts)


def format_table(result: SearchResult) -> str:
    if not result.matches:
        return limit_note(result) or "no match"
    rows = [("rank", "distance", "label", "path")]
    rows += [(str(m.rank), f"{m.distance:.4f}", m.label, m.path) for m in result.matches]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [
        f"{rank:>{widths[0]}}  {distance:>{widths[1]}}  {label:<{widths[2]}}  {path}"
        for rank, distance, label, path in rows
    ]
    if result.crop_note:
        lines.append(f"note: {result.crop_note}")
    if limit_note(result):
        lines.append(f"note: {limit_note(result)}")
    t = result.timings
    lines.append(
        f"model {result.model_fingerprint}, index {result.index_version}; "
        f"decode {t.decode_ms:.1f} ms, embed {t.embed_ms:.1f} ms, "
        f"search {t.search_ms:.1f} ms, total {t.total_ms:.1f} ms"
    )
    return "\n".join(lines)


def run_search(args: argparse.Namespace) -> int:
    if not args.image.is_file():
        print(f"error: no such image file: {args.image}", file=sys.stderr)
        return 2
    query = args.image.read_bytes()
    faces = faces_of(args)
    with connect(args) as client:
        result = client.search(
            query,
            k=args.k,
            thumbnails=args.sheet is not None,
            max_distance=args.max_distance,
            faces=faces,
            max_faces=args.max_faces,
            faces_only=args.faces_only,
        )
    by_face = faces == "all" or len(result.faces) > 1
    if args.sheet:
        write_sheet(args, query, result, by_face)
    if args.json:
        print(json.dumps(result_to_json(result), indent=2))
    else:
        print(format_faces(result) if by_face else format_table(result))
    return 0


def result_to_json(result: SearchResult) -> dict[str, object]:
    """The result as JSON; thumbnails become their size in bytes."""
    body = asdict(result)
    for match in [*body["matches"], *(m for face in body["faces"] for m in face["matches"])]:
        match["thumbnail"] = len(match["thumbnail"]) if match["thumbnail"] else None
    return body


def write_sheet(
    args: argparse.Namespace, query: bytes, result: SearchResult, by_face: bool = False
) -> None:
    from lookalike.client.sheet import render_faces_sheet, render_sheet
    from lookalike.common.files import atomic_path

    title = f"query {args.image.name}"
    if by_face:
        sheet = render_faces_sheet(query, result, args.label, title=title)
    else:
        sheet = render_sheet(query, result, args.label, title=title)
    with atomic_path(args.sheet) as staging:
        sheet.save(staging, format="PNG")
    print(f"wrote {args.sheet} ({sheet.width}x{sheet.height})", file=sys.stderr)


def run_info(args: argparse.Namespace) -> int:
    with connect(args) as client:
        if args.wait > 0:
            client.wait_until_ready(args.wait)
        info = client.info()
    if args.json:
        print(json.dumps(asdict(info), indent=2))
    else:
        fields = asdict(info)
        width = max(map(len, fields))
        for key, value in fields.items():
            print(f"{key:>{width}}: {value}")
    return 0


def run_reload(args: argparse.Namespace) -> int:
    with connect(args) as client:
        version, size = client.reload_index(args.index)
    emit(
        args.json,
        f"serving index {version} ({size} images)",
        {"index_version": version, "gallery_size": size},
    )
    return 0


def run_add(args: argparse.Namespace) -> int:
    external = args.external_id or []
    if external and len(external) != len(args.paths):
        print("error: give one --external-id per PATH, or none", file=sys.stderr)
        return 2
    missing = [str(path) for path in args.paths if not path.is_file()]
    if missing:
        print(f"error: no such image file: {', '.join(missing)}", file=sys.stderr)
        return 2
    images = [
        NewImage(path, args.label, external[n] if external else "")
        for n, path in enumerate(args.paths)
    ]
    with connect(args) as client:
        results = client.add_images(images)
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
    for r in [] if args.json else results:
        where = r.path or r.error
        print(f"{r.result:<16} {args.paths[r.position]}  {r.id}  {where}")
    return 1 if any(r.result == "failed" for r in results) else 0


def run_remove(args: argparse.Namespace) -> int:
    if not (args.id or args.label or args.image):
        print("error: say what to remove: --id, --label or --image", file=sys.stderr)
        return 2
    with connect(args) as client:
        results = client.remove_images(args.id, args.label, args.image, args.delete_files)
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
        return 0
    given = {"id": args.id, "label": args.label, "image": [str(i) for i in args.image]}
    for r in results:
        print(f"{r.result:<10} {r.selector} {given[r.selector][r.position]}")
        for image in r.removed:
            deleted = ", file deleted" if image.file_deleted else ""
            print(f"  {image.id}  {image.label}  {image.path}{deleted}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    with connect(args) as client:
        entries = client.list_images(args.label)
    if args.json:
        print(json.dumps([asdict(e) for e in entries], indent=2))
        return 0
    for e in entries:
        print(f"{e.id}  {e.label}  {e.path}{'  (pending compaction)' if e.pending else ''}")
    print(f"{len(entries)} images", file=sys.stderr)
    return 0


def run_compact(args: argparse.Namespace) -> int:
    with connect(args) as client:
        version, size, folded = client.compact()
    emit(
        args.json,
        f"serving index {version} ({size} images; {folded} changed rows folded in)",
        {"index_version": version, "gallery_size": size, "folded_rows": folded},
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((word for word in argv if not word.startswith("-")), None)
    try:
        parser = build_parser(command)
    except MissingExtra as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    if args.log_level not in LOG_LEVELS:  # from LOOKALIKE_LOG_LEVEL, which argparse takes as is
        parser.error(f"LOOKALIKE_LOG_LEVEL={args.log_level}: choose from {', '.join(LOG_LEVELS)}")
    configure_logging(args.log_level)
    try:
        return args.func(args)
    except LookalikeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except TokenFileError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as error:
        print(f"error: {MissingExtra(args.command, error.name, args.extra)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""What every-face indexing and search cost against the largest face, in one run.

    python benchmarks/faces.py --model face.onnx --gallery $LFW/images --split test \\
        --group-photos group-photos-test.tsv [--photos 400] [--queries 60]

Index: the same photos (``--photos`` of the split, evenly spread, plus every group
photo of the list) built twice, largest face and every face: photos/s, rows per
photo, faces per photo. Search: `lookalike serve` on the every-face index (a free
loopback port, this process's client), one Search at a time, of ``--queries``
group photos and as many one-face photos, each asked for its largest face and for
every face: median and p90 milliseconds per call, as the client sees them.
"""

from __future__ import annotations

import argparse
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lookalike.client import SearchClient
from lookalike.server.index.build import build_index
from lookalike.server.index.gallery import SPLITS, list_gallery
from lookalike.server.vision.embedder import Embedder
from lookalike.server.vision.selection import LARGEST, FaceSelection

K = 20


def sample(gallery: Path, split: str, photos: int, groups: list[str]) -> list[str]:
    """``photos`` paths of the split evenly spread, and every group photo."""
    paths = [image.path for image in list_gallery(gallery, split)]  # type: ignore[arg-type]
    spread = paths[:: max(1, len(paths) // photos)][:photos]
    return sorted(set(spread) | set(groups))


def link_gallery(gallery: Path, paths: list[str], into: Path) -> None:
    for path in paths:
        (into / path).parent.mkdir(parents=True, exist_ok=True)
        (into / path).symlink_to((gallery / path).resolve())


def serve(model: Path, index: Path) -> tuple[subprocess.Popen, str]:
    """`lookalike serve` on a free loopback port; its process and target once SERVING."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "lookalike.client.cli", "serve", "--model", str(model)]
    command += ["--index", str(index), "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen([*command, "--device", "cpu"], stderr=subprocess.DEVNULL)
    target = f"127.0.0.1:{port}"
    with SearchClient(target) as client:
        client.wait_until_ready(timeout=120)
    return process, target


def search_ms(client: SearchClient, data: bytes, faces: str) -> tuple[float, int]:
    """Milliseconds of one Search call as the client sees it, and the faces it searched."""
    started = time.perf_counter()
    result = client.search(data, k=K, faces=faces)  # type: ignore[arg-type]
    return (time.perf_counter() - started) * 1000, len(result.faces)


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return f"median {statistics.median(values):6.1f} ms, p90 {p90:6.1f} ms"


def index_both(args: argparse.Namespace, paths: list[str], folder: Path) -> Path:
    """Build the largest-face and every-face indexes of ``paths``; the every-face one."""
    embedder = Embedder(args.model, device="cpu")
    size = embedder.info.input_size
    embedder.embed(np.zeros((16, size, size, 3), np.float32))  # first runs are slow
    link_gallery(args.gallery, paths, folder / "gallery")
    for name, faces in (("largest", LARGEST), ("every", FaceSelection("all"))):
        report = build_index(
            folder / "gallery", embedder, folder / name, progress=False, faces=faces
        )
        print(
            f"  {name:7} face: {report.files_per_second:5.1f} photos/s, {report.rows} rows "
            f"({report.rows_per_file:.3f} a photo; faces a photo {report.faces_per_file}), "
            f"{report.seconds:.1f} s"
        )
    return folder / "every"


def time_searches(args: argparse.Namespace, target: str, paths: list[str], groups: list[str]):
    singles = [path for path in paths if path not in set(groups)][: args.queries]
    with SearchClient(target) as client:
        client.search((args.gallery / paths[0]).read_bytes(), k=K)  # a first call
        for kind, queries in (("group photos", groups[: args.queries]), ("one-face", singles)):
            datas = [(args.gallery / path).read_bytes() for path in queries]
            for faces in ("largest", "all"):
                timed = [search_ms(client, data, faces) for data in datas]
                ms, count = [t for t, _ in timed], [n for _, n in timed]
                print(
                    f"Search, {len(datas)} {kind}, faces={faces:7}: {summary(ms)}, "
                    f"{np.mean(count):.2f} faces searched a call"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--gallery", type=Path, required=True)
    parser.add_argument("--split", choices=SPLITS, default="test")
    parser.add_argument(
        "--group-photos", type=Path, required=True, help="scripts/group_photos.py --out"
    )
    parser.add_argument("--photos", type=int, default=400)
    parser.add_argument("--queries", type=int, default=60)
    args = parser.parse_args()
    groups = [line.split("\t")[0] for line in args.group_photos.read_text().splitlines()]
    paths = sample(args.gallery, args.split, args.photos, groups)
    with tempfile.TemporaryDirectory() as scratch:
        print(f"index of {len(paths)} photos ({len(groups)} group photos among them):")
        every = index_both(args, paths, Path(scratch))
        process, target = serve(args.model, every)
        try:
            time_searches(args, target, paths, groups)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)


if __name__ == "__main__":
    main()

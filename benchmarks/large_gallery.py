"""A servable index folder of a large gallery that `benchmarks/ann.py` made, for Search end
to end: real LFW photos as queries against real faces among synthetic ones.

    python benchmarks/ann.py --faces FACE_INDEX --sizes 1000000 --work /tmp/ann
    python benchmarks/large_gallery.py --faces FACE_INDEX --gallery /tmp/ann/gallery-1000000 \
        --index-type ivf-pq --storage float16 --out /tmp/big-1m --photos /tmp/big-1m-queries
    python benchmarks/search_load.py --model face.onnx --index /tmp/big-1m \
        --images /tmp/big-1m-queries --concurrency 1 16

The gallery's first rows are the real faces that ann.py kept (every LFW photo but one
held out per person, for ``--queries`` people); their manifest items are the face
index's own, so matches name real photos. The synthetic rows get items of their own
(label "synthetic", a path that does not exist: they have no thumbnail). ``--photos``
receives a link to each held-out photo, the queries, whose person is in the gallery.
The features and the approximate structure are linked, not copied. Then it starts
`lookalike serve` on the folder and prints what a server pays: start-up and warm-up
seconds, resident memory, ``--reloads`` ReloadIndex calls, and each query searched
once (hit@1: the query's person ranked first among all the rows).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from ann import held_out  # beside this script (benchmarks/)
from search_load import free_port

from lookalike.server.index import ann
from lookalike.server.index.items import ITEMS_FOLDER
from lookalike.server.index.store import (
    ANN_FILE,
    FEATURES,
    INDEX_TYPES,
    MANIFEST,
    GalleryIndex,
    Item,
    Layout,
    Manifest,
)
from lookalike.server.vision.embedder import file_sha256


def link(source: Path, target: Path) -> None:
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:  # another file system
        target.symlink_to(source.resolve())


def write_folder(args: argparse.Namespace) -> Path:
    faces = GalleryIndex.open(args.faces, verify=False)
    keep, held, _ = held_out(faces, args.queries)  # ann.py's split, so its gallery rows
    source = "features-f16.npy" if args.storage == "float16" else "features.npy"
    features = args.gallery / source
    rows = np.load(features, mmap_mode="r").shape[0]
    layout = ann.resolved(Layout(storage=args.storage, index_type=args.index_type), rows)
    args.out.mkdir(parents=True, exist_ok=True)
    link(features, args.out / FEATURES)
    if layout.approximate:
        link(args.gallery / args.index_type / ANN_FILE, args.out / ANN_FILE)
    real = [faces.manifest.items[row] for row in keep]
    synthetic = (
        # numbered to sort in row order, as a build lays out a folder's files
        Item(f"{row:016x}", "synthetic", f"synthetic/{row:08d}.jpg")
        for row in range(len(real), rows)
    )
    info = faces.manifest.info
    manifest = Manifest(
        **{**info.__dict__, "version": f"large-{rows}"},
        rows=rows,
        features_sha256=file_sha256(args.out / FEATURES),
        items=[*real, *synthetic],
        layout=layout,
    )
    shutil.rmtree(args.out / ITEMS_FOLDER, ignore_errors=True)  # a previous run's
    written = time.perf_counter()
    manifest.write(args.out)  # past COLUMN_ROWS: the items in columns, items/
    print(f"manifest and items written in {time.perf_counter() - written:.1f} s")
    args.photos.mkdir(parents=True, exist_ok=True)
    root = Path(info.gallery_root)
    for row in held:
        item = faces.manifest.items[row]
        target = args.photos / item.path.replace("/", "__")
        if not target.exists():
            target.symlink_to(root / item.path)
    size = (args.out / MANIFEST).stat().st_size
    columns = sum(f.stat().st_size for f in (args.out / ITEMS_FOLDER).glob("*"))
    print(
        f"{args.out}: {rows:,} rows ({len(real):,} real), {layout}, "
        f"manifest {size:,} bytes, item columns {columns:,} bytes"
    )
    print(f"{args.photos}: {len(held)} query photos")
    return args.out


def resident_mb(pid: int) -> dict[str, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "RssAnon", "RssFile"):
            fields[name] = int(value.split()[0]) / 1024
    return fields


def list_seconds(target: str, label: str) -> list[float]:
    """Seconds for ListImages' first page of 100 (of ``label``), then for the page after it."""
    import grpc

    from lookalike.v1 import search_pb2, search_pb2_grpc

    seconds, token = [], ""
    with grpc.insecure_channel(target) as channel:
        stub = search_pb2_grpc.SearchServiceStub(channel)
        for _ in range(2):
            started = time.perf_counter()
            request = search_pb2.ListImagesRequest(label=label, page_size=100, page_token=token)
            token = stub.ListImages(request, timeout=600).next_page_token
            seconds.append(round(time.perf_counter() - started, 3))
    return seconds


def serve_and_measure(model: Path, folder: Path, photos: Path, reloads: int) -> None:
    """Start a server on ``folder``; report start-up, warm-up, memory, ``reloads`` reloads
    (seconds and heap after each), how often Search ranks the query's person first
    among all the rows (hit@1), and what a page of ListImages costs."""
    from lookalike.client import SearchClient

    port = free_port()
    started = time.perf_counter()
    server = subprocess.Popen(
        [sys.executable, "-m", "lookalike.client.cli", "serve", "--model", str(model)]
        + ["--index", str(folder), "--host", "127.0.0.1", "--port", str(port)]
        + ["--log-level", "WARNING"]
    )
    try:
        with SearchClient(f"127.0.0.1:{port}") as client:
            client.wait_until_ready(timeout=600)
            up = time.perf_counter() - started
            info = client.info()
            memory = resident_mb(server.pid)
            reload_s, heap_after = [], []
            for _ in range(reloads):
                reload_started = time.perf_counter()
                client.reload_index()
                reload_s.append(round(time.perf_counter() - reload_started, 1))
                heap_after.append(round(resident_mb(server.pid)["RssAnon"]))
            queries = sorted(photos.iterdir())
            searched = time.perf_counter()
            first = [client.search(query.read_bytes(), k=1).matches for query in queries]
            search_s = time.perf_counter() - searched
            person = queries[0].name.split("__")[0]
            listing_s = {
                label or "(all)": list_seconds(f"127.0.0.1:{port}", label) for label in ("", person)
            }
        hits = sum(
            bool(found) and found[0].label == query.name.split("__")[0]
            for query, found in zip(queries, first, strict=True)
        )
        print(
            json.dumps(
                {
                    "gallery_size": info.gallery_size,
                    "knn_backend": info.knn_backend,
                    "serving_after_s": round(up, 1),
                    "startup_seconds": round(info.startup_seconds, 1),
                    "warmup_seconds": round(info.warmup_seconds, 1),
                    "resident_mb": {k: round(v) for k, v in memory.items()},
                    "reload_s": reload_s,
                    "heap_mb_after_each_reload": heap_after,
                    "queries": len(queries),
                    "hit_at_1": round(hits / len(queries), 4),
                    "ms_per_search_one_at_a_time": round(search_s * 1e3 / len(queries), 1),
                    "list_images_s_first_and_second_page_of_100": listing_s,
                }
            )
        )
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faces", type=Path, required=True, help="the index of every LFW image")
    parser.add_argument("--gallery", type=Path, required=True, help="ann.py's gallery-N folder")
    parser.add_argument("--index-type", default="ivf-pq", choices=INDEX_TYPES)
    parser.add_argument("--storage", default="float16", choices=("float32", "float16"))
    parser.add_argument("--queries", type=int, default=500, help="as given to ann.py (500)")
    parser.add_argument("--out", type=Path, required=True, help="the index folder to write")
    parser.add_argument("--photos", type=Path, required=True, help="folder for query links")
    parser.add_argument("--model", type=Path, help="serve the folder with this model and measure")
    parser.add_argument("--reloads", type=int, default=1, help="ReloadIndex calls in a row (1)")
    args = parser.parse_args()
    folder = write_folder(args)
    if args.model:
        serve_and_measure(args.model, folder, args.photos, args.reloads)


if __name__ == "__main__":
    main()

"""The Milvus backend (Milvus Lite, embedded) next to the memmap + scikit-learn default.

    python benchmarks/milvus.py --sizes 10000 100000

For each N, a synthetic index of N random 2048-d rows is written once; then,
per backend: the time from the index folder to a searchable gallery (for
Milvus: loading the collection, FLAT or HNSW), milliseconds per query for one
query and for 64 at once, their ratio to scikit-learn in the same run, and
recall@10 against exact search. Random Gaussian rows are the hard case for
approximate indexes (no clusters to exploit); `lookalike eval --milvus-uri`
measures recall on real faces.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from knn import per_query_ms, synthetic_matrix  # noqa: E402

from lookalike.server.backends.base import BackendUnavailable, SearchBackend  # noqa: E402
from lookalike.server.backends.memmap import MemmapBackend  # noqa: E402
from lookalike.server.backends.milvus import MilvusBackend, MilvusTarget, load_index  # noqa: E402
from lookalike.server.index.store import FEATURES, MANIFEST, GalleryIndex, Item, Manifest  # noqa: E402
from lookalike.server.vision.embedder import file_sha256  # noqa: E402
from lookalike.server.vision.imaging import WHOLE_FRAME  # noqa: E402

K = 10


def synthetic_index(folder: Path, rows: int, dim: int) -> GalleryIndex:
    """An index folder around a synthetic matrix: three rows a made-up person."""
    index = folder / f"index-{rows}x{dim}"
    if not (index / MANIFEST).exists():
        matrix = synthetic_matrix(folder, rows, dim)
        index.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(matrix.filename, index / FEATURES)
        manifest = Manifest(
            version=f"synthetic-{rows}",
            model_name="synthetic",
            model_fingerprint="0" * 16,
            input_size=224,
            embedding_size=dim,
            crop=WHOLE_FRAME,
            gallery_root=str(folder),
            split="all",
            rows=rows,
            features_sha256=file_sha256(index / FEATURES),
            items=[
                Item(f"{row:016x}", f"p{row // 3}", f"p{row // 3}/{row}.jpg") for row in range(rows)
            ],
        )
        (index / MANIFEST).write_text(manifest.to_json())
    return GalleryIndex.open(index, verify=False)


def neighbour_ids(backend: SearchBackend, queries: np.ndarray) -> list[list[str]]:
    # Eight at a time: Milvus Lite's FLAT search allocates queries x 65,536 x D floats.
    return [
        [hit.item.id for hit in hits]
        for start in range(0, len(queries), 8)
        for hits in backend.search(queries[start : start + 8], K)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/lookalike-bench"))
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    single = rng.standard_normal((1, args.dim), dtype=np.float32)
    batch = rng.standard_normal((64, args.dim), dtype=np.float32)
    print(
        f"{'N':>7} {'backend':<18} {'ready s':>8} {'1 query ms':>11} {'ratio':>6} "
        f"{'64 q ms/q':>10} {'ratio':>6} {'recall@10':>10}"
    )
    for rows in args.sizes:
        index = synthetic_index(args.dir, rows, args.dim)
        started = time.perf_counter()
        exact = MemmapBackend(GalleryIndex.open(index.path), "brute")
        ready = time.perf_counter() - started
        truth = neighbour_ids(exact, batch)
        base = measure(exact, single, batch, args.repeat)
        report(rows, exact.name, ready, base, base, 1.0)
        for index_type in ("FLAT", "HNSW"):
            uri = args.dir / f"milvus-{rows}-{index_type}.db"
            shutil.rmtree(uri, ignore_errors=True)
            target = MilvusTarget(str(uri), "bench", timeout_s=600)
            ready = load_index(index, target, index_type).seconds
            milvus = MilvusBackend.open(target)
            found = neighbour_ids(milvus, batch)
            recall = np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth, strict=True)])
            report(
                rows, milvus.name, ready, measure(milvus, single, batch, args.repeat), base, recall
            )
            milvus.client.close()


def measure(
    backend: SearchBackend, single: np.ndarray, batch: np.ndarray, repeat: int
) -> tuple[float, float]:
    try:
        many = per_query_ms(backend.search, batch, max(1, repeat // 2))
    except BackendUnavailable as error:  # what Milvus Lite's FLAT answers 64 queries at 100k
        print(f"  64 queries at once failed: {error}", flush=True)
        many = float("nan")
    return per_query_ms(backend.search, single, repeat), many


def report(
    rows: int,
    name: str,
    ready: float,
    ms: tuple[float, float],
    base: tuple[float, float],
    recall: float,
) -> None:
    print(
        f"{rows:>7} {name:<18} {ready:>8.1f} {ms[0]:>11.2f} {ms[0] / base[0]:>6.2f} "
        f"{ms[1]:>10.2f} {ms[1] / base[1]:>6.2f} {recall:>10.3f}",
        flush=True,
    )


if __name__ == "__main__":
    main()

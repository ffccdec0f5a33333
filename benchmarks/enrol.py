"""Enrolment on the memmap backend: what a durable add costs, and what pending changes cost
Search until they are compacted.

    python benchmarks/enrol.py --rows 5000 --dim 2048

Builds a synthetic index (random float32 rows, the real embedding width), then,
in one run: the latency of MemmapBackend.add and .remove (journal + vector
fsynced, no embedding: an AddImages call adds one embedder run), and the k-NN
latency of one query with 0, 1 % and 10 % of the rows in the append segment or
tombstoned, each against the same live rows compacted into a fresh index.
Prints medians and the ratio pending / compacted.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from lookalike.server.backends.memmap import MemmapBackend
from lookalike.server.index.build import publish_staged
from lookalike.server.index.segment import changes_folder
from lookalike.server.index.store import FEATURES, GalleryIndex, GalleryInfo, Item
from lookalike.server.vision.imaging import WHOLE_FRAME

K = 10


def write_index(out: Path, vectors: np.ndarray) -> GalleryIndex:
    """An index folder of these rows, published as a build publishes one."""
    staging = out.parent / f".{out.name}.staging"
    staging.mkdir(parents=True)
    np.save(staging / FEATURES, vectors)
    info = GalleryInfo("", "synthetic", "0" * 16, 224, vectors.shape[1], WHOLE_FRAME, "/", "all")
    items = [
        Item(f"{row:016x}", f"p{row // 4:06d}", f"p{row // 4:06d}/{row}.jpg")
        for row in range(len(vectors))
    ]
    publish_staged(staging, out, info, items, [])
    return GalleryIndex.open(out)


def search_ms(backends: list[MemmapBackend], queries: np.ndarray) -> list[float]:
    """Median milliseconds of one single-query search on each backend, the backends taking
    turns query by query so that the load of the machine weighs on each alike."""
    for backend in backends:
        backend.search(queries[:2], K)  # warm
    times: list[list[float]] = [[] for _ in backends]
    turns = list(zip(backends, times, strict=True))
    for n, query in enumerate(queries):
        for backend, spent in turns if n % 2 else turns[::-1]:  # neither always goes first
            started = time.perf_counter()
            backend.search(query[np.newaxis], K)
            spent.append((time.perf_counter() - started) * 1e3)
    return [statistics.median(spent) for spent in times]


def pending(folder: Path, base: np.ndarray, extra: np.ndarray, removed: int) -> MemmapBackend:
    """An index of ``base`` with ``extra`` rows added and its first ``removed`` tombstoned."""
    backend = MemmapBackend(write_index(folder / "index", base), "brute")
    for n, vector in enumerate(extra):
        row = len(base) + n
        backend.add(Item(f"{row:016x}", "new", f"new/{row}.jpg"), vector)
    if removed:
        backend.remove([f"{row:016x}" for row in range(removed)])
    return backend


def scenario(
    folder: Path, base: np.ndarray, extra: np.ndarray, removed: int, queries: np.ndarray
) -> tuple[float, float, float]:
    """(pending ms, compacted ms, compaction s) for the same live rows."""
    shutil.rmtree(folder, ignore_errors=True)
    waiting = pending(folder / "pending", base, extra, removed)
    compacted = pending(folder / "compacted", base, extra, removed)
    started = time.perf_counter()
    compacted.compact()
    seconds = time.perf_counter() - started
    assert len(waiting) == len(compacted)
    return (*search_ms([waiting, compacted], queries), seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--adds", type=int, default=200)
    parser.add_argument("--work", type=Path, default=None, help="folder (default: a temporary one)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((args.rows, args.dim), dtype=np.float32)
    queries = rng.standard_normal((args.queries, args.dim), dtype=np.float32)
    work = args.work or Path(tempfile.mkdtemp(prefix="lookalike-enrol-"))
    try:
        backend = MemmapBackend(write_index(work / "adds" / "index", rows[:1000]), "brute")
        add, remove = [], []
        for n, vector in enumerate(rng.standard_normal((args.adds, args.dim), dtype=np.float32)):
            started = time.perf_counter()
            backend.add(Item(f"{10**6 + n:016x}", "new", f"new/{n}.jpg"), vector)
            add.append((time.perf_counter() - started) * 1e3)
            started = time.perf_counter()
            backend.remove([f"{n:016x}"])
            remove.append((time.perf_counter() - started) * 1e3)
        journal = changes_folder(work / "adds" / "index")
        print(
            f"durable add: median {statistics.median(add):.2f} ms, "
            f"p90 {np.percentile(add, 90):.2f} ms; remove: median "
            f"{statistics.median(remove):.2f} ms ({args.adds} each, journal on {journal.parent})"
        )
        print(
            f"\nSearch, 1 query, k={K}, {args.rows} live rows x {args.dim}, "
            f"median of {args.queries}:"
        )
        print(f"{'case':<28}{'pending ms':>11}{'compacted ms':>14}{'ratio':>7}{'compact s':>11}")
        for share in (0.0, 0.01, 0.10):
            n = int(share * args.rows)
            cases = [(f"{share:.0%} in segment", rows[: args.rows - n], rows[args.rows - n :], 0)]
            if n:
                more = rng.standard_normal((n, args.dim), dtype=np.float32)
                cases.append((f"{share:.0%} tombstoned", np.concatenate([more, rows]), rows[:0], n))
            for name, base, extra, removed in cases:
                pending, compacted, seconds = scenario(work / "case", base, extra, removed, queries)
                print(
                    f"{name:<28}{pending:>11.2f}{compacted:>14.2f}"
                    f"{pending / compacted:>7.2f}{seconds:>11.2f}"
                )
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""k-NN over a memory-mapped float32 matrix: scikit-learn and faiss against a numpy scan.

    python benchmarks/knn.py --sizes 10000 100000 200000 1000000

Prints, for each N, milliseconds per query for one query and for 64 at once,
the ratio to the numpy scan measured in the same run, and the anonymous
(heap) memory each searcher added: a searcher that keeps the memmap adds ~0.
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lookalike.server.backends.knn import KnnSearcher

K = 20


def rss_anon_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def synthetic_matrix(folder: Path, rows: int, dim: int) -> np.memmap:
    """A random N x D float32 .npy, written once in blocks, then opened mapped and warmed."""
    path = folder / f"features-{rows}x{dim}.npy"
    if not path.exists():
        rng = np.random.default_rng(rows)
        out = np.lib.format.open_memmap(path.with_suffix(".tmp.npy"), "w+", np.float32, (rows, dim))
        for start in range(0, rows, 50_000):
            stop = min(rows, start + 50_000)
            out[start:stop] = rng.standard_normal((stop - start, dim), dtype=np.float32)
        out.flush()
        del out
        path.with_suffix(".tmp.npy").rename(path)
    matrix = np.load(path, mmap_mode="r")
    for start in range(0, rows, 50_000):  # into the page cache, as on a warm server
        np.asarray(matrix[start : start + 50_000]).sum()
    return matrix


def numpy_scan(matrix: np.ndarray, norms: np.ndarray) -> Callable:
    """The floor: one matrix product over the mapping, then a partial sort."""

    def search(queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        d2 = norms[np.newaxis, :] - 2.0 * (queries @ matrix.T)
        d2 += np.einsum("ij,ij->i", queries, queries)[:, np.newaxis]
        top = np.argpartition(d2, k, axis=1)[:, :k]
        top_d2 = np.take_along_axis(d2, top, axis=1)
        order = np.argsort(top_d2, axis=1)
        return (
            np.sqrt(np.maximum(np.take_along_axis(top_d2, order, axis=1), 0)),
            np.take_along_axis(top, order, axis=1),
        )

    return search


def plain_sklearn(matrix: np.ndarray) -> Callable:
    """NearestNeighbors as the documentation shows it, for comparison."""
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(algorithm="brute").fit(matrix)
    return lambda queries, k: nn.kneighbors(queries, n_neighbors=k)


def plain_faiss(matrix: np.ndarray) -> Callable:
    """faiss.knn as the documentation shows it, for comparison."""
    import faiss

    return lambda queries, k: faiss.knn(queries, matrix, k)


def per_query_ms(search: Callable, queries: np.ndarray, repeat: int) -> float:
    search(queries, K)
    started = time.perf_counter()
    for _ in range(repeat):
        search(queries, K)
    return (time.perf_counter() - started) / repeat / len(queries) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 200_000])
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/lookalike-bench"))
    parser.add_argument(
        "--tree-max",
        type=int,
        default=100_000,
        help="skip ball_tree above this N (it copies and builds for minutes)",
    )
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    single = rng.standard_normal((1, args.dim), dtype=np.float32)
    batch = rng.standard_normal((64, args.dim), dtype=np.float32)

    print(
        f"{'N':>9} {'method':<22} {'1 query ms':>11} {'ratio':>6} {'64 q ms/q':>10} "
        f"{'ratio':>6} {'heap MB':>8} {'build s':>8}"
    )
    for rows in args.sizes:
        matrix = synthetic_matrix(args.dir, rows, args.dim)
        norms = np.einsum("ij,ij->i", matrix, matrix)
        methods: dict[str, Callable[[], Callable]] = {
            "numpy scan": lambda m=matrix, n=norms: numpy_scan(m, n),
            "sklearn brute, plain": lambda m=matrix: plain_sklearn(m),
            "sklearn brute (ours)": lambda m=matrix: KnnSearcher(m, "brute").search,
            "faiss knn, plain": lambda m=matrix: plain_faiss(m),
            "faiss (ours)": lambda m=matrix: KnnSearcher(m, "faiss").search,
        }
        if rows <= args.tree_max:
            methods["sklearn ball_tree"] = lambda m=matrix: KnnSearcher(m, "ball_tree").search
        baseline: tuple[float, float] | None = None
        reference = None
        for name, make in methods.items():
            gc.collect()
            heap = rss_anon_mb()
            started = time.perf_counter()
            search = make()
            build = time.perf_counter() - started
            heap = rss_anon_mb() - heap
            one = per_query_ms(search, single, args.repeat)
            many = per_query_ms(search, batch, max(1, args.repeat // 2))
            ids = search(batch, K)[1]
            if reference is None:
                reference, baseline = ids, (one, many)
            agree = "" if np.array_equal(ids, reference) else "  (different neighbours!)"
            print(
                f"{rows:>9} {name:<22} {one:>11.2f} {one / baseline[0]:>6.2f} {many:>10.2f} "
                f"{many / baseline[1]:>6.2f} {heap:>8.0f} {build:>8.1f}{agree}",
                flush=True,
            )
            del search
        del matrix


if __name__ == "__main__":
    main()

"""scikit-learn's exact k-NN on one OpenMP thread against all of them, by gallery size:
where ``ONE_THREAD_ROWS`` (server/backends/knn.py) comes from.

    python benchmarks/knn_threads.py [--threads 2]

Each line: the gallery (rows x dimensions), the queries in one call, then wall and CPU
milliseconds a call on every thread and on one, and their ratio (one over all: below 1,
one thread is faster). Random Gaussian rows: the cost of brute force does not depend on
what the rows hold.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

from lookalike.server.backends import knn

SHAPES = (
    (278, 2048),
    (2810, 2048),
    (5000, 2048),
    (10000, 2048),
    (30000, 2048),
    (2810, 128),
    (10000, 128),
    (100000, 128),
)


def timed(searcher: knn.KnnSearcher, queries: np.ndarray, calls: int) -> tuple[float, float]:
    """Wall and CPU milliseconds a call."""
    searcher.search(queries, 20)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
        searcher.search(queries, 20)
    return (time.perf_counter() - wall) * 1e3 / calls, (time.process_time() - cpu) * 1e3 / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None, help="all: OpenMP's default")
    args = parser.parse_args()
    knn.ONE_THREAD_ROWS = 0  # measure scikit-learn as it is, then limit it here
    rng = np.random.default_rng(0)
    print("| rows x dim | queries | all threads ms (CPU) | one thread ms (CPU) | one / all |")
    print("|---|---|---|---|---|")
    for rows, dim in SHAPES:
        searcher = knn.KnnSearcher(rng.standard_normal((rows, dim), dtype=np.float32), "brute")
        calls = max(3, int(3e8 / (rows * dim)))
        for batch in (1, 8):
            queries = rng.standard_normal((batch, dim), dtype=np.float32)
            with threadpool_limits(args.threads, user_api="openmp"):
                every = timed(searcher, queries, calls)
            with threadpool_limits(1, user_api="openmp"):
                one = timed(searcher, queries, calls)
            print(
                f"| {rows:,} x {dim} | {batch} | {every[0]:.2f} ({every[1]:.2f}) | "
                f"{one[0]:.2f} ({one[1]:.2f}) | {one[0] / every[0]:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()

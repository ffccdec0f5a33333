"""What opening an index's searcher costs, as a server's start-up, reload and compaction
pay it: seconds, and the heap before, at its peak (sampled every 0.2 s) and after.

    python benchmarks/open_searcher.py --index /tmp/c10m/idx

The matrix's pages are read first, so the time is the searcher's, not the disk's.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from compact_large import PeakMemory, memory_mb

from lookalike.server.backends.approximate import open_searcher
from lookalike.server.index.store import GalleryIndex


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", type=Path, required=True, help="an index folder")
    parser.add_argument("--knn-algorithm", default="brute", help="for a float32 scan (brute)")
    args = parser.parse_args()
    index = GalleryIndex.open(args.index, verify=False)
    for start in range(0, len(index.features), 1_000_000):  # into the page cache
        np.asarray(index.features[start : start + 1_000_000]).max()
    before = memory_mb()["RssAnon"]
    watch = PeakMemory()
    started = time.perf_counter()
    searcher = open_searcher(index, args.knn_algorithm)
    seconds = time.perf_counter() - started
    peak = watch.stop()["RssAnon"]
    print(
        f"{args.index}: {len(index.features):,} rows, {index.manifest.layout.storage}, "
        f"{searcher.name} opened in {seconds:.1f} s; heap MB before {before:,.0f}, "
        f"at its peak {peak:,}, after {memory_mb()['RssAnon']:,.0f}"
    )


if __name__ == "__main__":
    main()

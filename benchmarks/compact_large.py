"""What compacting a large gallery costs: one image added, one removed, then CompactIndex's
work (MemmapBackend.compact) on a published index, with its time and the memory it held.

    python benchmarks/compact_large.py --index /tmp/c10m/idx [--fold-only]

The index must be a published one (a link into its versions, as `lookalike index`
writes); the compaction publishes a new version of it, as a server's would. Memory is
sampled from /proc every 0.2 s: the largest anonymous memory (the heap: items, the
journal of the fold) and the largest resident set, which also counts the pages of the
mapped matrices read and written.
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

import numpy as np

from lookalike.server.backends.memmap import MemmapBackend
from lookalike.server.index.compact import compact
from lookalike.server.index.item import Item
from lookalike.server.index.segment import Changes
from lookalike.server.index.store import GalleryIndex


def memory_mb() -> dict[str, float]:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "RssAnon"):
            fields[name] = int(value.split()[0]) / 1024
    return fields


class PeakMemory:
    """The largest RssAnon and VmRSS seen while it runs."""

    def __init__(self) -> None:
        self.peak = memory_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            for name, value in memory_mb().items():
                self.peak[name] = max(self.peak[name], value)

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        return {name: round(value) for name, value in self.peak.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", type=Path, required=True, help="a published index link")
    parser.add_argument(
        "--fold-only",
        action="store_true",
        help="time the fold and publish alone (compact.compact), without a backend: no "
        "searcher held before and none opened after",
    )
    args = parser.parse_args()
    started = time.perf_counter()
    index = GalleryIndex.open(args.index, verify=False)
    backend = None if args.fold_only else MemmapBackend(index)
    print(f"opened in {time.perf_counter() - started:.1f} s; memory MB {memory_mb()}")
    stamp = f"{time.time_ns():016x}"[-16:]
    added = Item(stamp, "someone", f"someone/{stamp}.jpg")
    victim = index.manifest.items[11].id
    vector = np.ones((1, index.manifest.embedding_size), np.float32)
    if backend is not None:
        backend.add(added, vector[0])
        backend.remove([victim])
    watch = PeakMemory()
    started = time.perf_counter()
    if backend is not None:
        old, new, folded = backend.compact()
    else:
        changes = Changes(added={stamp: (added, 0)}, removed={victim})
        old, new, folded = index.manifest.version, compact(index, changes, vector).version, 2
    seconds = time.perf_counter() - started
    peak = watch.stop()
    items = GalleryIndex.open(args.index, verify=False).manifest.items
    print(
        f"compacted {len(items):,} rows ({folded} changes) in {seconds:.1f} s, {old} -> {new}; "
        f"peak memory MB {peak}; the removed row gone: {items.row_of(victim) is None}, "
        f"the added one at row {items.row_of(stamp)}"
    )


if __name__ == "__main__":
    main()

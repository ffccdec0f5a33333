"""trim_heap gives freed heap pages back: memory freed into glibc's arenas in blocks too
small to be mapped on their own (an IVF structure's lists) leaves the resident set."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from lookalike.server.online.heap import trim_heap


def heap_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no RssAnon")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_freed_small_blocks_leave_the_resident_set_when_trimmed():
    before = heap_mb()
    blocks = [np.ones(2_500) for _ in range(10_000)]  # 20 KB each: 200 MB from the arenas
    kept = blocks[::10]  # live blocks between the freed ones: glibc trims only the heap's top
    del blocks
    held = heap_mb()
    assert held > before + 150  # freed, and still resident
    assert trim_heap()
    assert heap_mb() < held - 120
    assert len(kept) == 1_000

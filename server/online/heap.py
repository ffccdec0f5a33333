"""Giving the heap's free pages back to the system after a gallery is let go.

An approximate structure is thousands of inverted lists, each smaller than what glibc
maps on its own, so a reloaded or compacted gallery's old structure is freed into
glibc's arenas and stays resident: at ten million rows the heap grew by 417, 81, 79 and
14 MB over five reloads. ``malloc_trim`` returns the free pages at once.
"""

from __future__ import annotations

import ctypes
import sys
from functools import cache


@cache
def _malloc_trim():  # noqa: ANN202 (a ctypes function, or None)
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc; musl has none
    except (OSError, AttributeError):
        return None


def trim_heap() -> bool:
    """Return the heap's free pages to the system; False where the C library cannot."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True

"""Where a face crop's time goes: detection, landmarks, warp.

With a face model the crop is most of a search's CPU, and an operator needs to
see which part of it. The vision code cannot reach the server's metrics
(imports go one way), so it adds each step's seconds to a tally that the caller
opens around the crop and reads afterwards; outside one, timing costs nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

CROP_STEPS = ("detect", "landmarks", "warp")

_TALLY: ContextVar[dict[str, float] | None] = ContextVar("crop_steps", default=None)


@contextmanager
def tallied() -> Iterator[dict[str, float]]:
    """Seconds by step (of ``CROP_STEPS``) for the steps run inside the block, on this
    thread; a step not run has no entry."""
    tally: dict[str, float] = {}
    token = _TALLY.set(tally)
    try:
        yield tally
    finally:
        _TALLY.reset(token)


@contextmanager
def step(name: str) -> Iterator[None]:
    """Add the block's seconds to ``name`` in the open tally, if there is one."""
    tally = _TALLY.get()
    if tally is None:
        yield
        return
    started = time.perf_counter()
    try:
        yield
    finally:
        tally[name] = tally.get(name, 0.0) + time.perf_counter() - started

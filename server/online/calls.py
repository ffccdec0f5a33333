"""A call's limits as the worker thread doing its work sees them.

Handlers run on the event loop; a search's decode, embedding and thumbnails run
on a worker thread, which cannot abort the call itself. It checks these limits
between stages and raises CallEnded, and the handler answers DEADLINE_EXCEEDED.
"""

from __future__ import annotations

import threading
import time

import grpc

# gRPC reports a call without a deadline as ~9.2e18 s remaining (the largest time it
# can hold); anything past a year is taken as no deadline, not as a time to wait for.
NO_DEADLINE_SECONDS = 365 * 24 * 3600.0
# A deadline travels as a timeout, so the server's copy of it starts when the request
# arrives, later than the caller's by the request's transit; the cancel the caller sends
# at its deadline arrives sooner than that. A call cancelled this close to its deadline
# is counted as past it, not as a caller that went away.
DEADLINE_SLACK_SECONDS = 0.25


class CallEnded(Exception):
    """The caller's deadline passed, or the caller went away: spend no more work on it."""


def deadline_of(context: grpc.ServicerContext | grpc.aio.ServicerContext) -> float | None:
    """The call's deadline on time.monotonic()'s clock, or None when it has none."""
    remaining = context.time_remaining()
    if remaining is None or remaining > NO_DEADLINE_SECONDS:
        return None
    return time.monotonic() + remaining


def past_deadline(context: grpc.aio.ServicerContext) -> bool:
    """Whether a cancelled call's deadline has passed, as its caller saw it."""
    remaining = context.time_remaining()
    return remaining is not None and remaining <= DEADLINE_SLACK_SECONDS


class CallLimits:
    """The deadline (time.monotonic(), or None), whether the caller still waits, and
    when the handler began (time.perf_counter(): a call's total time counts its wait
    for a worker thread).

    Monotonic time: a step of the wall clock neither ends a call early nor late.
    """

    def __init__(self, deadline: float | None) -> None:
        self.deadline = deadline
        self.started = time.perf_counter()
        self.abandoned = threading.Event()  # set by the handler when the call is cancelled

    def check(self) -> None:
        if self.abandoned.is_set():
            raise CallEnded("the caller went away")
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise CallEnded("the deadline passed")

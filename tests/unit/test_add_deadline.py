"""When AddImages stops adding so that its answer reaches the caller before the deadline."""

from __future__ import annotations

import time

import pytest

from lookalike.server.online.calls import CallLimits
from lookalike.server.online.enrol import ANSWER_RESERVE_SECONDS, answer_reserve, must_stop


def limits_with(seconds_left: float | None) -> CallLimits:
    return CallLimits(None if seconds_left is None else time.monotonic() + seconds_left)


@pytest.mark.parametrize(
    ("left", "reserve"), [(None, 0.0), (0.4, 0.1), (1.0, 0.25), (30.0, ANSWER_RESERVE_SECONDS)]
)
def test_the_answer_keeps_a_quarter_of_the_call_at_most_half_a_second(left, reserve):
    assert answer_reserve(limits_with(left)) == pytest.approx(reserve, abs=0.01)


def test_a_chunk_is_judged_by_the_slowest_of_the_call_not_the_last():
    """A call of large photos and small ones: after a 0.4 s chunk and a quick one, the
    next may again take 0.4 s (the rule before judged it by the quick one, 0.01 s, and
    started it with 0.3 s left)."""
    assert must_stop(limits_with(0.7), slowest=0.4, reserve=0.1)
    assert must_stop(limits_with(0.3), slowest=0.4, reserve=0.1)
    assert not must_stop(limits_with(0.9), slowest=0.4, reserve=0.1)


def test_the_reserve_holds_before_the_first_chunk():
    assert must_stop(limits_with(0.4), slowest=0.0, reserve=0.5)
    assert not must_stop(limits_with(0.6), slowest=0.0, reserve=0.5)


def test_without_a_deadline_only_a_caller_who_left_stops_it():
    limits = limits_with(None)
    assert not must_stop(limits, slowest=100.0, reserve=0.0)
    limits.abandoned.set()
    assert must_stop(limits, slowest=0.0, reserve=0.0)

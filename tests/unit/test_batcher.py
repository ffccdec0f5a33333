"""The micro-batcher with a stub step: grouping, limits, deadlines and failures, no model."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from lookalike.server.online.batcher import DeadlinePassed, MicroBatcher
from lookalike.server.online.telemetry import Telemetry


class Recorder:
    """A step that answers each image with its own first pixel, and records its batches."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.batches: list[int] = []
        self.gate = gate

    def __call__(self, pixels: np.ndarray, k: int):
        if self.gate is not None:
            self.gate.wait(timeout=10)
        self.batches.append(len(pixels))
        return [[float(image[0, 0, 0])] * k for image in pixels], 1.0, 2.0


def image(value: float) -> np.ndarray:
    return np.full((2, 2, 3), value, np.float32)


@pytest.fixture
def batcher():
    telemetry = Telemetry()
    batcher = MicroBatcher(0.2, 4, telemetry)
    yield batcher
    batcher.close()


def test_callers_share_a_run_and_each_gets_its_own_answer_and_k(batcher):
    step = Recorder()
    futures = [batcher.submit(step, image(n), k=1 + n) for n in range(4)]
    answers = [future.result(timeout=10) for future in futures]
    assert [a.hits for a in answers] == [[float(n)] * (1 + n) for n in range(4)]
    assert step.batches == [4]  # one run, at the largest k, each cut to its own
    assert {(a.embed_ms, a.knn_ms, a.batch_size) for a in answers} == {(1.0, 2.0, 4)}
    assert batcher.telemetry.registry.get_sample_value("lookalike_embed_batch_size_sum") == 4


def test_a_batch_holds_at_most_max_batch(batcher):
    gate = threading.Event()
    step = Recorder(gate)
    futures = [batcher.submit(step, image(n), 1) for n in range(9)]
    gate.set()
    assert [f.result(timeout=10).hits[0] for f in futures] == list(map(float, range(9)))
    assert max(step.batches) <= 4 and sum(step.batches) == 9


def test_jobs_of_different_steps_never_share_a_run(batcher):
    first, second = Recorder(), Recorder()
    futures = [batcher.submit(step, image(n), 1) for n, step in enumerate([first, second] * 2)]
    assert [f.result(timeout=10).hits[0] for f in futures] == [0.0, 1.0, 2.0, 3.0]
    assert first.batches == [2] and second.batches == [2]


def test_a_job_whose_deadline_passed_is_dropped_before_any_work(batcher):
    step = Recorder()
    late = batcher.submit(step, image(1), 1, deadline=time.monotonic() - 1)
    with pytest.raises(DeadlinePassed):
        late.result(timeout=10)
    assert step.batches == []


def test_a_cancelled_job_is_skipped(batcher):
    gate = threading.Event()
    blocking, step = Recorder(gate), Recorder()
    first = batcher.submit(blocking, image(0), 1)  # holds the batcher's thread
    time.sleep(0.3)  # past the window: the first batch is running
    cancelled = batcher.submit(step, image(1), 1)
    assert cancelled.cancel()
    kept = batcher.submit(step, image(2), 1)
    gate.set()
    assert first.result(timeout=10).hits == [0.0]
    assert kept.result(timeout=10).hits == [2.0]
    assert step.batches == [1]


def test_a_failing_step_fails_every_caller_of_its_batch(batcher):
    def broken(pixels: np.ndarray, k: int):
        raise RuntimeError("the model fell over")

    futures = [batcher.submit(broken, image(n), 1) for n in range(3)]
    for future in futures:
        with pytest.raises(RuntimeError, match="fell over"):
            future.result(timeout=10)
    assert batcher.submit(Recorder(), image(5), 1).result(timeout=10).hits == [5.0]


class Meeting:
    """A step whose runs wait for one another: it answers only when ``parties`` run at
    once, and raises BrokenBarrierError when they do not."""

    def __init__(self, parties: int, timeout: float = 5.0) -> None:
        self.barrier = threading.Barrier(parties, timeout=timeout)

    def __call__(self, pixels: np.ndarray, k: int):
        self.barrier.wait()
        return [[0.0] * k for _ in pixels], 1.0, 2.0


def test_runners_run_that_many_batches_at_once():
    step = Meeting(2)
    two = MicroBatcher(0.0, 1, runners=2)  # batches of one: two jobs, two batches
    try:
        futures = [two.submit(step, image(n), 1) for n in range(2)]
        assert [f.result(timeout=10).batch_size for f in futures] == [1, 1]
    finally:
        two.close()
    assert not any(thread.is_alive() for thread in two._threads)  # each runner ended


def test_one_runner_runs_one_batch_at_a_time():
    step = Meeting(2, timeout=0.5)
    one = MicroBatcher(0.0, 1)
    try:
        futures = [one.submit(step, image(n), 1) for n in range(2)]
        with pytest.raises(threading.BrokenBarrierError):
            futures[0].result(timeout=10)
    finally:
        one.close()

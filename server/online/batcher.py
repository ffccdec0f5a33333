"""Micro-batching: concurrent searches share one embedder run and one k-NN call.

A ResNet101 forward pass costs far less per image in a batch than alone, and
one k-NN call over a batch reads the gallery once instead of once per query.
Calls wait at most ``window`` for company; a call whose deadline passes while
it waits is dropped before any work is spent on it.

``runners`` batches run at once, each on a thread of its own (the server's
``--model-instances``, Triton's instance count): with one intra-op thread per
run, no run waits on another's threads, so a run preempted by decoding or gRPC
delays only itself, and a second batch gathers while the first runs.

The batcher knows nothing of models or galleries: each job carries the step
that answers it (the engine's ``Nearest``: one gallery, one breadth), and jobs
with the same step share a run.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from lookalike.server.backends.base import Hit
from lookalike.server.online.telemetry import Telemetry


class DeadlinePassed(Exception):
    """The caller's deadline passed before its batch ran."""


@dataclass(frozen=True)
class BatchAnswer:
    hits: list[Hit]
    embed_ms: float
    knn_ms: float
    batch_size: int


# Pixels of a batch (N x H x W x 3) and the largest k asked: each query's hits, nearest
# first, with the milliseconds spent embedding and searching.
Step = Callable[[np.ndarray, int], tuple[list[list[Hit]], float, float]]


@dataclass(frozen=True)
class _Job:
    step: Step
    pixels: np.ndarray
    k: int
    deadline: float | None  # time.monotonic() by which the caller stops waiting
    future: Future


class MicroBatcher:
    def __init__(
        self,
        window_seconds: float,
        max_batch: int,
        telemetry: Telemetry | None = None,
        runners: int = 1,
    ) -> None:
        self.window = window_seconds
        self.max_batch = max_batch
        self.telemetry = telemetry
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._threads = [
            threading.Thread(target=self._run, name=f"batcher-{n}", daemon=True)
            for n in range(runners)
        ]
        for thread in self._threads:
            thread.start()

    def submit(
        self, step: Step, pixels: np.ndarray, k: int, deadline: float | None = None
    ) -> Future:
        """A future of this image's BatchAnswer, computed by ``step`` with others'."""
        future: Future = Future()
        self._queue.put(_Job(step, pixels, k, deadline, future))
        return future

    def close(self) -> None:
        for _ in self._threads:  # one end mark per runner
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout=10)

    def _gather(self, first: _Job) -> tuple[list[_Job], bool]:
        jobs, until = [first], time.monotonic() + self.window
        while len(jobs) < self.max_batch:
            try:
                job = self._queue.get(timeout=max(0.0, until - time.monotonic()))
            except queue.Empty:
                break
            if job is None:
                return jobs, True
            jobs.append(job)
        return jobs, False

    def _run(self) -> None:
        while (first := self._queue.get()) is not None:
            jobs, closing = self._gather(first)
            self._process(jobs)
            if closing:
                return

    def _process(self, jobs: list[_Job]) -> None:
        now = time.monotonic()
        by_step: dict[Step, list[_Job]] = defaultdict(list)
        for job in jobs:
            if not job.future.set_running_or_notify_cancel():
                continue
            if job.deadline is not None and job.deadline <= now:
                job.future.set_exception(DeadlinePassed())
            else:
                by_step[job.step].append(job)
        for group in by_step.values():  # one group unless an index swap happened mid-batch
            try:
                self._answer(group)
            except Exception as error:  # every waiting caller must hear of it
                for job in group:
                    job.future.set_exception(error)

    def _answer(self, group: list[_Job]) -> None:
        found, embed_ms, knn_ms = group[0].step(
            np.stack([job.pixels for job in group]), max(job.k for job in group)
        )
        if self.telemetry:
            self.telemetry.batch_size.observe(len(group))
        for job, hits in zip(group, found, strict=True):
            job.future.set_result(BatchAnswer(hits[: job.k], embed_ms, knn_ms, len(group)))

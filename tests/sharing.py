"""Work done once per test run, not once per pytest-xdist worker: the exported test model.

Exporting a ResNet101 with tf2onnx takes half a minute to a minute of CPU and about 10 GB
of memory at its peak, so it runs once, in a subprocess (the memory goes back when it
exits), under a lock in a folder that every worker of the run shares; the worker that
finds the lock taken waits and reuses the file. `tf2onnx_turn` is the same lock: tests
that run an export of their own in-process take it, so that two such peaks never overlap.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest

EXPORT = """
import sys
from pathlib import Path
from lookalike.export.convert import ExportConfig, export_onnx
export_onnx(ExportConfig(out=Path(sys.argv[1]), weights="none", image_size=int(sys.argv[2])))
"""


def run_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder shared by every worker of this run (the base temp folder without xdist)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@contextmanager
def held(lock_file: Path) -> Iterator[None]:
    """An exclusive lock on ``lock_file``, across the workers of the run."""
    with open(lock_file, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def tf2onnx_turn(folder: Path) -> AbstractContextManager[None]:
    """Held while one tf2onnx export runs, across the workers of the run."""
    return held(folder / "tf2onnx.lock")


class BackgroundExport:
    """The random-weight model exported by `lookalike.export.convert.export_onnx` in a
    subprocess, started on a thread so that tests which need no model run meanwhile. The
    worker that gets the lock first exports; export_onnx publishes the file atomically."""

    def __init__(self, folder: Path, image_size: int) -> None:
        self.out = folder / f"model-{image_size}px.onnx"
        self.log = folder / f"model-{image_size}px.log"
        self.folder, self.image_size = folder, image_size
        self.process: subprocess.Popen | None = None
        self.stopped = False
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="export-test-model", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            with tf2onnx_turn(self.folder):
                if self.out.is_file() or self.stopped:
                    return
                with open(self.log, "w") as log:
                    self.process = subprocess.Popen(
                        [sys.executable, "-c", EXPORT, str(self.out), str(self.image_size)],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                    self.process.wait()
        except BaseException as error:  # handed to the test that needs the model
            self.error = error

    def stop(self) -> None:
        """End an export still running when the session ends (say, after -x)."""
        self.stopped = True
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def result(self) -> Path:
        self.thread.join()
        if self.error is not None:
            raise self.error
        if not self.out.is_file():
            tail = self.log.read_text()[-4000:] if self.log.is_file() else "(no log)"
            raise RuntimeError(f"exporting the test model failed:\n{tail}")
        return self.out

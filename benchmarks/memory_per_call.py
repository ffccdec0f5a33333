"""Worst-case memory of a Search: one call, and --max-in-flight calls at once.

    python benchmarks/memory_per_call.py --model model.onnx --index index/ --in-flight 4 16

Starts `lookalike serve` on a free loopback port and sends the largest images
the default limits let through (40 M pixels, within 8 MiB): an 8-bit RGB JPEG,
a 16-bit grey PNG and a transparent RGBA PNG. For each it resets the server's
peak RSS (``/proc/PID/clear_refs``, Linux), sends one call, or N calls at
once, and prints how far the peak rose above the RSS before the calls (MiB),
and that rise per call; a fresh server for each row. It reads and writes the
server's /proc files: run it as the same user.
"""

from __future__ import annotations

import argparse
import io
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from lookalike.client import LookalikeError, SearchClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.serving import free_port, wait_until_serving  # noqa: E402

WIDTH, HEIGHT = 7740, 5160  # 39.9 M pixels, under the default --max-pixels of 40 M


def worst_images() -> dict[str, bytes]:
    """Smooth (so small when compressed), as large in pixels as the defaults allow."""
    ramp = np.linspace(0, 1, WIDTH, dtype=np.float32)[np.newaxis, :]
    column = np.linspace(0, 1, HEIGHT, dtype=np.float32)[:, np.newaxis]
    grey16 = ((ramp * column) * 65535).astype(np.uint16)
    rgb = np.repeat((grey16 >> 8).astype(np.uint8)[:, :, np.newaxis], 3, axis=2)
    rgba = np.concatenate([rgb, np.full((HEIGHT, WIDTH, 1), 128, np.uint8)], axis=2)
    images = {}
    for name, image, kind in (
        ("rgb-jpeg", Image.fromarray(rgb), "JPEG"),
        ("grey16-png", Image.fromarray(grey16), "PNG"),
        ("rgba-png", Image.fromarray(rgba), "PNG"),
    ):
        buffer = io.BytesIO()
        image.save(buffer, format=kind)
        images[name] = buffer.getvalue()
    return images


def status_mib(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for process {pid}")


def peak_rise(pid: int, target: str, image: bytes, calls: int) -> tuple[float, int]:
    """MiB the peak RSS rose above the RSS before ``calls`` simultaneous calls; failures."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # peak RSS := RSS now
    before = status_mib(pid, "VmRSS")
    failures = [0]
    ready = threading.Barrier(calls)

    def one() -> None:
        with SearchClient(target, timeout=300, retries=0) as client:
            ready.wait()
            try:
                client.search(image, k=5)
            except LookalikeError as error:
                print(f"  call failed: {error}", file=sys.stderr)
                failures[0] += 1

    threads = [threading.Thread(target=one) for _ in range(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return status_mib(pid, "VmHWM") - before, failures[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--in-flight", type=int, nargs="+", default=[4])
    parser.add_argument("--images", nargs="+", default=None, help="only these (names above)")
    args = parser.parse_args()
    images = {
        name: data
        for name, data in worst_images().items()
        if args.images is None or name in args.images
    }
    for name, data in images.items():
        print(f"{name}: {WIDTH}x{HEIGHT}, {len(data) / 2**20:.1f} MiB encoded")
    print(f"{'image':>10} {'calls':>5} {'RSS before':>10} {'peak rise MiB':>13} {'per call':>8}")
    for name, data in images.items():
        for calls in (1, *args.in_flight):
            with serving(args.model, args.index, max(args.in_flight)) as (pid, target):
                before = status_mib(pid, "VmRSS")
                rise, failed = peak_rise(pid, target, data, calls)
            print(
                f"{name:>10} {calls:>5} {before:>10.0f} {rise:>13.0f} {rise / calls:>8.0f}"
                + (f" ({failed} failed)" if failed else ""),
                flush=True,
            )


@contextmanager
def serving(model: Path, index: Path, in_flight: int) -> Iterator[tuple[int, str]]:
    """A fresh server each time: memory freed by earlier calls stays in the process (the
    allocator keeps it) and would hide what the next calls need."""
    port = free_port()
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "lookalike.client.cli", "serve"),
            *("--model", str(model), "--index", str(index)),
            *("--host", "127.0.0.1", "--port", str(port), "--device", "cpu"),
            *("--max-in-flight", str(in_flight)),
        ],
        stderr=subprocess.DEVNULL,
    )
    target = f"127.0.0.1:{port}"
    try:
        wait_until_serving(target, server)
        yield server.pid, target
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)


if __name__ == "__main__":
    main()

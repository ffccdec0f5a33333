"""Search over gRPC under concurrent load, against the embedder's own best throughput.

    python benchmarks/search_load.py --model model.onnx --index index/ --images DIR

Starts `lookalike serve` on a free loopback port, then for each concurrency
sends Search calls from that many client threads for a fixed time (bounded,
loopback only) and prints requests/s, p50/p99 latency and errors, and the
ratio of requests/s to the raw onnxruntime images/s at its best batch size,
measured in the same run.
"""

from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from lookalike.client import LookalikeError, SearchClient
from lookalike.server.vision.embedder import Embedder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def raw_best(model: Path, seconds: float) -> tuple[float, int]:
    embedder = Embedder(model, device="auto")
    size = embedder.info.input_size
    best = (0.0, 1)
    for batch in (1, 4, 8, 16, 32):
        pixels = np.zeros((batch, size, size, 3), np.float32)
        embedder.embed(pixels)
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            embedder.embed(pixels)
            done += batch
        best = max(best, (done / (time.perf_counter() - started), batch))
    return best


def load(target: str, images: list[bytes], concurrency: int, seconds: float) -> dict:
    latencies: list[float] = []
    errors = [0]
    stop = time.monotonic() + seconds

    def worker(n: int) -> None:
        with SearchClient(target, retries=0) as client:
            i = n
            while time.monotonic() < stop:
                started = time.perf_counter()
                try:
                    client.search(images[i % len(images)], k=20)
                    latencies.append(time.perf_counter() - started)
                except LookalikeError:
                    errors[0] += 1
                i += concurrency

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    ms = np.array(latencies) * 1e3
    return {
        "rps": len(latencies) / elapsed,
        "p50": np.percentile(ms, 50),
        "p99": np.percentile(ms, 99),
        "errors": errors[0],
    }


def serve_command(model: Path, index: Path, port: int, *extra: str) -> list[str]:
    """`lookalike serve` on loopback ``port``, logging only warnings."""
    return [
        sys.executable,
        "-m",
        "lookalike.client.cli",
        "serve",
        "--model",
        str(model),
        "--index",
        str(index),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "WARNING",
        *extra,
    ]


def wait_until_up(target: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    with SearchClient(target, timeout=2, retries=0) as client:
        while True:
            try:
                client.info()
                return
            except LookalikeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--images", type=Path, required=True, help="folder of query images")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--serve-args", default="", help="extra flags for lookalike serve")
    args = parser.parse_args()
    images = [p.read_bytes() for p in sorted(args.images.rglob("*.jpg"))[:200]]
    rate, batch = raw_best(args.model, args.seconds / 3)
    print(f"raw onnxruntime: {rate:.1f} images/s at batch {batch}")
    port = free_port()
    server = subprocess.Popen(
        serve_command(
            args.model, args.index, port, "--max-in-flight", "64", *args.serve_args.split()
        )
    )
    target = f"127.0.0.1:{port}"
    try:
        wait_until_up(target)
        print(f"{'conc':>4} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} {'vs raw':>6}")
        for concurrency in args.concurrency:
            result = load(target, images, concurrency, args.seconds)
            print(
                f"{concurrency:>4} {result['rps']:>7.1f} {result['p50']:>8.1f} "
                f"{result['p99']:>8.1f} {result['errors']:>6} {result['rps'] / rate:>6.2f}",
                flush=True,
            )
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)


if __name__ == "__main__":
    main()

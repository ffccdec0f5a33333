"""Search over gRPC under concurrent load, with the CPU each side spends, against the
embedder's own best throughput.

    python benchmarks/search_load.py --model model.onnx --index index/ --images DIR
    python benchmarks/search_load.py --target host:50051 --metrics http://host:9464/metrics \
        --images DIR     # a server already running (a container)

The clients run in processes of their own (``--processes``, threads inside), so
the load they cost is measured, not hidden in the server's budget: each level
prints requests/s, p50/p99 latency and errors, the clients' CPU (cores), the
server's CPU (cores and ms per request, from /proc for a server started here,
else from its Prometheus ``process_cpu_seconds_total``), the server's time per
request in each Search stage (``lookalike_stage_seconds``), and the ratio of
requests/s to raw onnxruntime's images/s at its best batch size, measured in
the same run (when ``--model`` is given).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

STAGES = ("decode", "crop", "embed", "knn", "response")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def raw_best(model: Path, seconds: float) -> tuple[float, int]:
    """onnxruntime's best images/s over batch sizes, and that batch size."""
    from lookalike.server.vision.embedder import Embedder

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


def client_process(
    target: str,
    images: list[bytes],
    threads: int,
    first: int,
    step: int,
    window: tuple[float, float],
    out,
) -> None:
    """One load process: ``threads`` clients sending within ``window`` (time.time() from,
    until); sends back (latencies in s, errors, this process's CPU seconds meanwhile)."""
    from lookalike.client import LookalikeError, SearchClient

    latencies: list[float] = []
    errors = [0]
    begin, until = window
    clients = [SearchClient(target, retries=0, timeout=60) for _ in range(threads)]
    time.sleep(max(0.0, begin - time.time()))
    cpu_before = time.process_time()

    def worker(n: int, client: SearchClient) -> None:
        with client:
            i = n
            while time.time() < until:
                started = time.perf_counter()
                try:
                    client.search(images[i % len(images)], k=20)
                    latencies.append(time.perf_counter() - started)
                except LookalikeError:
                    errors[0] += 1
                i += step

    pool = [
        threading.Thread(target=worker, args=(first + n, client))
        for n, client in enumerate(clients)
    ]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    out.send((latencies, errors[0], time.process_time() - cpu_before))
    out.close()


@dataclass(frozen=True)
class ServerSample:
    cpu_seconds: float
    stage_seconds: dict[str, float]


class ServerProbe:
    """The server's CPU seconds and stage sums: from /proc for a local pid, from /metrics
    for CPU and stages when a metrics URL is given."""

    def __init__(self, pid: int | None, metrics_url: str | None) -> None:
        self.pid, self.metrics_url = pid, metrics_url

    def sample(self) -> ServerSample:
        metrics = self._metrics()
        stages = {
            stage: float(metrics.get(f'lookalike_stage_seconds_sum{{stage="{stage}"}}', 0.0))
            for stage in STAGES
        }
        if self.pid is not None:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
            cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        else:
            cpu = float(metrics.get("process_cpu_seconds_total", "nan"))
        return ServerSample(cpu, stages)

    def _metrics(self) -> dict[str, str]:
        if not self.metrics_url:
            return {}
        with urllib.request.urlopen(self.metrics_url, timeout=10) as answer:
            text = answer.read().decode()
        pattern = re.compile(r"^(\S+(?:\{[^}]*\})?) (\S+)$")
        return {m[1]: m[2] for line in text.splitlines() if (m := pattern.match(line))}


def run_level(
    target: str,
    images: list[bytes],
    concurrency: int,
    processes: int,
    seconds: float,
    probe: ServerProbe,
) -> tuple[dict, ServerSample, ServerSample]:
    """One load level: ``concurrency`` clients spread over ``processes`` processes, and the
    server sampled as they begin and as the last one reports."""
    context = multiprocessing.get_context("spawn")
    processes = max(1, min(processes, concurrency))
    shares = [concurrency // processes + (n < concurrency % processes) for n in range(processes)]
    begin = time.time() + 5  # the processes start (spawn) before the clock runs
    window = (begin, begin + seconds)
    pipes, workers, first = [], [], 0
    for share in shares:
        receive, send = context.Pipe(duplex=False)
        worker = context.Process(
            target=client_process,
            args=(target, images, share, first, concurrency, window, send),
        )
        worker.start()
        pipes.append(receive)
        workers.append(worker)
        first += share
    time.sleep(max(0.0, begin - time.time()))
    before = probe.sample()
    latencies: list[float] = []
    errors, client_cpu = 0, 0.0
    for receive in pipes:
        got, failed, cpu = receive.recv()
        latencies += got
        errors += failed
        client_cpu += cpu
    after = probe.sample()
    for worker in workers:
        worker.join()
    ms = np.array(latencies) * 1e3 if latencies else np.array([np.nan])
    result = {
        "requests": len(latencies),
        "p50": float(np.percentile(ms, 50)),
        "p99": float(np.percentile(ms, 99)),
        "errors": errors,
        "client_cpu": client_cpu,
    }
    return result, before, after


def serve_command(model: Path, index: Path, port: int, metrics_port: int, *extra: str) -> list:
    """`lookalike serve` on loopback ``port``, logging only warnings, metrics on."""
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
        "--metrics-port",
        str(metrics_port),
        "--log-level",
        "WARNING",
        *extra,
    ]


def wait_until_up(target: str, seconds: float = 300) -> None:
    """Until the server's health says SERVING (warm-up over, metrics served)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + seconds
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                answer = health.Check(health_pb2.HealthCheckRequest(), timeout=2)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{target} not SERVING after {seconds} s")
            time.sleep(0.5)


def report(levels: list[int], measure, rate: float | None) -> None:
    stages = " ".join(f"{s + ' ms':>11}" for s in STAGES)
    print(
        f"{'conc':>4} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} {'vs raw':>6} "
        f"{'client cores':>12} {'server cores':>12} {'server CPU ms/req':>17} {stages}",
        flush=True,
    )
    for concurrency in levels:
        result, seconds, before, after = measure(concurrency)
        done = max(1, result["requests"])
        rps = result["requests"] / seconds
        cpu = after.cpu_seconds - before.cpu_seconds
        per_stage = " ".join(
            f"{(after.stage_seconds[s] - before.stage_seconds[s]) * 1e3 / done:>11.2f}"
            for s in STAGES
        )
        print(
            f"{concurrency:>4} {rps:>7.1f} {result['p50']:>8.1f} {result['p99']:>8.1f} "
            f"{result['errors']:>6} {(rps / rate if rate else float('nan')):>6.2f} "
            f"{result['client_cpu'] / seconds:>12.2f} {cpu / seconds:>12.2f} "
            f"{cpu * 1e3 / done:>17.1f} {per_stage}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="the model: raw onnxruntime, and serve it")
    parser.add_argument("--index", type=Path, help="the index to serve (with --model)")
    parser.add_argument("--target", help="HOST:PORT of a server already running")
    parser.add_argument("--metrics", help="its Prometheus URL (server CPU and stages)")
    parser.add_argument("--images", type=Path, required=True, help="folder of query images")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--processes", type=int, default=4, help="client processes at most")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--serve-args", default="", help="extra flags for lookalike serve")
    args = parser.parse_args()
    if not args.target and not (args.model and args.index):
        parser.error("give --model and --index (a server started here) or --target")
    images = [p.read_bytes() for p in sorted(args.images.rglob("*.jpg"))[:200]]
    rate = None
    if args.model:
        rate, batch = raw_best(args.model, args.seconds / 3)
        print(f"raw onnxruntime: {rate:.1f} images/s at batch {batch}", flush=True)
    server = None
    if args.target:
        target, probe = args.target, ServerProbe(None, args.metrics)
    else:
        port, metrics_port = free_port(), free_port()
        server = subprocess.Popen(
            serve_command(
                args.model,
                args.index,
                port,
                metrics_port,
                "--max-in-flight",
                "64",
                *args.serve_args.split(),
            )
        )
        target = f"127.0.0.1:{port}"
        probe = ServerProbe(server.pid, f"http://127.0.0.1:{metrics_port}/metrics")
    try:
        wait_until_up(target)

        def measure(concurrency: int):
            result, before, after = run_level(
                target, images, concurrency, args.processes, args.seconds, probe
            )
            return result, args.seconds, before, after

        report(args.concurrency, measure, rate)
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)


if __name__ == "__main__":
    main()

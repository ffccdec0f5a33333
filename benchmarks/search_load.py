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
request in each Search stage (``lookalike_stage_seconds``), the mean embedder
batch, and the ratio of requests/s to raw onnxruntime's images/s at its best
(over batch sizes, and one run on every CPU against a run per CPU on one thread
each, as ``serve --model-instances`` runs them), measured in the same run when
``--model`` is given. ``--rounds N`` repeats the levels, each right after raw
onnxruntime at that best again, and prints the median ratio: on a shared
machine the speed drifts by 10% between minutes, so one ratio of two numbers
taken minutes apart says little.
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

# detect, landmarks and warp are parts of crop (0 where the crop does not detect)
STAGES = ("decode", "crop", "detect", "landmarks", "warp", "embed", "knn", "response")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RawModel:
    """The embedder alone in this process, ``runners`` runs at once: the images/s a
    Search is held against."""

    def __init__(self, model: Path, threads: int | None = None, runners: int = 1) -> None:
        from lookalike.server.vision.embedder import Embedder

        self.embedder = Embedder(model, device="auto", threads=threads)
        self.runners = runners

    @property
    def name(self) -> str:
        return f"{self.runners} x {self.embedder.threads} threads"

    def rate(self, batch: int, seconds: float) -> float:
        size = self.embedder.info.input_size
        pixels = np.zeros((batch, size, size, 3), np.float32)
        self.embedder.embed(pixels)
        done = [0] * self.runners
        until = time.perf_counter() + seconds

        def run(n: int) -> None:
            while time.perf_counter() < until:
                self.embedder.embed(pixels)
                done[n] += batch

        started = time.perf_counter()
        pool = [threading.Thread(target=run, args=(n,)) for n in range(self.runners)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
        return sum(done) / (time.perf_counter() - started)


def raw_best(model: Path, seconds: float) -> tuple[RawModel, float, int]:
    """onnxruntime's best images/s over batch sizes, one run at a time on every CPU or one
    run per CPU on a thread each (as --model-instances serves), and where it was."""
    from lookalike.server.vision.cpus import default_threads

    cpus = default_threads().threads
    best: tuple[float, int, RawModel | None] = (0.0, 1, None)
    for raw in (RawModel(model), RawModel(model, threads=1, runners=cpus)):
        for batch in (1, 4, 8, 16, 32):
            rate = raw.rate(batch, seconds)
            print(f"raw onnxruntime, {raw.name}, batch {batch:>2}: {rate:.1f} images/s")
            if rate > best[0]:
                best = (rate, batch, raw)
        if cpus == 1:
            break
    rate, batch, raw = best
    assert raw is not None
    return raw, rate, batch


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
    batches: float  # embedder runs so far
    batched: float  # images in them


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
        batches = float(metrics.get("lookalike_embed_batch_size_count", 0.0))
        batched = float(metrics.get("lookalike_embed_batch_size_sum", 0.0))
        return ServerSample(cpu, stages, batches, batched)

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


def print_header() -> None:
    stages = " ".join(f"{s + ' ms':>11}" for s in STAGES)
    print(
        f"{'conc':>4} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} {'raw/s':>6} "
        f"{'vs raw':>6} {'batch':>5} {'client cores':>12} {'server cores':>12} "
        f"{'server CPU ms/req':>17} {stages}",
        flush=True,
    )


def print_level(
    concurrency: int,
    result: dict,
    seconds: float,
    before: ServerSample,
    after: ServerSample,
    rate: float | None,
) -> float:
    """One line of the table; returns requests/s over ``rate`` (nan without a rate)."""
    done = max(1, result["requests"])
    rps = result["requests"] / seconds
    ratio = rps / rate if rate else float("nan")
    cpu = after.cpu_seconds - before.cpu_seconds
    runs = after.batches - before.batches
    batch = (after.batched - before.batched) / runs if runs else float("nan")
    per_stage = " ".join(
        f"{(after.stage_seconds[s] - before.stage_seconds[s]) * 1e3 / done:>11.2f}" for s in STAGES
    )
    print(
        f"{concurrency:>4} {rps:>7.1f} {result['p50']:>8.1f} {result['p99']:>8.1f} "
        f"{result['errors']:>6} {(rate or float('nan')):>6.1f} {ratio:>6.2f} {batch:>5.1f} "
        f"{result['client_cpu'] / seconds:>12.2f} {cpu / seconds:>12.2f} "
        f"{cpu * 1e3 / done:>17.1f} {per_stage}",
        flush=True,
    )
    return ratio


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
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="repeat the levels, each after raw onnxruntime at its best batch, re-measured",
    )
    parser.add_argument("--serve-args", default="", help="extra flags for lookalike serve")
    args = parser.parse_args()
    if not args.target and not (args.model and args.index):
        parser.error("give --model and --index (a server started here) or --target")
    images = [p.read_bytes() for p in sorted(args.images.rglob("*.jpg"))[:200]]
    raw, rate, batch = None, None, 1
    if args.model:
        raw, rate, batch = raw_best(args.model, args.seconds / 3)
        print(f"raw onnxruntime: {rate:.1f} images/s, {raw.name}, batch {batch}", flush=True)
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

        ratios: dict[int, list[float]] = {level: [] for level in args.concurrency}
        for round_number in range(1, args.rounds + 1):
            if args.rounds > 1:
                print(f"-- round {round_number} of {args.rounds}", flush=True)
            print_header()
            for concurrency in args.concurrency:
                if raw is not None and args.rounds > 1:
                    rate = raw.rate(batch, args.seconds)  # just before: the machine drifts
                result, before, after = run_level(
                    target, images, concurrency, args.processes, args.seconds, probe
                )
                ratio = print_level(concurrency, result, args.seconds, before, after, rate)
                ratios[concurrency].append(ratio)
        if args.rounds > 1 and raw is not None:
            for concurrency, values in ratios.items():
                listed = ", ".join(f"{value:.2f}" for value in values)
                print(
                    f"concurrency {concurrency}: median {np.median(values):.2f} of raw "
                    f"({raw.name}, batch {batch}) over {len(values)} rounds ({listed})",
                    flush=True,
                )
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)


if __name__ == "__main__":
    main()

"""Search throughput with onnxruntime's pool sized by --threads' default against wrong sizes.

    python benchmarks/threads.py --model model.onnx --index index/ --images DIR [--quota 1]

With write access to the cgroup file system (root), it makes a cgroup with a
CPU quota of ``--quota`` CPUs (v2 cpu.max, or v1 cpu.cfs_quota_us) and runs each
`lookalike serve` inside it, as a container limited to that many CPUs would be:
once with no --threads (the default reads the quota), then with --threads set
to the CPUs the host shows (what onnxruntime picks on its own) and to 4 times
that. Without that access it runs them unconfined and says so. Each server gets
the same concurrent Search load for ``--seconds``; printed are requests/s, p50
and p99 latency, and each setting's requests/s as a ratio of the default's.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import time
from pathlib import Path

from search_load import free_port, load, serve_command

from lookalike.client import SearchClient
from lookalike.server.vision.cpus import CGROUP_ROOT, usable_cpus


def make_cgroup(quota: float) -> Path | None:
    """A fresh cgroup limited to ``quota`` CPUs, or None when cgroups are not writable."""
    period = 100_000
    name = f"lookalike-bench-{os.getpid()}"
    for folder, files in (
        (CGROUP_ROOT / name, {"cpu.max": f"{int(quota * period)} {period}"}),
        (CGROUP_ROOT / "cpu" / name, {"cpu.cfs_quota_us": str(int(quota * period))}),
    ):
        if not (folder.parent / "cgroup.procs").exists():
            continue
        try:
            folder.mkdir()
            for file, text in files.items():
                (folder / file).write_text(text)
            return folder
        except OSError:
            continue
    return None


def serve(model: Path, index: Path, port: int, cgroup: Path | None, threads: int | None):
    def enter_cgroup() -> None:
        if cgroup is not None:
            (cgroup / "cgroup.procs").write_text(str(os.getpid()))

    extra = ["--device", "cpu", "--warmup-runs", "1"]
    extra += ["--threads", str(threads)] if threads else []
    return subprocess.Popen(serve_command(model, index, port, *extra), preexec_fn=enter_cgroup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--images", type=Path, required=True, help="folder of query images")
    parser.add_argument("--quota", type=float, default=1.0, help="CPUs of the cgroup (1)")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    images = [p.read_bytes() for p in sorted(args.images.rglob("*.jpg"))[:200]]
    cgroup = make_cgroup(args.quota)
    host = usable_cpus()
    print(
        f"host CPUs usable: {host}; "
        + (
            f"servers in cgroup {cgroup} limited to {args.quota:g} CPUs"
            if cgroup
            else "cgroups not writable: servers run unconfined"
        )
        + f"; {args.concurrency} concurrent clients, {args.seconds:g} s each"
    )
    header = ("--threads", "in use", "req/s", "p50 ms", "p99 ms", "vs default")
    print("{:>22} {:>6} {:>7} {:>8} {:>8} {:>10}".format(*header))
    baseline = None
    try:
        for label, threads in (
            ("default (quota)", None),
            (f"{host} (host CPUs)", host),
            (f"{4 * host} (4x host CPUs)", 4 * host),
        ):
            port = free_port()
            server = serve(args.model, args.index, port, cgroup, threads)
            target = f"127.0.0.1:{port}"
            try:
                with SearchClient(target) as client:
                    client.wait_until_ready(300)
                    in_use = client.info().intra_op_threads
                result = load(target, images, args.concurrency, args.seconds)
            finally:
                server.send_signal(signal.SIGTERM)
                server.wait(timeout=60)
            baseline = baseline or result["rps"]
            print(
                f"{label:>22} {in_use:>6} {result['rps']:>7.2f} {result['p50']:>8.0f} "
                f"{result['p99']:>8.0f} {result['rps'] / baseline:>10.2f}",
                flush=True,
            )
    finally:
        if cgroup is not None:
            time.sleep(0.5)  # the last server's process must have left it
            cgroup.rmdir()


if __name__ == "__main__":
    main()

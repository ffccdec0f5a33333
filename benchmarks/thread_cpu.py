"""The CPU each thread of a running process uses over a window: where a server's cores go.

    python benchmarks/thread_cpu.py PID [--seconds 15] [--top 14]

Reads /proc/PID/task/*/stat before and after the window (Linux). Python names its
threads only for itself, so match thread ids with `py-spy dump --pid PID`: in a
lookalike server the batcher thread(s), the search_N workers, the gRPC poller; the
onnxruntime pool threads are the unnamed ones started before the batcher.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds so far of each thread of ``pid``, by thread id."""
    ticks = os.sysconf("SC_CLK_TCK")
    seconds = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        seconds[task.name] = (int(fields[11]) + int(fields[12])) / ticks
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pid", type=int)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--top", type=int, default=14, help="threads listed, busiest first")
    args = parser.parse_args()
    before = thread_cpu(args.pid)
    time.sleep(args.seconds)
    after = thread_cpu(args.pid)
    used = {tid: cpu - before.get(tid, 0.0) for tid, cpu in after.items()}
    print(f"total {sum(used.values()) / args.seconds:.2f} cores over {args.seconds:g} s")
    for tid, cpu in sorted(used.items(), key=lambda pair: -pair[1])[: args.top]:
        print(f"thread {tid}: {cpu / args.seconds:.3f} cores")


if __name__ == "__main__":
    main()

"""How many CPUs this process may really use: the container's quota, not the host's cores.

onnxruntime sizes its intra-op pool from the host's core count. In a container
limited to 2 CPUs on a 64-core node that is 64 threads time-sliced onto 2 CPUs'
worth of quota, and every search waits on throttled threads. The quota is in the
cgroup: ``cpu.max`` ("QUOTA PERIOD" or "max PERIOD") under cgroup v2,
``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` under v1.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class CpuBudget:
    threads: int
    source: str  # why this many, for the log

    def shared(self, instances: int) -> CpuBudget:
        """Each of ``instances`` model runs' share: they run at once, so no more threads
        in all than the budget."""
        if instances <= 1:
            return self
        threads = max(1, self.threads // instances)
        return CpuBudget(threads, f"{self.source}; shared by {instances} model instances")


def _own_cgroup_dirs(root: Path, proc_cgroup: Path, controller: str) -> list[Path]:
    """Where this process's cgroup files may be: its own path, then the mount's root
    (a container with its own cgroup namespace sees its cgroup at the root)."""
    dirs = []
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controller == "" and controllers == "":
            dirs.append(root / path.lstrip("/"))
        elif controller and controller in controllers.split(","):
            dirs.append(root / controllers / path.lstrip("/"))
    dirs.append(root if controller == "" else root / controller)
    return dirs


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def cgroup_cpu_quota(
    root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")
) -> float | None:
    """The CPU quota in CPUs (1.5 for "150000 100000"), or None when there is none."""
    for folder in _own_cgroup_dirs(root, proc_cgroup, ""):
        text = _read(folder / "cpu.max")
        if text:
            quota, _, period = text.partition(" ")
            return None if quota == "max" else int(quota) / int(period or 100000)
    for folder in _own_cgroup_dirs(root, proc_cgroup, "cpu"):
        quota, period = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
        if quota and period:
            return None if int(quota) < 0 else int(quota) / int(period)
    return None


def usable_cpus() -> int:
    """CPUs this process may be scheduled on (its affinity), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_threads(
    root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")
) -> CpuBudget:
    """One intra-op thread per CPU of quota (rounded up), never more than the usable CPUs."""
    cpus = usable_cpus()
    quota = cgroup_cpu_quota(root, proc_cgroup)
    if quota is None:
        return CpuBudget(cpus, f"no cgroup CPU quota; {cpus} usable CPUs")
    threads = max(1, min(cpus, math.ceil(quota)))
    return CpuBudget(threads, f"cgroup CPU quota {quota:g} CPUs; {cpus} usable CPUs")

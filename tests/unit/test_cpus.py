"""--threads: onnxruntime's pool sized by the container's CPU quota (cgroup v1 and v2), not
the host's cores."""

from __future__ import annotations

import math

import pytest

from lookalike.server.vision.cpus import cgroup_cpu_quota, default_threads, usable_cpus


def cgroup_tree(tmp_path, proc_line: str, files: dict[str, str]):
    """A real cgroup-like folder and a /proc/self/cgroup file naming this process's place."""
    root = tmp_path / "cgroup"
    for relative, text in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text + "\n")
    proc = tmp_path / "proc-cgroup"
    proc.write_text(proc_line + "\n")
    return root, proc


@pytest.mark.parametrize(
    ("proc_line", "files", "quota"),
    [
        ("0::/", {"cpu.max": "150000 100000"}, 1.5),  # v2, own cgroup namespace
        ("0::/kubepods/pod1/c1", {"kubepods/pod1/c1/cpu.max": "50000 100000"}, 0.5),
        ("0::/", {"cpu.max": "max 100000"}, None),  # v2, no limit
        (
            "4:cpu,cpuacct:/docker/abc",
            {
                "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "200000",
                "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000",
            },
            2.0,
        ),
        (
            "4:cpu,cpuacct:/",
            {"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"},
            None,
        ),
        ("0::/", {}, None),  # no cgroup files at all
    ],
)
def test_cgroup_quota_is_read_from_v1_and_v2(tmp_path, proc_line, files, quota):
    root, proc = cgroup_tree(tmp_path, proc_line, files)
    assert cgroup_cpu_quota(root, proc) == quota
    budget = default_threads(root, proc)
    expected = usable_cpus() if quota is None else max(1, min(usable_cpus(), math.ceil(quota)))
    assert budget.threads == expected
    assert budget.source.startswith("cgroup CPU quota") == (quota is not None)

"""--threads: onnxruntime's pool sized by the container's CPU quota, not the host's cores."""

from __future__ import annotations

import math

import pytest

from lookalike.client import SearchClient
from lookalike.server.vision.cpus import cgroup_cpu_quota, default_threads, usable_cpus
from lookalike.server.vision.embedder import Embedder
from tests.serving import (
    free_port,
    in_process_server,
    start_server_process,
    wait_until_serving,
)


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


def test_get_info_reports_the_threads_in_use(onnx_model, index_dir):
    one = Embedder(onnx_model, "cpu", threads=1)
    with in_process_server(one, index_dir) as target, SearchClient(target) as client:
        assert client.info().intra_op_threads == 1
    default = Embedder(onnx_model, "cpu")
    assert default.threads == default_threads().threads
    with in_process_server(default, index_dir) as target, SearchClient(target) as client:
        assert client.info().intra_op_threads == default_threads().threads


def test_serve_logs_its_threads_and_refuses_zero(onnx_model, index_dir):
    port = free_port()
    server = start_server_process(onnx_model, index_dir, port, "--threads", "1")
    try:
        wait_until_serving(f"127.0.0.1:{port}", server)
    finally:
        server.terminate()
        _, log = server.communicate(timeout=60)
    assert "1 intra-op threads (--threads)" in log
    assert "(1 intra-op threads)" in log

    refused = start_server_process(onnx_model, index_dir, free_port(), "--threads", "0")
    _, err = refused.communicate(timeout=120)
    assert refused.returncode == 2
    assert "--threads must be at least 1" in err

"""Prometheus metrics of an in-process server: calls counted by RPC and status, the execution
provider and the stages; listening on loopback by default."""

from __future__ import annotations

import socket
import urllib.request

import pytest

from lookalike.client import LookalikeError, SearchClient
from lookalike.server.index.build import build_index
from lookalike.server.vision.imaging import Crop
from tests.serving import (
    non_loopback_address,
    running_server,
    scrape,
)


def test_metrics_listen_on_loopback_by_default(embedder, index_dir):
    with running_server(embedder, index_dir, host="0.0.0.0", metrics_port=0) as server:
        port = server.metrics_port
        assert server.telemetry._http.server_address[0] == "127.0.0.1"
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
        assert b"lookalike_requests_total" in body or b"lookalike_gallery_size" in body
        address = non_loopback_address()
        if address is not None:  # reachable from this machine only
            with pytest.raises(OSError), socket.create_connection((address, port), timeout=5):
                pass


def test_metrics_count_calls_by_status_and_show_the_provider(embedder, index_dir, gallery_dir):
    good = (gallery_dir / "person_00" / "person_00_0001.jpg").read_bytes()
    with running_server(embedder, index_dir, metrics_port=0) as server:
        with SearchClient(f"127.0.0.1:{server.port}") as client:
            for _ in range(3):
                client.search(good, k=2)
            with pytest.raises(LookalikeError):
                client.search(b"not an image", k=2)
            client.info()
        metrics = scrape(server.metrics_port)
    assert metrics[("lookalike_requests_total", (("code", "OK"), ("rpc", "Search")))] == 3
    assert (
        metrics[("lookalike_requests_total", (("code", "INVALID_ARGUMENT"), ("rpc", "Search")))]
        == 1
    )
    assert metrics[("lookalike_requests_total", (("code", "OK"), ("rpc", "GetInfo")))] == 1
    assert metrics[("lookalike_execution_provider", (("provider", "CPUExecutionProvider"),))] == 1
    assert metrics[("lookalike_gallery_size", ())] == 18
    assert metrics[("lookalike_stage_seconds_count", (("stage", "embed"),))] == 3
    assert metrics[("lookalike_embed_batch_size_count", ())] == 3
    assert metrics[("lookalike_searches_in_flight", ())] == 0
    assert metrics[("lookalike_warmup_seconds", ())] > 0


def stage_samples(metrics: dict, kind: str) -> dict[str, float]:
    """``kind`` ("count" or "sum") of lookalike_stage_seconds, by stage."""
    name = f"lookalike_stage_seconds_{kind}"
    return {dict(labels)["stage"]: value for (key, labels), value in metrics.items() if key == name}


def test_an_aligned_crop_is_split_into_detect_landmarks_and_warp(
    embedder, gallery_dir, index_dir, tmp_path
):
    """Failed before: the crop stage was one figure, detection, landmarks and warp in it."""
    aligned = tmp_path / "aligned"
    build_index(gallery_dir, embedder, aligned, Crop("align"), progress=False)
    query = (gallery_dir / "person_00" / "person_00_0001.jpg").read_bytes()
    scraped = {}
    for name, index in (("aligned", aligned), ("centre", index_dir)):
        with running_server(embedder, index, metrics_port=0) as server:
            with SearchClient(f"127.0.0.1:{server.port}") as client:
                client.search(query, k=2)
                client.search(query, k=2)
            scraped[name] = scrape(server.metrics_port)
    counts, sums = (
        stage_samples(scraped["aligned"], "count"),
        stage_samples(scraped["aligned"], "sum"),
    )
    assert {stage: counts[stage] for stage in ("crop", "detect", "landmarks", "warp")} == {
        "crop": 2,
        "detect": 2,
        "landmarks": 2,
        "warp": 2,
    }
    assert 0 < sums["detect"] + sums["landmarks"] + sums["warp"] <= sums["crop"]
    centre = stage_samples(scraped["centre"], "count")
    assert centre["crop"] == 2 and not {"detect", "landmarks", "warp"} & set(centre)

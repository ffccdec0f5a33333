"""The `lookalike` command as a user runs it: real subprocesses (index, serve, search, info,
to-milvus, sample-gallery), --json results and no progress bar off a terminal, a real signal."""

from __future__ import annotations

import json
import signal

from lookalike.server.index.store import GalleryIndex
from tests.serving import free_port, run_cli, start_server_process, wait_until_serving


def test_index_serve_search_and_sigterm(onnx_model, gallery_dir, tmp_path):
    index = tmp_path / "index"
    built = run_cli(
        "index",
        str(gallery_dir),
        "--model",
        str(onnx_model),
        "--out",
        str(index),
        "--device",
        "cpu",
        "--crop",
        "center",
    )
    assert built.returncode == 0, built.stderr
    assert "indexed 18 images" in built.stdout
    assert GalleryIndex.open(index).manifest.crop.mode == "center"

    port = free_port()
    server = start_server_process(onnx_model, index, port)
    try:
        wait_until_serving(f"127.0.0.1:{port}", server)
        query = gallery_dir / "person_05" / "person_05_0003.jpg"
        table = run_cli("search", str(query), "--server", f"127.0.0.1:{port}", "-k", "4")
        assert table.returncode == 0, table.stderr
        first_row = table.stdout.splitlines()[1].split()
        assert first_row[0] == "1" and first_row[2:] == [
            "person_05",
            "person_05/person_05_0003.jpg",
        ]

        as_json = run_cli(
            "search", str(query), "--server", f"127.0.0.1:{port}", "-k", "4", "--json"
        )
        matches = json.loads(as_json.stdout)["matches"]
        assert [m["rank"] for m in matches] == [1, 2, 3, 4]
        assert matches[0]["distance"] < 1e-3

        info = json.loads(run_cli("info", "--server", f"127.0.0.1:{port}", "--json").stdout)
        assert info["gallery_size"] == 18 and info["execution_provider"] == "CPUExecutionProvider"

        bad = run_cli("search", str(gallery_dir), "--server", f"127.0.0.1:{port}")
        assert bad.returncode == 2 and "no such image file" in bad.stderr
        junk = tmp_path / "junk.jpg"
        junk.write_bytes(b"junk")
        refused = run_cli("search", str(junk), "--server", f"127.0.0.1:{port}")
        assert refused.returncode == 1 and "INVALID_ARGUMENT" in refused.stderr
    finally:
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=60)
    assert server.returncode == 0, stderr
    assert "received SIGTERM" in stderr


def test_search_with_no_server_is_unavailable(tmp_path, gallery_dir):
    query = gallery_dir / "person_00" / "person_00_0001.jpg"
    result = run_cli("search", str(query), "--server", f"127.0.0.1:{free_port()}", "--timeout", "3")
    assert result.returncode == 1
    assert "UNAVAILABLE" in result.stderr or "DEADLINE_EXCEEDED" in result.stderr


def test_json_results_and_no_progress_bar_off_a_terminal(onnx_model, gallery_dir, tmp_path):
    sample = run_cli(
        "sample-gallery", str(tmp_path / "s"), "--people", "2", "--photos", "1", "--json"
    )
    assert json.loads(sample.stdout)["images"] == 2

    index = tmp_path / "index"
    built = run_cli(
        "index", str(gallery_dir), "--model", str(onnx_model), "--out", str(index),
        "--device", "cpu", "--json",
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    report = json.loads(built.stdout)
    assert report["rows"] == 18 and report["path"] == str(index) and report["skipped"] == []
    # stderr is a pipe here, not a terminal: no tqdm bar (it redraws with carriage returns).
    assert "\r" not in built.stderr and "img/s" not in built.stderr

    loaded = run_cli(
        "to-milvus", str(index), "--milvus-uri", str(tmp_path / "m.db"), "--collection", "c",
        "--json",
    )  # fmt: skip
    assert loaded.returncode == 0, loaded.stderr
    assert json.loads(loaded.stdout)["rows"] == 18
    assert "\r" not in loaded.stderr

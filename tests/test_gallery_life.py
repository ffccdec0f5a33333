"""Index integrity at load, and switching a live server to a rebuilt index."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest

from lookalike.client import LookalikeError, SearchClient
from lookalike.server.index.build import build_index
from lookalike.server.index.store import FEATURES, GalleryIndex, InvalidIndexError
from tests.serving import free_port, in_process_server, start_server_process, wait_until_serving


def gallery_of(source, people, into):
    for person in people:
        shutil.copytree(source / person, into / person)
    return into


def test_changed_feature_bytes_are_refused_at_load(index_dir, tmp_path):
    copy = tmp_path / "index"
    shutil.copytree(index_dir, copy)
    data = bytearray((copy / FEATURES).read_bytes())
    data[-100] ^= 0xFF  # same size, same header: only the checksum can tell
    (copy / FEATURES).write_bytes(bytes(data))
    with pytest.raises(InvalidIndexError, match="does not match the checksum"):
        GalleryIndex.open(copy)


def test_reload_under_load_loses_no_call_and_serves_the_new_gallery(
    embedder, gallery_dir, tmp_path
):
    first = gallery_of(gallery_dir, ["person_00", "person_01"], tmp_path / "first")
    second = gallery_of(gallery_dir, ["person_03", "person_04", "person_05"], tmp_path / "second")
    served = tmp_path / "index"
    build_index(first, embedder, served, progress=False)
    query = (gallery_dir / "person_04" / "person_04_0001.jpg").read_bytes()
    per_thread: list[list[object]] = [[] for _ in range(4)]
    stop = threading.Event()

    with in_process_server(embedder, served) as target:

        def search_until_stopped(outcomes: list[object]) -> None:
            with SearchClient(target, retries=0) as client:
                while not stop.is_set():
                    try:
                        outcomes.append({m.label for m in client.search(query, k=6).matches})
                    except LookalikeError as error:
                        outcomes.append(error.code)

        threads = [
            threading.Thread(target=search_until_stopped, args=(outcomes,))
            for outcomes in per_thread
        ]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        build_index(second, embedder, served, progress=False)  # rebuilt in place, atomically
        with SearchClient(target) as client:
            old_version = client.info().index_version
            version, size = client.reload_index()
            assert size == 9 and version != old_version
            assert client.info().index_version == version
        time.sleep(0.5)
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    old_people, new_people = {"person_00", "person_01"}, {"person_03", "person_04", "person_05"}
    for outcomes in per_thread:  # each caller's calls, in the order it made them
        assert all(isinstance(o, set) for o in outcomes), outcomes  # no call failed
        on_new = [labels <= new_people for labels in outcomes]
        assert all(labels <= old_people or labels <= new_people for labels in outcomes)
        assert not on_new[0] and on_new[-1]
        assert on_new == sorted(on_new)  # once on the new gallery, never back


def test_refused_reload_keeps_the_old_index(server_target, tmp_path):
    with SearchClient(server_target) as client:
        before = client.info().index_version
        with pytest.raises(LookalikeError) as raised:
            client.reload_index(str(tmp_path / "no-such-index"))
        assert raised.value.code == grpc.StatusCode.PERMISSION_DENIED
        assert str(tmp_path) not in raised.value.message
        assert client.info().index_version == before


def test_sighup_reloads_the_served_folder(onnx_model, embedder, gallery_dir, tmp_path):
    served = tmp_path / "index"
    build_index(
        gallery_of(gallery_dir, ["person_02"], tmp_path / "a"), embedder, served, progress=False
    )
    port = free_port()
    server = start_server_process(onnx_model, served, port)
    try:
        wait_until_serving(f"127.0.0.1:{port}", server)
        with SearchClient(f"127.0.0.1:{port}") as client:
            assert client.info().gallery_size == 3
            build_index(
                gallery_of(gallery_dir, ["person_02", "person_05"], tmp_path / "b"),
                embedder,
                served,
                progress=False,
            )
            server.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 30
            while client.info().gallery_size != 6 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert client.info().gallery_size == 6
    finally:
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=60)
    assert server.returncode == 0 and "switched from gallery" in stderr


def test_killed_build_leaves_the_old_index_and_resumes_to_the_same_features(
    onnx_model, embedder, gallery_dir, tmp_path
):
    from tests.imagegen import write_gallery

    big = write_gallery(tmp_path / "big", people=60, photos=5, size=64)
    out = tmp_path / "index"
    build_index(
        gallery_of(gallery_dir, ["person_00"], tmp_path / "old"), embedder, out, progress=False
    )
    old_version = GalleryIndex.open(out).manifest.version
    command = [
        sys.executable,
        "-m",
        "lookalike.client.cli",
        "index",
        str(big),
        "--model",
        str(onnx_model),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--batch-size",
        "2",
    ]
    build = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    journal = tmp_path / ".index.building" / "journal.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and build.poll() is None:
        if journal.exists() and journal.read_text().count("\n") >= 31:
            build.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    build.communicate(timeout=60)
    assert build.returncode == -signal.SIGKILL, "the build ended before it could be killed"
    assert GalleryIndex.open(out).manifest.version == old_version  # untouched and valid
    done = journal.read_text().count("\n") - 1  # the first line is the header
    assert 30 <= done < 300

    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f": {300 - done} embedded" in resumed.stdout  # only what the kill left undone
    fresh = build_index(big, embedder, tmp_path / "fresh", batch_size=2, progress=False)
    a, b = GalleryIndex.open(out), GalleryIndex.open(tmp_path / "fresh")
    assert len(a) == len(b) == fresh.rows == 300
    assert [i.path for i in a.manifest.items] == [i.path for i in b.manifest.items]
    np.testing.assert_allclose(a.features, b.features, rtol=1e-4, atol=1e-4)
    assert not (tmp_path / ".index.building").exists()

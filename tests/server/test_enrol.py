"""Enrolment and erasure on a live server, on both backends: AddImages, RemoveImages,
ListImages, CompactIndex through both clients and the command line (a server killed with
kill -9 after a change: tests/e2e/test_crashes.py)."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import subprocess
import threading
import time

import grpc
import numpy as np
import pytest

from lookalike.client import AsyncSearchClient, LookalikeError, NewImage, SearchClient
from lookalike.server.index.build import build_index
from lookalike.server.index.store import GalleryIndex
from lookalike.server.vision.imaging import WHOLE_FRAME, load
from lookalike.v1 import search_pb2, search_pb2_grpc
from tests.imagegen import person_image, person_jpeg
from tests.serving import (
    LOOKALIKE,
    in_process_server,
    running_server,
)


def labels_found(client: SearchClient, query: bytes) -> set[str]:
    return {match.label for match in client.search(query, k=100).matches}


def test_twenty_images_added_while_four_clients_search_are_each_found_at_once(live, embedder):
    root, index, settings = live
    queries = [(root / "person_00" / "person_00_0001.jpg").read_bytes(), person_jpeg(2, 5)]
    failures: list[Exception] = []
    searches = [0] * 4
    stop = threading.Event()
    with in_process_server(embedder, index, **settings) as target:

        def search_until_stopped(worker: int) -> None:
            with SearchClient(target, retries=0) as client:
                while not stop.is_set():
                    try:
                        client.search(queries[worker % 2], k=5)
                        searches[worker] += 1
                    except LookalikeError as error:
                        failures.append(error)

        threads = [threading.Thread(target=search_until_stopped, args=(w,)) for w in range(4)]
        for thread in threads:
            thread.start()
        try:
            with SearchClient(target, retries=0) as client:
                for n in range(20):
                    person, shot = 10 + n // 2, n % 2
                    (added,) = client.add_images(
                        [NewImage(person_jpeg(person, shot), f"new_{person}")]
                    )
                    assert added.result == "added", added
                    top, second = client.search(person_jpeg(person, shot), k=2).matches
                    assert (top.id, top.label) == (added.id, f"new_{person}")
                    # not 0: a search shares its embedder run with others (batch size
                    # changes onnxruntime's float sums a little)
                    assert top.distance < 0.05 * second.distance
                assert client.info().gallery_size == 12 + 20
        finally:
            stop.set()
            for thread in threads:
                thread.join()
    assert failures == [] and min(searches) > 0
    assert len(list(root.glob("new_*/*.jpg"))) == 20


def test_a_removed_person_never_comes_back_after_restart_or_compaction(live, embedder):
    root, index, settings = live
    person_01 = sorted((root / "person_01").glob("*.jpg"))
    queries = [path.read_bytes() for path in person_01]
    with in_process_server(embedder, index, **settings) as target, SearchClient(target) as client:
        assert all("person_01" in labels_found(client, q) for q in queries)
        (by_label,) = client.remove_images(labels=["person_01"])
        assert (by_label.result, len(by_label.removed)) == ("removed", 3)
        for query in queries:
            assert "person_01" not in labels_found(client, query)
        again = client.remove_images(labels=["person_01"], images=[queries[0]])
        assert [r.result for r in again] == ["not_found", "not_found"]
        assert client.list_images("person_01") == []
    with in_process_server(embedder, index, **settings) as target, SearchClient(target) as client:
        assert all("person_01" not in labels_found(client, q) for q in queries)
        client.compact()
        assert all("person_01" not in labels_found(client, q) for q in queries)
        assert client.info().gallery_size == 9
    with in_process_server(embedder, index, **settings) as target, SearchClient(target) as client:
        assert all("person_01" not in labels_found(client, q) for q in queries)
    assert all(path.exists() for path in person_01)  # no --delete-files


def test_erasure_leaves_no_vector_file_or_thumbnail_and_logs_no_face(
    embedder, gallery_dir, tmp_path, caplog
):
    root = tmp_path / "gallery"
    for person in range(3):
        shutil.copytree(gallery_dir / f"person_{person:02d}", root / f"person_{person:02d}")
    index = tmp_path / "indexes" / "index"
    build_index(root, embedder, index, progress=False)
    kept = np.asarray(GalleryIndex.open(index).features).copy()
    items = GalleryIndex.open(index).manifest.items
    doomed = [row for row, item in enumerate(items) if item.label == "person_01"]
    with (
        caplog.at_level(logging.INFO),
        in_process_server(embedder, index) as target,
        SearchClient(target) as client,
    ):
        (added,) = client.add_images([NewImage(person_jpeg(1, 7), "person_01", "extra")])
        assert added.result == "added" and (root / added.path).is_file()
        (gone,) = client.remove_images(labels=["person_01"], delete_files=True)
        assert len(gone.removed) == 4 and all(g.file_deleted for g in gone.removed)
        assert not (root / "person_01").exists() or not any((root / "person_01").iterdir())
        query = (gallery_dir / "person_01" / "person_01_0001.jpg").read_bytes()
        matches = client.search(query, k=100, thumbnails=True).matches
        assert "person_01" not in {m.label for m in matches}
        assert all(m.thumbnail for m in matches)
        client.compact()
    pixels = load(person_jpeg(1, 7), WHOLE_FRAME, embedder.info.input_size).pixels
    added_vector = embedder.embed(pixels[np.newaxis])[0]
    written = b"".join(p.read_bytes() for p in (tmp_path / "indexes").rglob("*") if p.is_file())
    for vector in [kept[row] for row in doomed] + [added_vector]:
        assert vector.tobytes()[:64] not in written
    assert all(kept[row].tobytes() in written for row in range(len(kept)) if row not in doomed)
    removal_lines = [r.getMessage() for r in caplog.records if "removed" in r.getMessage()]
    assert removal_lines and all("person_01" not in line for line in removal_lines)
    assert any(items[doomed[0]].id in line for line in removal_lines)


def test_changes_are_idempotent_and_bad_items_fail_alone(embedder, live, backend):
    root, index, settings = live
    if backend == "milvus":
        pytest.skip("the same checks as memmap; one backend is enough")
    with in_process_server(embedder, index, **settings) as target, SearchClient(target) as client:
        batch = [
            NewImage(person_jpeg(20), "new_20"),
            NewImage(b"not an image", "new_21"),
            NewImage(person_jpeg(22), "../escape"),
            NewImage(person_jpeg(23), "new_23", "bad/id"),
            NewImage((root / "person_00" / "person_00_0001.jpg").read_bytes(), "someone_else"),
        ]
        first = client.add_images(batch)
        assert [r.result for r in first] == [
            "added",
            "failed",
            "failed",
            "failed",
            "already_present",
        ]
        assert "not an image" in first[1].error and str(root) not in first[1].error
        assert first[4].label == "person_00"
        assert [r.result for r in client.add_images(batch[:1])] == ["already_present"]
        assert [r.result for r in client.remove_images(ids=[first[0].id])] == ["removed"]
        assert [r.result for r in client.remove_images(ids=[first[0].id])] == ["not_found"]
        assert [r.result for r in client.add_images(batch[:1])] == ["added"]  # back again
        with grpc.insecure_channel(target) as channel:
            stub = search_pb2_grpc.SearchServiceStub(channel)
            for method, request in (
                (stub.ListImages, search_pb2.ListImagesRequest(page_token="x")),
                (stub.RemoveImages, search_pb2.RemoveImagesRequest(delete_files=True)),
                (stub.AddImages, search_pb2.AddImagesRequest()),
            ):
                with pytest.raises(grpc.RpcError) as error:
                    method(request, timeout=10)
                assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_admin_calls_need_the_admin_token_when_one_is_set(embedder, live, backend, tmp_path):
    root, index, settings = live
    if backend == "milvus":
        pytest.skip("authentication does not depend on the backend")
    (tmp_path / "admin").write_text("s3cret\n")
    with in_process_server(embedder, index, admin_token_file=tmp_path / "admin") as target:
        with SearchClient(target) as anonymous:
            assert anonymous.search(person_jpeg(0), k=1).matches  # Search stays open
            for call in (
                lambda: anonymous.add_images([NewImage(person_jpeg(30), "new_30")]),
                lambda: anonymous.remove_images(labels=["person_00"]),
                anonymous.list_images,
                anonymous.compact,
            ):
                with pytest.raises(LookalikeError) as error:
                    call()
                assert error.value.code == grpc.StatusCode.UNAUTHENTICATED
        with SearchClient(target, token="s3cret") as admin:
            assert admin.add_images([NewImage(person_jpeg(30), "new_30")])[0].result == "added"
            assert len(admin.list_images()) == 13


def test_the_async_client_adds_lists_removes_and_compacts(embedder, live, backend, tmp_path):
    """The admin calls through AsyncSearchClient, with the admin token as its metadata."""
    root, index, settings = live
    if backend == "milvus":
        pytest.skip("the client does not depend on the backend")
    (tmp_path / "admin").write_text("s3cret\n")

    async def calls(target: str) -> None:
        async with AsyncSearchClient(target) as anonymous:
            with pytest.raises(LookalikeError) as refused:
                await anonymous.list_images()
            assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED
        async with AsyncSearchClient(target, token="s3cret") as client:
            before = (await client.info()).index_version
            new = [NewImage(person_jpeg(70), "new_70", "a70"), NewImage(person_jpeg(71), "new_71")]
            added = await client.add_images(new)
            assert [(r.position, r.result, r.label) for r in added] == [
                (0, "added", "new_70"),
                (1, "added", "new_71"),
            ]
            again = await client.add_images(new[:1])
            assert [(r.result, r.id) for r in again] == [("already_present", added[0].id)]
            top = (await client.search(person_jpeg(71), k=1)).matches[0]
            assert (top.label, top.id) == ("new_71", added[1].id)
            listed = await client.list_images()
            assert len(listed) == 14
            assert {e.label for e in listed if e.pending} == {"new_70", "new_71"}
            (by_id,) = await client.remove_images(ids=["a70"], delete_files=True)
            assert by_id.result == "removed" and by_id.removed[0].file_deleted
            assert not (root / by_id.removed[0].path).exists()
            (by_image,) = await client.remove_images(images=[person_jpeg(70)])
            assert (by_image.selector, by_image.result) == ("image", "not_found")
            version, size, folded = await client.compact()
            assert (size, folded) == (13, 1) and version != before
            assert not any(e.pending for e in await client.list_images())
            assert (await client.info()).index_version == version

    with in_process_server(embedder, index, admin_token_file=tmp_path / "admin") as target:
        asyncio.run(calls(target))


def test_metrics_and_automatic_compaction(embedder, live, backend):
    root, index, settings = live
    if backend == "milvus":
        pytest.skip("memmap's segment and its threshold")
    with running_server(embedder, index, compact_after_rows=3) as server:
        metric = server.telemetry.registry.get_sample_value
        with SearchClient(f"127.0.0.1:{server.port}") as client:
            version = client.info().index_version
            client.add_images(
                [NewImage(person_jpeg(40), "new_40"), NewImage(person_jpeg(41), "new_41")]
            )
            client.add_images([NewImage(person_jpeg(40), "new_40")])
            assert metric("lookalike_rows_pending_compaction") == 2
            assert metric("lookalike_gallery_size") == 14
            added = {"op": "add", "result": "added"}
            assert metric("lookalike_gallery_changes_total", added) == 2
            assert (
                metric("lookalike_gallery_changes_total", {**added, "result": "already_present"})
                == 1
            )
            client.remove_images(ids=["person_03_0001"])  # the third pending row: compacts
            deadline = time.monotonic() + 60
            while client.info().index_version == version and time.monotonic() < deadline:
                time.sleep(0.1)
            assert client.info().index_version != version
            assert metric("lookalike_rows_pending_compaction") == 0
            assert metric("lookalike_gallery_size") == 13
            assert not any(e.pending for e in client.list_images())


def test_the_command_line_adds_lists_removes_and_compacts(embedder, live, backend, tmp_path):
    root, index, settings = live
    if backend == "milvus":
        pytest.skip("the command line does not depend on the backend")
    new = [tmp_path / "a.jpg", tmp_path / "b.png"]
    new[0].write_bytes(person_jpeg(50))
    person_image(50, 1).save(new[1])

    def lookalike(*words: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*LOOKALIKE, *words, "--server", target], capture_output=True, text=True, timeout=120
        )

    with in_process_server(embedder, index) as target:
        added = lookalike("add", *map(str, new), "--label", "new_50", "--external-id", "a")
        assert added.returncode == 2 and "one --external-id per PATH" in added.stderr
        added = lookalike("add", *map(str, new), "--label", "new_50")
        assert added.returncode == 0, added.stderr
        assert added.stdout.count("added") == 2 and "new_50/" in added.stdout
        listed = lookalike("list", "--label", "new_50")
        assert listed.stdout.count("(pending compaction)") == 2, listed.stderr
        removed = lookalike("remove", "--image", str(new[0]), "--delete-files")
        assert removed.returncode == 0 and removed.stdout.count("file deleted") == 1
        compacted = lookalike("compact")
        assert "1 changed rows folded in" in compacted.stdout, compacted.stderr
        listed = lookalike("list", "--label", "new_50").stdout.splitlines()
        assert len(listed) == 1 and listed[0].endswith(".png")
        compacted = json.loads(lookalike("compact", "--json").stdout)
        assert compacted["folded_rows"] == 0 and compacted["gallery_size"] == 13
        (entry,) = json.loads(lookalike("list", "--label", "new_50", "--json").stdout)
        assert entry["path"].endswith(".png") and entry["pending"] is False
        (gone,) = json.loads(lookalike("remove", "--label", "new_50", "--json").stdout)
        assert gone["result"] == "removed" and gone["removed"][0]["id"] == entry["id"]
        assert "no such image" in lookalike("add", "nowhere.jpg", "--label", "x").stderr


def test_after_compaction_the_server_answers_as_one_on_a_fresh_build(live, embedder, tmp_path):
    root, index, settings = live
    with in_process_server(embedder, index, **settings) as target, SearchClient(target) as client:
        new = [NewImage(person_jpeg(60 + n), f"new_{60 + n}", f"x{n}") for n in range(3)]
        assert [r.result for r in client.add_images(new)] == ["added"] * 3
        client.remove_images(labels=["person_02"], delete_files=True)
        client.remove_images(ids=["x1"], delete_files=True)
        client.compact()
        queries = [p.read_bytes() for p in sorted(root.glob("*/*"))] + [
            person_jpeg(61),
            person_jpeg(2),
        ]
        served = [client.search(q, k=10).matches for q in queries]
        listed = client.list_images()
    build_index(root, embedder, tmp_path / "fresh", progress=False)
    fresh = GalleryIndex.open(tmp_path / "fresh")
    assert [(e.id, e.label, e.path) for e in listed] == [
        (i.id, i.label, i.path) for i in fresh.manifest.items
    ]
    if not settings:  # the compacted index folder itself, row for row
        compacted = GalleryIndex.open(index)
        assert compacted.manifest.items == fresh.manifest.items
        np.testing.assert_allclose(compacted.features, fresh.features, rtol=1e-5, atol=1e-5)
    with in_process_server(embedder, tmp_path / "fresh") as target, SearchClient(target) as client:
        for query, got in zip(queries, served, strict=True):
            want = client.search(query, k=10).matches
            assert [(m.id, m.path) for m in got] == [(m.id, m.path) for m in want]
            np.testing.assert_allclose(
                [m.distance for m in got], [m.distance for m in want], rtol=1e-4, atol=1e-3
            )

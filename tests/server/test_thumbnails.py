"""Thumbnails show only the gallery files that were indexed (#15 item 4)."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time

import grpc
import pytest

from lookalike.client import SearchClient
from lookalike.server.index.build import build_index
from lookalike.server.index.store import MANIFEST
from lookalike.server.online import engine, thumbnails
from lookalike.v1 import search_pb2, search_pb2_grpc
from tests.serving import in_process_server, running_server


@pytest.fixture
def small_index(embedder, gallery_dir, tmp_path):
    """An index of two people's six photos, in a folder of its own."""
    gallery = tmp_path / "gallery"
    for person in ("person_00", "person_01"):
        shutil.copytree(gallery_dir / person, gallery / person)
    build_index(gallery, embedder, tmp_path / "index", progress=False)
    return gallery, tmp_path / "index"


def rewrite_paths(index, paths: dict[str, str]) -> None:
    """Point manifest items (by their current path) at other paths."""
    manifest_file = (index / MANIFEST).resolve()
    manifest = json.loads(manifest_file.read_text())
    for row in manifest["items"]:
        row[2] = paths.get(row[2], row[2])
    manifest_file.write_text(json.dumps(manifest))


def notes_by_label(target, query: bytes) -> dict[str, tuple[bool, str]]:
    with SearchClient(target) as client:
        result = client.search(query, k=6, thumbnails=True)
    return {m.path: (m.thumbnail is not None, m.note) for m in result.matches}


def test_only_files_inside_the_gallery_that_were_indexed_are_shown(
    embedder, small_index, tmp_path, monkeypatch, caplog
):
    """On main every one of these was read and shown, or its note carried a server path."""
    gallery, index = small_index
    outside = tmp_path / "outside"
    outside.mkdir()
    p00 = [f"person_00/person_00_000{i}.jpg" for i in (1, 2, 3)]
    p01 = [f"person_01/person_01_000{i}.jpg" for i in (1, 2, 3)]
    # each escape leads to a copy of the very file indexed: only confinement can refuse it
    shutil.copy(gallery / p00[0], outside / "a.jpg")
    shutil.copy(gallery / p00[1], outside / "b.jpg")
    shutil.copy(gallery / p00[2], outside / "c.jpg")
    (gallery / "person_00" / "link.jpg").symlink_to(outside / "c.jpg")
    shutil.copy(gallery / p01[1], gallery / p01[0])  # swapped: another face under this id
    (gallery / "person_01" / "folder.jpg").mkdir()
    rewrite_paths(
        index,
        {
            p00[0]: str(outside / "a.jpg"),  # absolute
            p00[1]: "../outside/b.jpg",  # up and out
            p00[2]: "person_00/link.jpg",  # a link leading out
            p01[2]: "person_01/folder.jpg",  # not a regular file
        },
    )
    query = (gallery / p01[1]).read_bytes()
    with caplog.at_level("WARNING"), in_process_server(embedder, index) as target:
        shown = notes_by_label(target, query)
    assert shown == {
        str(outside / "a.jpg"): (False, "thumbnail unavailable"),
        "../outside/b.jpg": (False, "thumbnail unavailable"),
        "person_00/link.jpg": (False, "thumbnail unavailable"),
        p01[0]: (False, "thumbnail unavailable"),
        p01[1]: (True, ""),
        "person_01/folder.jpg": (False, "thumbnail unavailable"),
    }
    log = caplog.text  # the reasons are logged for the operator
    assert "not relative to the gallery" in log and "leads out of the gallery" in log
    assert "changed since it was indexed" in log and "not a regular file" in log


def test_files_over_the_size_cap_are_not_read(embedder, small_index, monkeypatch):
    gallery, index = small_index
    size = (gallery / "person_00" / "person_00_0001.jpg").stat().st_size
    monkeypatch.setattr(thumbnails, "MAX_GALLERY_FILE_BYTES", size - 1)
    query = (gallery / "person_00" / "person_00_0001.jpg").read_bytes()
    with in_process_server(embedder, index) as target:
        shown = notes_by_label(target, query)
    assert shown["person_00/person_00_0001.jpg"] == (False, "thumbnail unavailable")


def test_gallery_root_overrides_the_root_in_the_manifest(embedder, small_index, tmp_path):
    """An index built on one machine, served where the gallery is mounted elsewhere."""
    gallery, index = small_index
    moved = tmp_path / "mounted" / "gallery"
    shutil.move(gallery, moved)
    query = (moved / "person_00" / "person_00_0001.jpg").read_bytes()
    with in_process_server(embedder, index) as target:
        assert not any(shown for shown, _ in notes_by_label(target, query).values())
    with in_process_server(embedder, index, gallery_root=moved) as target:
        assert all(shown for shown, _ in notes_by_label(target, query).values())


def test_thumbnail_work_holds_a_slot_and_stops_at_the_deadline(embedder, small_index, monkeypatch):
    """With --max-in-flight 1, a call making thumbnails keeps others out; past its deadline
    it makes no more of them (on main thumbnails ran outside the slot, all of them)."""
    gallery, index = small_index
    started, release, made = threading.Event(), threading.Event(), []
    real = engine.thumbnail_or_note

    first_began: list[float] = []

    def slow_thumbnail(*args, **kwargs):
        first_began.append(time.monotonic())
        made.append(args[1].path)
        started.set()
        release.wait(60)
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "thumbnail_or_note", slow_thumbnail)
    query = (gallery / "person_00" / "person_00_0001.jpg").read_bytes()
    with running_server(embedder, index, max_in_flight=1) as server:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        stub = search_pb2_grpc.SearchServiceStub(channel)
        call = stub.Search.future(
            search_pb2.SearchRequest(image=query, k=6, thumbnails=True), timeout=5
        )
        assert started.wait(60)
        with pytest.raises(grpc.RpcError) as refused:
            stub.Search(search_pb2.SearchRequest(image=query, k=1), timeout=30)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        with pytest.raises(grpc.RpcError) as late:
            call.result()
        assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        # The client's timer can fire a few ms before the server's deadline (taken when
        # the request arrived); release the thumbnail only once that one has passed too:
        # the server read it before the first thumbnail began, and it is at most 5 s on.
        while time.monotonic() < first_began[0] + 5.1:
            threading.Event().wait(0.05)
        release.set()
        for _ in range(600):  # until the first call gives its slot back
            try:
                stub.Search(search_pb2.SearchRequest(image=query, k=1), timeout=30)
                break
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                threading.Event().wait(0.05)
        channel.close()
    assert len(made) == 1  # the thumbnail under way finished; none was begun after


def test_a_thumbnail_is_shown_from_an_identical_copy_when_the_first_path_is_gone(
    embedder, gallery_dir, tmp_path
):
    gallery = tmp_path / "gallery"
    shutil.copytree(gallery_dir / "person_00", gallery / "person_00")
    twin = gallery / "person_09" / "twin.jpg"
    twin.parent.mkdir()
    shutil.copy(gallery / "person_00" / "person_00_0001.jpg", twin)
    build_index(gallery, embedder, tmp_path / "index", progress=False)
    os.unlink(gallery / "person_00" / "person_00_0001.jpg")
    with in_process_server(embedder, tmp_path / "index") as target:
        shown = notes_by_label(target, twin.read_bytes())
    assert shown["person_00/person_00_0001.jpg"] == (True, "")

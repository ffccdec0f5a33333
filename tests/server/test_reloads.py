"""ReloadIndex opens only what the operator allowed, needs the admin credential over the
network, refuses a second reload while one runs, logs who asked and what happened, keeps
the old index when it refuses (a broken index: FAILED_PRECONDITION, no path), loses no
call under load, and has let the old gallery go when it answers."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import threading
import time
import weakref

import grpc
import numpy as np
import pytest

from lookalike.client import LookalikeError, SearchClient
from lookalike.server.index.build import build_index
from lookalike.server.index.store import FEATURES, MANIFEST
from tests.imagegen import gallery_of
from tests.serving import (
    in_process_server,
    non_loopback_address,
    running_server,
)


@pytest.fixture(scope="module")
def index_root(index_dir, gallery_dir, embedder, tmp_path_factory):
    """root/served (the index served at start), root/other (another valid index of the same
    model), and outside (a valid index next to the root, not under it)."""
    base = tmp_path_factory.mktemp("reload")
    root = base / "root"
    root.mkdir()
    shutil.copytree(index_dir, root / "served")
    small = base / "small-gallery"
    shutil.copytree(gallery_dir / "person_01", small / "person_01")
    build_index(small, embedder, root / "other", progress=False)
    shutil.copytree(root / "other", base / "outside")
    (root / "escape").symlink_to(base / "outside", target_is_directory=True)
    return root


def reload_error(target: str, index_path: str, **client) -> LookalikeError:
    with SearchClient(target, retries=0, **client) as c, pytest.raises(LookalikeError) as raised:
        c.reload_index(index_path)
    return raised.value


def test_reload_refuses_a_path_the_client_chose(embedder, index_root):
    outside = index_root.parent / "outside"
    with running_server(embedder, index_root / "served") as server:
        target = f"127.0.0.1:{server.port}"
        error = reload_error(target, str(outside))
        assert error.code == grpc.StatusCode.PERMISSION_DENIED
        assert "--index-root" in error.message and str(index_root) not in error.message
        with SearchClient(target) as client:
            assert client.info().gallery_size == 18  # still the served index
            assert client.reload_index()[1] == 18  # the served location re-opens
            assert client.reload_index(str(index_root / "served"))[1] == 18


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("../outside", grpc.StatusCode.PERMISSION_DENIED),
        ("escape", grpc.StatusCode.PERMISSION_DENIED),  # a symlink out of the root
        ("/etc", grpc.StatusCode.PERMISSION_DENIED),
        (".", grpc.StatusCode.PERMISSION_DENIED),
        ("missing", grpc.StatusCode.FAILED_PRECONDITION),
    ],
)
def test_index_root_confines_the_names_a_reload_may_open(embedder, index_root, name, code):
    with running_server(embedder, index_root / "served", index_root=index_root) as server:
        target = f"127.0.0.1:{server.port}"
        error = reload_error(target, name)
        assert error.code == code
        assert "kept the old index" in error.message or code != grpc.StatusCode.FAILED_PRECONDITION
        assert str(index_root) not in error.message and "/tmp" not in error.message
        with SearchClient(target) as client:
            assert client.info().gallery_size == 18
            assert client.reload_index("other")[1] == 3  # a name under the root is allowed


def test_reload_needs_the_admin_token_not_the_search_token(embedder, index_root, tmp_path):
    (tmp_path / "search").write_text("search-token")
    (tmp_path / "admin").write_text("admin-token")
    with running_server(
        embedder,
        index_root / "served",
        auth_token_file=tmp_path / "search",
        admin_token_file=tmp_path / "admin",
        metrics_port=0,
    ) as server:
        target = f"127.0.0.1:{server.port}"
        for token in (None, "search-token"):
            error = reload_error(target, "", token=token)
            assert error.code == grpc.StatusCode.UNAUTHENTICATED
            assert "admin token" in error.message
        with SearchClient(target, token="admin-token") as client:
            assert client.reload_index()[1] == 18
        refused = server.telemetry.refused
        assert refused.labels("ReloadIndex", "missing_token")._value.get() == 1
        assert refused.labels("ReloadIndex", "bad_token")._value.get() == 1


def test_without_an_admin_token_reload_is_allowed_only_from_this_machine(embedder, index_root):
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to call from")
    with running_server(embedder, index_root / "served", host="0.0.0.0") as server:
        error = reload_error(f"{address}:{server.port}", "")
        assert error.code == grpc.StatusCode.PERMISSION_DENIED
        assert "--admin-token-file" in error.message
        with SearchClient(f"{address}:{server.port}") as client:
            assert client.info().gallery_size == 18  # other methods stay open
        with SearchClient(f"127.0.0.1:{server.port}") as client:
            assert client.reload_index()[1] == 18


def test_a_reload_while_another_runs_is_refused_not_queued(embedder, index_root, caplog):
    caplog.set_level(logging.INFO, logger="lookalike")
    with running_server(embedder, index_root / "served") as server:
        target = f"127.0.0.1:{server.port}"
        with server.service._reload_turn:  # a reload under way (SIGHUP or another caller)
            error = reload_error(target, "", timeout=10)
        assert error.code == grpc.StatusCode.ABORTED
        assert "another reload is under way" in error.message
        with SearchClient(target) as client:
            client.reload_index()
        assert reload_error(target, "/elsewhere").code == grpc.StatusCode.PERMISSION_DENIED
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("reload by")]
    assert len(lines) == 3, lines
    assert all("ipv4:127.0.0.1:" in line for line in lines)
    assert "refused: another reload" in lines[0]
    assert "switched from gallery" in lines[1]
    assert "refused: this server reloads only" in lines[2]


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


def bad_json(index) -> None:
    (index / MANIFEST).write_text('{"format": 1, "items": [')


def a_list(index) -> None:
    (index / MANIFEST).write_text("[]")


def features_a_folder(index) -> None:
    (index / FEATURES).unlink()
    (index / FEATURES).mkdir()


def other_embedding_size(index) -> None:
    """A consistent index (checksum and shape agree) whose rows are not the model's size."""
    manifest = json.loads((index / MANIFEST).read_text())
    rows = manifest["features"]["shape"][0]
    np.save(index / FEATURES, np.ones((rows, 16), np.float32))
    manifest["model"]["embedding_size"] = 16
    manifest["features"]["shape"] = [rows, 16]
    manifest["features"]["sha256"] = hashlib.sha256((index / FEATURES).read_bytes()).hexdigest()
    (index / MANIFEST).write_text(json.dumps(manifest))


BREAKAGES = [bad_json, a_list, features_a_folder, other_embedding_size]


@pytest.mark.parametrize("breakage", BREAKAGES, ids=[b.__name__ for b in BREAKAGES])
def test_a_broken_index_is_refused_with_failed_precondition_and_no_path(
    embedder, index_dir, tmp_path, breakage
):
    root = tmp_path / "root"
    shutil.copytree(index_dir, root / "served")
    shutil.copytree(index_dir, root / "broken")
    breakage(root / "broken")
    with running_server(embedder, root / "served", index_root=root) as server:
        target = f"127.0.0.1:{server.port}"
        with SearchClient(target, retries=0) as client:
            with pytest.raises(LookalikeError) as raised:
                client.reload_index("broken")
            assert raised.value.code == grpc.StatusCode.FAILED_PRECONDITION
            assert "kept the old index" in raised.value.message
            assert str(tmp_path) not in raised.value.message
            assert FEATURES not in raised.value.message and MANIFEST not in raised.value.message
            assert client.info().gallery_size == 18


def test_the_old_gallery_is_let_go_before_the_reload_is_answered(embedder, index_dir):
    """Its searcher is gigabytes at ten million rows: an operator who reads the heap after
    ReloadIndex (or SIGHUP) sees one gallery, not two. Held before, now and then, by the answer's
    tuple and by the writer-following thread's loop (here every 5 ms)."""
    with (
        running_server(embedder, index_dir, follow_interval_s=0.005) as server,
        SearchClient(f"127.0.0.1:{server.port}") as client,
    ):
        still_held = 0
        for attempt in range(100):
            old = weakref.ref(server.service.engine.backend)
            if attempt % 2:
                client.reload_index()
            else:  # as SIGHUP reloads
                assert server.service.swap_index(who="test").previous_version
            still_held += old() is not None
        assert still_held == 0

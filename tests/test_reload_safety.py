"""ReloadIndex opens only what the operator allowed, needs the admin credential over the
network, refuses a second reload while one runs, and logs who asked and what happened."""

from __future__ import annotations

import logging
import shutil
import socket

import grpc
import pytest

from lookalike.client import LookalikeError, SearchClient
from lookalike.server.index.build import build_index
from lookalike.server.online.auth import is_local_peer
from tests.serving import running_server


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


def non_loopback_address() -> str | None:
    """An address of this machine that is not loopback, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: only picks the interface
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


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


@pytest.mark.parametrize(
    ("peer", "local"),
    [
        ("ipv4:127.0.0.1:5000", True),
        ("ipv6:[::1]:5000", True),
        ("ipv6:[::ffff:127.0.0.1]:5000", True),
        ("unix:/run/lookalike.sock", True),
        ("ipv4:192.0.2.7:5000", False),
        ("ipv6:[2001:db8::1]:5000", False),
        ("garbage", False),
    ],
)
def test_local_peers(peer, local):
    assert is_local_peer(peer) is local

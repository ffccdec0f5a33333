"""Confinement without a server: which callers count as this machine's own (a reload
without an admin token is allowed only to them)."""

from __future__ import annotations

import pytest

from lookalike.server.online.auth import is_local_peer


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

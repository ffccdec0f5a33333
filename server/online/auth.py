"""Who may call what: bearer tokens for searches, an admin credential for admin methods.

Health checks stay open (probes carry no token). ``ADMIN_METHODS`` change what
every caller sees, so they need the admin token when one is configured, and
otherwise come only from this machine (a loopback or Unix-socket peer). Every
refusal is counted and logged with the caller's address.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc

from lookalike.common.tokens import read_token
from lookalike.v1 import search_pb2

log = logging.getLogger(__name__)

OPEN_PREFIXES = ("/grpc.health.v1.Health/",)
SERVICE = f"/{search_pb2.DESCRIPTOR.services_by_name['SearchService'].full_name}/"
# Calls that change what the server answers, or list the whole gallery.
ADMIN_METHODS = frozenset(
    SERVICE + name
    for name in ("ReloadIndex", "AddImages", "RemoveImages", "ListImages", "CompactIndex")
)


class TokenFile:
    """A token read from a file at start and again on ``reload`` (SIGHUP), so it can be
    rotated without a restart; a failed re-read keeps the token in use."""

    def __init__(self, path: Path, what: str) -> None:
        self.path, self.what = path, what
        self._expected = _presented(read_token(path, what))
        self._lock = threading.Lock()

    def reload(self) -> bool:
        try:
            expected = _presented(read_token(self.path, self.what))
        except ValueError as error:  # TokenFileError: unreadable or empty
            log.error("kept the old %s: %s", self.what, error)
            return False
        with self._lock:
            changed = expected != self._expected
            self._expected = expected
        log.info("re-read the %s file (%s)", self.what, "changed" if changed else "unchanged")
        return True

    def matches(self, presented: bytes) -> bool:
        with self._lock:
            expected = self._expected
        return hmac.compare_digest(presented, expected)


def _presented(token: str) -> bytes:
    return f"bearer {token}".encode()


def is_local_peer(peer: str) -> bool:
    """True for ``ipv4:127.0.0.1:port``, ``ipv6:[::1]:port`` (mapped too) and ``unix:``."""
    scheme, _, rest = peer.partition(":")
    if scheme in ("unix", "unix-abstract"):
        return True
    if scheme not in ("ipv4", "ipv6"):
        return False
    host = rest.rpartition(":")[0].strip("[]")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or bool(mapped and mapped.is_loopback)


@dataclass(frozen=True)
class Refusal:
    code: grpc.StatusCode
    message: str
    reason: str  # the metrics label: missing_token, bad_token, not_local


class Gate:
    """The one decision: may this call, from this peer, with this metadata, go on?"""

    def __init__(self, search_token: TokenFile | None, admin_token: TokenFile | None) -> None:
        self.search_token = search_token
        self.admin_token = admin_token

    def reload_tokens(self) -> None:
        for token in (self.search_token, self.admin_token):
            if token is not None:
                token.reload()

    def check(self, method: str, metadata: object, peer: str) -> Refusal | None:
        if method.startswith(OPEN_PREFIXES):
            return None
        sent = dict(metadata or ()).get("authorization")  # type: ignore[call-overload]
        if method in ADMIN_METHODS:
            if self.admin_token is not None:
                return _check_bearer(sent, self.admin_token, "admin token")
            if not is_local_peer(peer):
                return Refusal(
                    grpc.StatusCode.PERMISSION_DENIED,
                    "admin methods are allowed only from this machine "
                    "unless the server is started with --admin-token-file",
                    "not_local",
                )
        if self.search_token is not None:
            return _check_bearer(sent, self.search_token, "bearer token")
        return None


def _check_bearer(sent: str | None, token: TokenFile, what: str) -> Refusal | None:
    if sent is None:
        return Refusal(
            grpc.StatusCode.UNAUTHENTICATED,
            f"missing 'authorization: Bearer <token>' metadata (the {what})",
            "missing_token",
        )
    scheme, _, value = sent.partition(" ")
    if not token.matches(f"{scheme.lower()} {value}".encode()):
        return Refusal(grpc.StatusCode.UNAUTHENTICATED, f"the {what} is not valid", "bad_token")
    return None

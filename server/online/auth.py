"""Bearer-token authentication for every RPC but the health checks probes need."""

from __future__ import annotations

import hmac
from collections.abc import Callable

import grpc

OPEN_PREFIXES = ("/grpc.health.v1.Health/",)


def _deny(message: str) -> grpc.RpcMethodHandler:
    def abort(request: object, context: grpc.ServicerContext) -> None:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    return grpc.unary_unary_rpc_method_handler(abort)


class BearerTokenInterceptor(grpc.ServerInterceptor):
    """Lets a call through only with ``authorization: Bearer <token>`` metadata."""

    def __init__(self, token: str, admin_token: str | None = None) -> None:
        self._expected = f"bearer {token}".encode()
        # with an admin token, admin calls carry that one instead (AdminInterceptor checks it)
        self._admin_checked = admin_token is not None

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        if details.method.startswith(OPEN_PREFIXES) or (
            self._admin_checked and details.method in ADMIN_METHODS
        ):
            return continuation(details)
        sent = dict(details.invocation_metadata or ()).get("authorization")
        if sent is None:
            return _deny("missing 'authorization: Bearer <token>' metadata")
        scheme, _, token = sent.partition(" ")
        presented = f"{scheme.lower()} {token}".encode()
        if not hmac.compare_digest(presented, self._expected):
            return _deny("the bearer token is not valid")
        return continuation(details)


SERVICE = "/lookalike.v1.SearchService/"
# Calls that change what the server answers, or list the whole gallery.
ADMIN_METHODS = frozenset(
    SERVICE + name
    for name in ("ReloadIndex", "AddImages", "RemoveImages", "ListImages", "CompactIndex")
)
LOOPBACK_PEERS = ("ipv4:127.", "ipv6:[::1]", "ipv6:%5B::1%5D", "unix:")


def _guarded(handler: grpc.RpcMethodHandler, check: Callable) -> grpc.RpcMethodHandler:
    def behaviour(request: object, context: grpc.ServicerContext) -> object:
        check(context)
        return handler.unary_unary(request, context)

    return grpc.unary_unary_rpc_method_handler(
        behaviour,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class AdminInterceptor(grpc.ServerInterceptor):
    """ADMIN_METHODS need ``authorization: Bearer <admin token>``; with no admin token
    configured, they are allowed only to callers on this machine (loopback)."""

    def __init__(self, token: str | None) -> None:
        self._expected = f"bearer {token}".encode() if token else None

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(details)
        if details.method not in ADMIN_METHODS or handler is None:
            return handler
        if self._expected is None:
            return _guarded(handler, _loopback_only)
        sent = dict(details.invocation_metadata or ()).get("authorization", "")
        scheme, _, token = sent.partition(" ")
        if not hmac.compare_digest(f"{scheme.lower()} {token}".encode(), self._expected):
            return _deny(f"{details.method.rsplit('/', 1)[-1]} needs the admin bearer token")
        return handler


def _loopback_only(context: grpc.ServicerContext) -> None:
    if not context.peer().startswith(LOOPBACK_PEERS):
        context.abort(
            grpc.StatusCode.PERMISSION_DENIED,
            "admin calls come from this machine only unless the server has --admin-token-file",
        )

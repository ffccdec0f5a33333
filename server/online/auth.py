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

    def __init__(self, token: str) -> None:
        self._expected = f"bearer {token}".encode()

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        if details.method.startswith(OPEN_PREFIXES):
            return continuation(details)
        sent = dict(details.invocation_metadata or ()).get("authorization")
        if sent is None:
            return _deny("missing 'authorization: Bearer <token>' metadata")
        scheme, _, token = sent.partition(" ")
        presented = f"{scheme.lower()} {token}".encode()
        if not hmac.compare_digest(presented, self._expected):
            return _deny("the bearer token is not valid")
        return continuation(details)

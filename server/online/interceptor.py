"""The one wrapper around every handler: admission by the Gate, the error table, telemetry.

Each method's handler is wrapped here, so every call is treated alike: it is
checked by the Gate (tokens, local peers), any exception its handler lets out
is answered by the table in ``errors.py`` (never UNKNOWN, never a server path),
and it is counted, timed and logged with the status it was actually answered.
Health checks stay open and are neither gated nor logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc

from lookalike.server.online.auth import OPEN_PREFIXES, Gate, Refusal
from lookalike.server.online.calls import past_deadline
from lookalike.server.online.errors import Refused, answer_for
from lookalike.server.online.telemetry import Telemetry, begin_call

log = logging.getLogger(__name__)


class Undecodable:
    """A request whose bytes are not the method's message; answered INVALID_ARGUMENT.
    (grpc would answer UNKNOWN, with protobuf's exception in the message.)"""

    def __init__(self, message: str) -> None:
        self.message = message


def tolerant(deserialize: Callable[[bytes], object] | None, rpc: str) -> Callable:
    """``deserialize``, returning Undecodable instead of raising."""

    def parse(data: bytes) -> object:
        try:
            return deserialize(data) if deserialize else data
        except Exception:  # noqa: BLE001 (protobuf's DecodeError, or a bad UTF-8 string)
            return Undecodable(f"the request is not a valid {rpc} request message")

    return parse


class CallInterceptor(grpc.aio.ServerInterceptor):
    """Wraps the handler of every gated method; handlers are coroutines (``async def``).

    The Gate needs the caller's address, which only the call's context holds,
    so the check runs in the wrapped handler rather than in the interceptor.
    """

    def __init__(self, gate: Gate, telemetry: Telemetry) -> None:
        self.gate = gate
        self.telemetry = telemetry

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method.startswith(OPEN_PREFIXES):
            return handler
        method = details.method
        rpc = method.rpartition("/")[2]
        if handler.unary_unary is not None:
            unary = handler.unary_unary
            if not asyncio.iscoroutinefunction(unary):
                raise TypeError(f"{method}'s handler must be a coroutine function")

            async def guarded(request: object, context: grpc.aio.ServicerContext) -> object:
                async def run() -> object:
                    if isinstance(request, Undecodable):
                        raise Refused(grpc.StatusCode.INVALID_ARGUMENT, request.message)
                    return await unary(request, context)

                return await self._answer(rpc, method, context, run)

            return handler._replace(
                unary_unary=guarded,
                request_deserializer=tolerant(handler.request_deserializer, rpc),
            )
        if handler.stream_stream is not None:  # server reflection
            streaming = handler.stream_stream

            async def guarded_stream(
                requests: AsyncIterator[object], context: grpc.aio.ServicerContext
            ) -> AsyncIterator[object]:
                await self._admit(method, context)
                async for response in streaming(requests, context):
                    yield response

            return handler._replace(stream_stream=guarded_stream)
        raise TypeError(f"no interceptor for the streaming kind of {method}")

    async def _admit(self, method: str, context: grpc.aio.ServicerContext) -> None:
        refusal = self._refusal(method, context)
        if refusal is not None:
            await context.abort(refusal.code, refusal.message)

    def _refusal(self, method: str, context: grpc.aio.ServicerContext) -> Refusal | None:
        """The Gate's refusal of this call, counted and logged; None: it may go on."""
        refusal = self.gate.check(method, context.invocation_metadata(), context.peer())
        if refusal is not None:
            self.telemetry.refused_call(method, refusal.reason, context.peer())
        return refusal

    async def _answer(
        self,
        rpc: str,
        method: str,
        context: grpc.aio.ServicerContext,
        run: Callable[[], Awaitable[object]],
    ) -> object:
        fields = begin_call()
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            if (refusal := self._refusal(method, context)) is not None:
                code = refusal.code
                await context.abort(refusal.code, refusal.message)
            try:
                return await run()
            except (grpc.aio.AbortError, asyncio.CancelledError):
                raise
            except Exception as error:  # noqa: BLE001 (every failure answered by the table)
                answer = answer_for(error, rpc)
                code = answer.code
                log.log(
                    answer.level,
                    "%s answered %s: %s",
                    rpc,
                    answer.code.name,
                    error,
                    exc_info=error if answer.trace else None,
                )
                await context.abort(answer.code, answer.message)
        except asyncio.CancelledError:  # grpc.aio cancels a call whose caller left
            late = past_deadline(context)
            code = grpc.StatusCode.DEADLINE_EXCEEDED if late else grpc.StatusCode.CANCELLED
            raise
        finally:
            self.telemetry.record(rpc, code, time.perf_counter() - started, fields)

"""Assemble and run the gRPC server: SearchService, health, reflection, clean shutdown.

The server is grpc.aio on an event loop of its own thread: a call whose request
is still arriving, or that waits for its batch, holds no thread, so slow or
idle clients cannot take the threads health checks need. The ``Server`` class
keeps a plain blocking face (start, stop, port) for the command and the tests.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import signal
import threading
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from lookalike.common.output import lookalike_version
from lookalike.server.online.auth import Gate, TokenFile
from lookalike.server.online.config import ServerConfig
from lookalike.server.online.engine import SearchEngine
from lookalike.server.online.enrol import GalleryService
from lookalike.server.online.interceptor import CallInterceptor
from lookalike.server.online.telemetry import Telemetry
from lookalike.server.vision.embedder import Embedder
from lookalike.v1 import search_pb2, search_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = search_pb2.DESCRIPTOR.services_by_name["SearchService"].full_name
T = TypeVar("T")
SIGNAL_POLL_SECONDS = 0.2

# Connections are pinged when quiet (dead peers found in ~80 s), closed after 5 idle
# minutes, and recycled after 30 minutes (calls then get 60 s to finish), so a
# client that opens a call and never finishes sending it holds it 31 minutes at most.
CONNECTION_OPTIONS = [
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.max_connection_idle_ms", 5 * 60_000),
    ("grpc.max_connection_age_ms", 30 * 60_000),
    ("grpc.max_connection_age_grace_ms", 60_000),
]


class Server:
    """A started gRPC server whose health follows its life: SERVING, then NOT_SERVING."""

    def __init__(
        self, config: ServerConfig, embedder: Embedder | None = None, began: float | None = None
    ) -> None:
        """Opens the model (or uses ``embedder``) and the gallery: the one engine."""
        self.config = config
        self.began = time.perf_counter() if began is None else began
        self.telemetry = Telemetry()
        self.gate = gate_of(config)
        engine = SearchEngine.open(config, self.telemetry, embedder)
        self.service = GalleryService(engine, self.telemetry)
        self._stopping = threading.Event()
        self._follow = threading.Thread(target=self._follow_writer, name="follow", daemon=True)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="grpc", daemon=True)
        self._thread.start()
        try:
            self.health, self._grpc, self.port = self._on_loop(self._build(config))
        except BaseException:
            self._end_loop()
            engine.close()
            raise

    @property
    def target(self) -> str:
        """Where a client on this machine reaches the server (loopback, the bound port)."""
        return f"127.0.0.1:{self.port}"

    def _on_loop(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result()

    async def _build(
        self, config: ServerConfig
    ) -> tuple[health.aio.HealthServicer, grpc.aio.Server, int]:
        server = grpc.aio.server(
            interceptors=[CallInterceptor(self.gate, self.telemetry)],
            options=[
                ("grpc.max_receive_message_length", config.max_message_bytes),
                ("grpc.so_reuseport", 0),
                *CONNECTION_OPTIONS,
            ],
            # Calls open at once, counting those whose request is still arriving: a
            # bound on memory. Searches worked on are bounded by max_in_flight.
            maximum_concurrent_rpcs=config.max_open_calls,
        )
        checks = health.aio.HealthServicer()
        search_pb2_grpc.add_SearchServiceServicer_to_server(self.service, server)
        health_pb2_grpc.add_HealthServicer_to_server(checks, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        return checks, server, self._listen(server, config)

    @staticmethod
    def _listen(server: grpc.aio.Server, config: ServerConfig) -> int:
        """The port listened on; OSError or ValueError (exit 2) when that cannot be."""
        if not config.tls_cert:
            try:
                return server.add_insecure_port(config.address)
            except RuntimeError:  # grpc.aio's "Failed to bind"
                raise OSError(f"cannot listen on {config.address}") from None
        try:
            pair = (config.tls_key.read_bytes(), config.tls_cert.read_bytes())
        except OSError as error:
            raise OSError(f"cannot read the TLS certificate or key: {error}") from None
        try:
            return server.add_secure_port(config.address, grpc.ssl_server_credentials([pair]))
        except RuntimeError:  # gRPC logs the TLS library's reason above this
            raise ValueError(
                f"cannot serve TLS on {config.address} with --tls-cert and --tls-key: not a "
                "PEM certificate chain and its private key, or the address is taken"
            ) from None

    async def _set_health(self, status: health_pb2.HealthCheckResponse.ServingStatus) -> None:
        for service in ("", SERVICE_NAME):
            await self.health.set(service, status)

    def start(self) -> None:
        """Listen at once (so probes see NOT_SERVING), warm up, then turn SERVING."""
        self._on_loop(self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING))
        self._on_loop(self._grpc.start())
        engine = self.service.engine
        warming = time.perf_counter()
        engine.warm_up(self.config.warmup_runs, (1, self.config.max_batch))
        self.service.warm_workers()
        warmup = time.perf_counter() - warming
        embedder = engine.embedder
        self.telemetry.gallery_size.set(len(engine.backend))
        self.telemetry.pending_rows.set(engine.backend.pending_rows)
        self.telemetry.provider.labels(embedder.provider).set(1)
        self.telemetry.record_start(time.perf_counter() - self.began, warmup)
        if self.config.metrics_port is not None:
            host = self.config.metrics_host
            self.metrics_port = self.telemetry.serve_http(self.config.metrics_port, host)
            log.info("Prometheus metrics on %s port %d at /metrics", host, self.metrics_port)
        self.service.ready.set()
        self._follow.start()
        self._on_loop(self._set_health(health_pb2.HealthCheckResponse.SERVING))
        log.info(
            "lookalike %s serving %s on port %d: model %s (%s, crop %s) on %s "
            "(%d intra-op threads), %d gallery images (index %s, %s); "
            "started in %.2f s, warm-up %.2f s",
            lookalike_version(),
            SERVICE_NAME,
            self.port,
            embedder.info.name,
            embedder.info.fingerprint,
            engine.backend.info.crop.mode,
            embedder.provider,
            embedder.threads,
            len(engine.backend),
            engine.backend.info.version,
            engine.backend.name,
            self.telemetry.startup_seconds,
            warmup,
        )

    def _follow_writer(self) -> None:
        """While another server writes the gallery, read what it publishes (and take
        over its lock when it is gone); a writer's backend does nothing here."""
        interval = self.config.follow_interval_s
        while interval and not self._stopping.wait(interval):
            self._refresh()

    def _refresh(self) -> None:
        """One look at the writer's changes. A function of its own, so that the backend it
        looked at is not held through the wait: after a reload, that is the old gallery."""
        backend = self.service.engine.backend
        try:
            if backend.refresh():
                self.telemetry.gallery_size.set(len(backend))
                self.telemetry.pending_rows.set(backend.pending_rows)
        except Exception as error:  # noqa: BLE001 (the old view serves; next time)
            log.warning("could not read the writer's changes yet: %s", error)

    def stop(self) -> None:
        """Health NOT_SERVING, refuse new calls, let those in flight finish within the
        grace period, then cancel what is left."""
        self._stopping.set()
        self._on_loop(self.health.enter_graceful_shutdown())
        self._on_loop(self._grpc.stop(self.config.grace_seconds))
        self.service.close()
        self.service.engine.close()
        self.telemetry.close()
        self._end_loop()

    def _end_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


def gate_of(config: ServerConfig) -> Gate:
    """The tokens the config names (read now: an unreadable one stops the start)."""
    search = TokenFile(config.auth_token_file, "auth token") if config.auth_token_file else None
    admin = TokenFile(config.admin_token_file, "admin token") if config.admin_token_file else None
    if (search or admin) and not config.tls_cert:
        log.warning(
            "bearer tokens are configured but TLS is not: tokens cross the network in clear "
            "text; serve with --tls-cert and --tls-key, or only on a trusted network"
        )
    return Gate(search, admin)


def on_hangup(server: Server) -> None:
    """SIGHUP: re-read the token files, then switch to the index now in the served
    folder, or keep the old one (swap_index logs which)."""
    server.gate.reload_tokens()
    try:
        server.service.swap_index(who="SIGHUP")
    except Exception:  # noqa: BLE001 (logged by swap_index; the server keeps serving)
        return


def serve(config: ServerConfig) -> int:
    """Run until SIGTERM or SIGINT, then shut down gracefully and return 0."""
    began = time.perf_counter()
    server = Server(config, began=began)
    received = SignalInbox((signal.SIGTERM, signal.SIGINT, signal.SIGHUP))
    server.start()
    while (signum := received.next()) != signal.SIGTERM and signum != signal.SIGINT:
        if signum == signal.SIGHUP:
            threading.Thread(target=on_hangup, args=(server,), name="reload").start()
    log.info("received %s, shutting down", signal.Signals(signum).name)
    server.stop()
    log.info("stopped")
    return 0


class SignalInbox:
    """Signals handed from their handlers to the main loop, which acts on them.

    A handler runs between two bytecodes of the main thread, wherever that
    thread is, so it should take no lock the main thread may hold. Before, the
    handler set a threading.Event that the main loop was waiting on: if SIGTERM
    came while Event.wait held the Event's own (non-reentrant) lock, set() in
    the handler would wait for it forever. That is one way a server could miss
    its stop; it was not reproduced here. A SimpleQueue's put is documented as
    safe to call from a signal handler, so the handler only posts the number.
    """

    def __init__(self, signals: tuple[int, ...]) -> None:
        self._queue: queue.SimpleQueue[int] = queue.SimpleQueue()
        for signum in signals:
            signal.signal(signum, self._post)

    def _post(self, signum: int, _frame: object) -> None:
        self._queue.put(signum)

    def next(self) -> int:
        """The next signal received. Waits in short slices: Python runs handlers only
        when the main thread runs Python code, so an untimed wait could sleep through."""
        while True:
            try:
                return self._queue.get(timeout=SIGNAL_POLL_SECONDS)
            except queue.Empty:
                continue

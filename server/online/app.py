"""Assemble and run the gRPC server: SearchService, health, reflection, clean shutdown."""

from __future__ import annotations

import logging
import signal
import threading
import time
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from lookalike.server.online.auth import Gate, GateInterceptor, TokenFile
from lookalike.server.online.batcher import MicroBatcher
from lookalike.server.online.config import ServerConfig
from lookalike.server.online.engine import SearchEngine
from lookalike.server.online.service import SearchService
from lookalike.server.online.telemetry import Telemetry
from lookalike.v1 import search_pb2, search_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = search_pb2.DESCRIPTOR.services_by_name["SearchService"].full_name
# Threads kept beside the Search limit for health probes and GetInfo.
CONTROL_CALLS = 4


class Server:
    """A started gRPC server whose health follows its life: SERVING, then NOT_SERVING."""

    def __init__(
        self, config: ServerConfig, engine: SearchEngine, began: float | None = None
    ) -> None:
        self.config = config
        self.began = time.perf_counter() if began is None else began
        self.telemetry = Telemetry()
        self.health = health.HealthServicer()
        # Every admitted call gets a thread at once; past the limit gRPC itself
        # answers RESOURCE_EXHAUSTED instead of queueing without end.
        threads = config.max_in_flight + CONTROL_CALLS
        self.gate = gate_of(config)
        self._grpc = grpc.server(
            futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="rpc"),
            interceptors=[GateInterceptor(self.gate, self.telemetry)],
            options=[
                ("grpc.max_receive_message_length", config.max_message_bytes),
                ("grpc.so_reuseport", 0),
            ],
            maximum_concurrent_rpcs=threads,
        )
        self.batcher = MicroBatcher(config.batch_window_ms / 1e3, config.max_batch, self.telemetry)
        self.service = SearchService(engine.with_batcher(self.batcher), config, self.telemetry)
        search_pb2_grpc.add_SearchServiceServicer_to_server(self.service, self._grpc)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._grpc)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self._grpc
        )
        self.port = self._listen(config)
        if self.port == 0:
            raise OSError(f"cannot listen on {config.address}")

    def _listen(self, config: ServerConfig) -> int:
        if bool(config.tls_cert) != bool(config.tls_key):
            raise ValueError("--tls-cert and --tls-key go together")
        if not config.tls_cert:
            return self._grpc.add_insecure_port(config.address)
        try:
            pair = (config.tls_key.read_bytes(), config.tls_cert.read_bytes())
        except OSError as error:
            raise OSError(f"cannot read the TLS certificate or key: {error}") from None
        return self._grpc.add_secure_port(config.address, grpc.ssl_server_credentials([pair]))

    def start(self) -> None:
        """Listen at once (so probes see NOT_SERVING), warm up, then turn SERVING."""
        for service in ("", SERVICE_NAME):
            self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        self._grpc.start()
        engine = self.service.engine
        warmup = engine.warm_up(self.config.warmup_runs, (1, self.config.max_batch))
        embedder = engine.embedder
        self.telemetry.gallery_size.set(len(engine.backend))
        self.telemetry.provider.labels(embedder.provider).set(1)
        self.telemetry.record_start(time.perf_counter() - self.began, warmup)
        if self.config.metrics_port is not None:
            host = self.config.metrics_host
            self.metrics_port = self.telemetry.serve_http(self.config.metrics_port, host)
            log.info("Prometheus metrics on %s port %d at /metrics", host, self.metrics_port)
        self.service.ready.set()
        for service in ("", SERVICE_NAME):
            self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "serving %s on port %d: model %s on %s, %d gallery images (index %s, %s); "
            "started in %.2f s, warm-up %.2f s",
            SERVICE_NAME,
            self.port,
            embedder.info.fingerprint,
            embedder.provider,
            len(engine.backend),
            engine.backend.info.version,
            engine.backend.name,
            self.telemetry.startup_seconds,
            warmup,
        )

    def stop(self) -> None:
        """Refuse new calls and let those in flight finish within the grace period."""
        self.health.enter_graceful_shutdown()
        self._grpc.stop(self.config.grace_seconds).wait()
        self.batcher.close()
        self.telemetry.close()

    def wait(self) -> None:
        self._grpc.wait_for_termination()


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
    engine = SearchEngine.open(config)
    server = Server(config, engine, began)
    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        stopping.set()

    def hangup(_signum: int, _frame: object) -> None:
        threading.Thread(target=on_hangup, args=(server,), name="reload").start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, hangup)
    server.start()
    stopping.wait()
    server.stop()
    log.info("stopped")
    return 0

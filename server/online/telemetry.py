"""What the server tells its operators: Prometheus metrics and one log line per call."""

from __future__ import annotations

import logging
from contextvars import ContextVar

import grpc
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    start_http_server,
)

log = logging.getLogger("lookalike.calls")

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Telemetry:
    """Metrics in a registry of their own, so several servers can live in one process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)  # process_cpu_seconds_total, resident memory, open fds
        self.requests = Counter(
            "lookalike_requests", "Calls by RPC and status code", ["rpc", "code"], registry=r
        )
        self.latency = Histogram(
            "lookalike_request_seconds",
            "Whole call, by RPC",
            ["rpc"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.stages = Histogram(
            "lookalike_stage_seconds",
            "Search stages, on the worker thread: decode, crop, embed, knn, response "
            "(matches and thumbnails); detect, landmarks and warp are parts of crop, "
            "observed for the searches whose crop ran them",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "lookalike_embed_batch_size",
            "Images per embedder run",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=r,
        )
        self.faces = Histogram(
            "lookalike_search_faces",
            "Faces of the query photo searched per Search request",
            buckets=(1, 2, 3, 4, 6, 8, 10, 16, 32),
            registry=r,
        )
        self.in_flight = Gauge(
            "lookalike_searches_in_flight", "Searches being worked on", registry=r
        )
        self.gallery_size = Gauge(
            "lookalike_gallery_size", "Images in the index served", registry=r
        )
        self.pending_rows = Gauge(
            "lookalike_rows_pending_compaction",
            "Rows added or removed since the index was last compacted",
            registry=r,
        )
        self.changes = Counter(
            "lookalike_gallery_changes",
            "Images added and removed, by result (added, already_present, removed, "
            "not_found, failed)",
            ["op", "result"],
            registry=r,
        )
        self.provider = Gauge(
            "lookalike_execution_provider",
            "1 for the onnxruntime provider running the model",
            ["provider"],
            registry=r,
        )
        self.refused = Counter(
            "lookalike_refused",
            "Calls refused before any work: by authentication (missing_token, bad_token, "
            "not_local) or by the concurrency limit (busy)",
            ["rpc", "reason"],
            registry=r,
        )
        self.reloads = Counter(
            "lookalike_reloads", "Index reloads by result", ["result"], registry=r
        )
        self.startup = Gauge("lookalike_startup_seconds", "From start to SERVING", registry=r)
        self.warmup = Gauge("lookalike_warmup_seconds", "Warm-up before SERVING", registry=r)
        self._http = None
        self.startup_seconds = 0.0
        self.warmup_seconds = 0.0

    def record_start(self, startup_seconds: float, warmup_seconds: float) -> None:
        self.startup_seconds, self.warmup_seconds = startup_seconds, warmup_seconds
        self.startup.set(startup_seconds)
        self.warmup.set(warmup_seconds)

    def refused_call(self, method: str, reason: str, peer: str) -> None:
        """Count and log a call turned away; ``method`` may be the full gRPC path."""
        rpc = method.rpartition("/")[2]
        self.refused.labels(rpc, reason).inc()
        log.warning("refused rpc=%s reason=%s peer=%s", rpc, reason, peer)

    def serve_http(self, port: int, host: str = "127.0.0.1") -> int:
        self._http, _ = start_http_server(port, addr=host, registry=self.registry)
        return self._http.server_port

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()

    def record(self, rpc: str, code: grpc.StatusCode, seconds: float, fields: dict) -> None:
        """Count, time and log one finished call with the status it was answered."""
        self.requests.labels(rpc, code.name).inc()
        self.latency.labels(rpc).observe(seconds)
        fields = {"rpc": rpc, **fields, "code": code.name, "total_ms": round(seconds * 1e3, 2)}
        log.info(
            " ".join(f"{key}={value}" for key, value in fields.items()), extra={"call": fields}
        )


# The fields of the call being answered, for its log line: set by the interceptor,
# added to by the handler (``note``) in the same task.
_CALL_FIELDS: ContextVar[dict[str, object] | None] = ContextVar("call_fields", default=None)


def note(**fields: object) -> None:
    """Add fields to the log line of the call this task is answering (if any)."""
    current = _CALL_FIELDS.get()
    if current is not None:
        current.update(fields)


def begin_call() -> dict[str, object]:
    """A fresh field dict for the call this task answers."""
    fields: dict[str, object] = {}
    _CALL_FIELDS.set(fields)
    return fields

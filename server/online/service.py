"""The gRPC SearchService: validates a call, runs the engine, shapes the answer."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc

from lookalike.server.backends.base import BackendUnavailable, SearchBackend
from lookalike.server.index.store import InvalidIndexError
from lookalike.server.online.config import ServerConfig
from lookalike.server.online.engine import SearchEngine, SearchOutcome
from lookalike.server.online.reloads import ReloadBusy, ReloadRefused, allowed_location
from lookalike.server.online.telemetry import Telemetry
from lookalike.server.online.thumbnails import thumbnail_or_note
from lookalike.server.vision.imaging import ImageError
from lookalike.v1 import search_pb2, search_pb2_grpc

log = logging.getLogger(__name__)


# gRPC reports a call without a deadline as ~9.2e18 s remaining (the largest time it
# can hold); anything past a year is taken as no deadline, not as a time to wait for.
NO_DEADLINE_SECONDS = 365 * 24 * 3600.0


def deadline_of(context: grpc.ServicerContext) -> float | None:
    """The call's deadline on time.monotonic()'s clock, or None when it has none."""
    remaining = context.time_remaining()
    if remaining is None or remaining > NO_DEADLINE_SECONDS:
        return None
    return time.monotonic() + remaining


def deadline_guard(context: grpc.ServicerContext) -> Callable[[], None]:
    """Ends a call whose caller stopped waiting, so no more work goes into it."""

    def check() -> None:
        remaining = context.time_remaining()
        if not context.is_active() or (remaining is not None and remaining <= 0):
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline passed")

    return check


class SearchService(search_pb2_grpc.SearchServiceServicer):
    def __init__(
        self, engine: SearchEngine, config: ServerConfig, telemetry: Telemetry | None = None
    ) -> None:
        self.engine = engine
        self.max_k = config.max_k
        self.max_in_flight = config.max_in_flight
        self.thumbnail_size = config.thumbnail_size
        self.telemetry = telemetry or Telemetry()
        # What a reload may open: the location served at start, or names under index_root.
        self.folders = config.backend == "memmap"
        self.served = str(config.index) if self.folders else str(config.collection)
        self.index_root = config.index_root
        self._slots = threading.BoundedSemaphore(config.max_in_flight)
        self._reloading = threading.Lock()
        # Set once warm-up is over; until then Search answers UNAVAILABLE, as health does.
        self.ready = threading.Event()

    def swap_index(
        self, location: str | None = None, who: str = "SIGHUP"
    ) -> tuple[SearchBackend, SearchBackend]:
        """Open, check and warm a new gallery, then switch to it; returns (old, new).

        ``location`` is an index folder, or a collection for the Milvus backend,
        already allowed by ``allowed_location``; by default the one served, read
        afresh. A reload while another runs raises ReloadBusy at once. Calls hold
        the engine they started with, so those in flight finish on the old
        gallery; a memory-mapped matrix is released when the last of them ends.
        """
        if not self._reloading.acquire(blocking=False):
            self.telemetry.reloads.labels("busy").inc()
            log.warning("reload by %s refused: another reload is under way", who)
            raise ReloadBusy("another reload is under way; try again when it has finished")
        old = self.engine
        try:
            fresh = old.with_backend(old.backend.reopen(location))
            fresh.warm_up(1)
        except Exception as error:
            self.telemetry.reloads.labels("failed").inc()
            log.error(
                "reload by %s failed, kept gallery %s: %s", who, old.backend.info.version, error
            )
            raise
        finally:
            self._reloading.release()
        self.engine = fresh
        self.telemetry.gallery_size.set(len(fresh.backend))
        self.telemetry.reloads.labels("ok").inc()
        log.info(
            "reload by %s: switched from gallery %s to %s (%d images)",
            who,
            old.backend.info.version,
            fresh.backend.info.version,
            len(fresh.backend),
        )
        return old.backend, fresh.backend

    def Search(  # noqa: N802 (gRPC method name)
        self, request: search_pb2.SearchRequest, context: grpc.ServicerContext
    ) -> search_pb2.SearchResponse:
        with self.telemetry.call("Search", context) as call:
            call.update(k=request.k, bytes=len(request.image))
            started = time.perf_counter()
            with self._admitted(request, context):
                engine = self.engine  # this call's engine, even if the index is swapped
                outcome = self._run(engine, request, context)
            response = self._response(request, engine, outcome, started)
            t = response.timings
            call.update(
                matches=len(response.matches),
                decode_ms=round(t.decode_ms, 2),
                embed_ms=round(t.embed_ms, 2),
                search_ms=round(t.search_ms, 2),
            )
            return response

    @contextmanager
    def _admitted(
        self, request: search_pb2.SearchRequest, context: grpc.ServicerContext
    ) -> Iterator[None]:
        """Admission: ready, a valid k, and a free slot, held while the call works."""
        if not self.ready.is_set():
            context.abort(grpc.StatusCode.UNAVAILABLE, "warming up; retry shortly")
        if not 1 <= request.k <= self.max_k:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"k must be between 1 and {self.max_k}, got {request.k}",
            )
        if not self._slots.acquire(blocking=False):
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"server busy: {self.max_in_flight} searches in flight; retry with backoff",
            )
        self.telemetry.in_flight.inc()
        try:
            yield
        finally:
            self.telemetry.in_flight.dec()
            self._slots.release()

    def _run(
        self, engine: SearchEngine, request: search_pb2.SearchRequest, context: grpc.ServicerContext
    ) -> SearchOutcome:
        """The engine call, its failures turned into gRPC statuses and its stages timed."""
        try:
            outcome = engine.search(
                request.image, request.k, deadline_guard(context), deadline_of(context)
            )
        except ImageError as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad image: {error}")
        except BackendUnavailable as error:
            context.abort(grpc.StatusCode.UNAVAILABLE, str(error))
        for stage, ms in (
            ("decode", outcome.decode_ms),
            ("embed", outcome.embed_ms),
            ("knn", outcome.search_ms),
        ):
            self.telemetry.stages.labels(stage).observe(ms / 1e3)
        return outcome

    def _response(
        self,
        request: search_pb2.SearchRequest,
        engine: SearchEngine,
        outcome: SearchOutcome,
        started: float,
    ) -> search_pb2.SearchResponse:
        """The SearchResponse: ranked matches, thumbnails if asked, crop and timings."""
        matches = [
            search_pb2.Match(
                rank=rank,
                id=hit.item.id,
                label=hit.item.label,
                path=hit.item.path,
                distance=hit.distance,
            )
            for rank, hit in enumerate(outcome.hits, start=1)
        ]
        if request.thumbnails:
            self._add_thumbnails(matches, engine)
        left, top, right, bottom = outcome.prepared.box
        width, height = outcome.prepared.original_size
        return search_pb2.SearchResponse(
            matches=matches,
            query_crop=search_pb2.CropBox(
                left=left,
                top=top,
                right=right,
                bottom=bottom,
                image_width=width,
                image_height=height,
            ),
            crop_note=outcome.prepared.note,
            model_fingerprint=engine.embedder.info.fingerprint,
            index_version=engine.backend.info.version,
            timings=search_pb2.Timings(
                decode_ms=outcome.decode_ms,
                embed_ms=outcome.embed_ms,
                search_ms=outcome.search_ms,
                total_ms=(time.perf_counter() - started) * 1e3,
            ),
        )

    def _add_thumbnails(self, matches: list[search_pb2.Match], engine: SearchEngine) -> None:
        root = Path(engine.backend.info.gallery_root)
        for match in matches:
            match.thumbnail_jpeg, match.note = thumbnail_or_note(
                root / match.path, self.thumbnail_size, engine.max_pixels
            )
            if match.note:
                log.warning("no thumbnail for %s: %s", match.path, match.note)

    def GetInfo(  # noqa: N802 (gRPC method name)
        self, request: search_pb2.GetInfoRequest, context: grpc.ServicerContext
    ) -> search_pb2.GetInfoResponse:
        with self.telemetry.call("GetInfo", context):
            return self._info()

    def ReloadIndex(  # noqa: N802 (gRPC method name)
        self, request: search_pb2.ReloadIndexRequest, context: grpc.ServicerContext
    ) -> search_pb2.ReloadIndexResponse:
        with self.telemetry.call("ReloadIndex", context) as call:
            peer = context.peer()
            call.update(peer=peer)
            try:
                location = allowed_location(
                    request.index_path, self.served, self.index_root, self.folders
                )
            except ReloadRefused as error:
                self.telemetry.reloads.labels("refused").inc()
                log.warning("reload by %s refused: %s", peer, error)
                context.abort(grpc.StatusCode.PERMISSION_DENIED, str(error))
            try:
                old, new = self.swap_index(location, who=peer)
            except ReloadBusy as error:
                context.abort(grpc.StatusCode.ABORTED, str(error))
            except InvalidIndexError:
                context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "kept the old index: the one named is missing, damaged, or of another "
                    "model (the server's log says which)",
                )
            except OSError:
                context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "kept the old index: the server cannot read the one named "
                    "(the server's log says why)",
                )
            except BackendUnavailable:
                context.abort(
                    grpc.StatusCode.UNAVAILABLE,
                    "kept the old index: the search backend did not answer; retry shortly",
                )
            call.update(index_version=new.info.version)
            return search_pb2.ReloadIndexResponse(
                index_version=new.info.version,
                gallery_size=len(new),
                previous_version=old.info.version,
            )

    def _info(self) -> search_pb2.GetInfoResponse:
        engine = self.engine
        embedder, backend = engine.embedder, engine.backend
        return search_pb2.GetInfoResponse(
            model_name=embedder.info.name,
            model_fingerprint=embedder.info.fingerprint,
            embedding_size=embedder.info.embedding_size,
            input_size=embedder.info.input_size,
            execution_provider=embedder.provider,
            providers=embedder.providers,
            gallery_size=len(backend),
            index_version=backend.info.version,
            max_k=self.max_k,
            knn_backend=backend.name,
            weights=embedder.info.weights,
            thumbnail_size=self.thumbnail_size,
            startup_seconds=self.telemetry.startup_seconds,
            warmup_seconds=self.telemetry.warmup_seconds,
        )

"""The gRPC SearchService: validates a call, runs the engine, shapes the answer."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc

from lookalike.common.output import lookalike_version
from lookalike.server.backends.base import BackendUnavailable, SearchBackend
from lookalike.server.index.store import InvalidIndexError
from lookalike.server.online.engine import SearchEngine, SearchOutcome
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
        self,
        engine: SearchEngine,
        max_k: int,
        max_in_flight: int = 16,
        thumbnail_size: int = 160,
        telemetry: Telemetry | None = None,
        gallery_root: Path | None = None,
        max_distance: float | None = None,
    ) -> None:
        if max_distance is not None and not max_distance > 0:
            raise ValueError(f"--max-distance must be above 0, got {max_distance}")
        self.engine = engine
        self.max_distance = max_distance
        self.max_k = max_k
        self.max_in_flight = max_in_flight
        self.thumbnail_size = thumbnail_size
        self.telemetry = telemetry or Telemetry()
        self.gallery_root = gallery_root  # else the one each gallery's manifest names
        self._slots = threading.BoundedSemaphore(max_in_flight)
        self._reloading = threading.Lock()
        # Set once warm-up is over; until then Search answers UNAVAILABLE, as health does.
        self.ready = threading.Event()

    def swap_index(self, location: str | None = None) -> tuple[SearchBackend, SearchBackend]:
        """Open, check and warm a new gallery, then switch to it; returns (old, new).

        ``location`` is an index folder, or a collection for the Milvus backend;
        by default the one served, read afresh. Calls hold the engine they started
        with, so those in flight finish on the old gallery; a memory-mapped
        matrix is released when the last of them ends.
        """
        with self._reloading:
            old = self.engine
            fresh = old.with_backend(old.backend.reopen(location))
            fresh.warm_up(1)
            self.engine = fresh
            self.telemetry.gallery_size.set(len(fresh.backend))
            log.info(
                "switched from gallery %s to %s (%d images)",
                old.backend.info.version,
                fresh.backend.info.version,
                len(fresh.backend),
            )
            return old.backend, fresh.backend

    def gallery_folder(self, backend: SearchBackend) -> Path:
        """Where the gallery's files are here: --gallery-root, else the manifest's root."""
        return self.gallery_root or Path(backend.info.gallery_root)

    def Search(  # noqa: N802 (gRPC method name)
        self, request: search_pb2.SearchRequest, context: grpc.ServicerContext
    ) -> search_pb2.SearchResponse:
        with self.telemetry.call("Search", context) as call:
            call.update(k=request.k, bytes=len(request.image))
            started = time.perf_counter()
            with self._admitted(request, context):  # thumbnails are work too: in the slot
                engine = self.engine  # this call's engine, even if the index is swapped
                outcome = self._run(engine, request, context)
                response = self._response(request, engine, outcome, started, context)
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
        if not request.max_distance >= 0:  # also catches NaN
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"max_distance must be 0 (the server's default) or above, "
                f"got {request.max_distance}",
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
        context: grpc.ServicerContext,
    ) -> search_pb2.SearchResponse:
        """The SearchResponse: ranked matches within the distance limit, thumbnails if asked,
        crop and timings."""
        limit = request.max_distance or self.max_distance
        matches = [
            search_pb2.Match(
                rank=rank,
                id=hit.item.id,
                label=hit.item.label,
                path=hit.item.path,
                distance=hit.distance,
            )
            for rank, hit in enumerate(outcome.hits, start=1)
            if limit is None or hit.distance <= limit
        ]
        if request.thumbnails:
            self._add_thumbnails(matches, outcome, engine, deadline_guard(context))
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
            max_distance=limit or 0.0,
            model_fingerprint=engine.embedder.info.fingerprint,
            index_version=engine.backend.info.version,
            timings=search_pb2.Timings(
                decode_ms=outcome.decode_ms,
                embed_ms=outcome.embed_ms,
                search_ms=outcome.search_ms,
                total_ms=(time.perf_counter() - started) * 1e3,
            ),
        )

    def _add_thumbnails(
        self,
        matches: list[search_pb2.Match],
        outcome: SearchOutcome,
        engine: SearchEngine,
        checkpoint: Callable[[], None],
    ) -> None:
        """Each match's thumbnail; none is begun once the deadline has passed."""
        root = self.gallery_folder(engine.backend)
        for match, hit in zip(matches, outcome.hits, strict=True):
            checkpoint()
            match.thumbnail_jpeg, match.note = thumbnail_or_note(
                root, hit.item, self.thumbnail_size, engine.max_pixels
            )

    def GetInfo(  # noqa: N802 (gRPC method name)
        self, request: search_pb2.GetInfoRequest, context: grpc.ServicerContext
    ) -> search_pb2.GetInfoResponse:
        with self.telemetry.call("GetInfo", context):
            return self._info()

    def ReloadIndex(  # noqa: N802 (gRPC method name)
        self, request: search_pb2.ReloadIndexRequest, context: grpc.ServicerContext
    ) -> search_pb2.ReloadIndexResponse:
        with self.telemetry.call("ReloadIndex", context) as call:
            try:
                old, new = self.swap_index(request.index_path or None)
            except InvalidIndexError as error:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"kept the old index: {error}")
            except BackendUnavailable as error:
                context.abort(grpc.StatusCode.UNAVAILABLE, f"kept the old index: {error}")
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
            max_distance=self.max_distance or 0.0,
            intra_op_threads=embedder.threads,
            server_version=lookalike_version(),
        )

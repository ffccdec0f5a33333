"""The gRPC SearchService on grpc.aio: admits a call, hands it to the engine, answers.

Handlers run on the event loop, so a call still waiting for its request, or
waiting for its batch, holds no thread. An admitted search runs on one of
``max_in_flight`` worker threads (``SearchEngine.search`` builds the whole
answer there), and a slot is freed only when that thread is done, even if the
caller left earlier.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc

from lookalike.common.output import lookalike_version
from lookalike.server.online.calls import CallLimits, deadline_of
from lookalike.server.online.engine import SearchEngine
from lookalike.server.online.errors import Refused
from lookalike.server.online.heap import trim_heap
from lookalike.server.online.reloads import ReloadBusy, ReloadRefused, allowed_location
from lookalike.server.online.telemetry import Telemetry, note
from lookalike.v1 import search_pb2, search_pb2_grpc

log = logging.getLogger(__name__)

# How long a reload or a change waits for the gallery's turn when the caller set no
# deadline: the longest turn is one chunk of an AddImages call, or a compaction.
TURN_WAIT_SECONDS = 60.0


class SearchService(search_pb2_grpc.SearchServiceServicer):
    def __init__(self, engine: SearchEngine, telemetry: Telemetry | None = None) -> None:
        config = engine.config
        self.engine = engine
        self.config = config
        self.telemetry = telemetry or Telemetry()
        # What a reload may open: the location served at start, or names under index_root.
        self.serves_folders = config.backend == "memmap"  # else a Milvus collection
        self.served = str(config.index) if self.serves_folders else str(config.collection)
        self._slots = threading.BoundedSemaphore(config.max_in_flight)
        self._workers = ThreadPoolExecutor(config.max_in_flight, thread_name_prefix="search")
        # One reload at a time (more are refused, not queued); and one turn at the
        # gallery for reloads, changes and compactions (they wait for it, briefly).
        self._reload_turn = threading.Lock()
        self.gallery_turn = threading.Lock()
        # Set once warm-up is over; until then Search answers UNAVAILABLE, as health does.
        self.ready = threading.Event()

    def warm_workers(self) -> None:
        """With an aligned gallery, start every worker thread and load dlib's models in
        each now: dlib's objects are made per thread (vision/align.py), and loading them
        takes about half a second, which the first Search on each thread would pay. Only
        before SERVING: the tasks hold every worker until all have started."""
        if not self.engine.backend.info.crop.aligned:
            return
        from lookalike.server.vision.align import load_models

        started = threading.Barrier(self.config.max_in_flight)  # all waiting: one task per thread

        def load() -> None:
            load_models()
            started.wait(timeout=120)

        for task in [self._workers.submit(load) for _ in range(self.config.max_in_flight)]:
            task.result()

    def take_turn(self, deadline: float | None) -> None:
        """The gallery's turn for a change, compaction or reload, waited for until the
        call's deadline (or TURN_WAIT_SECONDS); the caller releases ``gallery_turn``."""
        wait = TURN_WAIT_SECONDS if deadline is None else max(0.0, deadline - time.monotonic())
        if not self.gallery_turn.acquire(timeout=wait):
            raise Refused(
                grpc.StatusCode.ABORTED,
                "the gallery is busy with another change, compaction or reload; try again",
            )

    def swap_index(
        self, location: str | None = None, who: str = "SIGHUP", deadline: float | None = None
    ) -> search_pb2.ReloadIndexResponse:
        """Open, check and warm a new gallery, then switch to it; returns the new version,
        its size and the old version.

        ``location`` is an index folder, or a collection for the Milvus backend,
        already allowed by ``allowed_location``; by default the one served, read
        afresh. A reload while another runs raises ReloadBusy at once. Calls hold
        the engine they started with, so those in flight finish on the old
        gallery; a memory-mapped matrix is released when the last of them ends.
        The old gallery is let go, and the heap trimmed, before this returns: its
        searcher is gigabytes at ten million rows.
        """
        self._claim_reload(who)
        return self._swap_claimed(location, who, deadline)

    def _claim_reload(self, who: str) -> None:
        """Take the one reload turn, or ReloadBusy at once: reloads are not queued."""
        if not self._reload_turn.acquire(blocking=False):
            self.telemetry.reloads.labels("busy").inc()
            log.warning("reload by %s refused: another reload is under way", who)
            raise ReloadBusy("another reload is under way; try again when it has finished")

    def _swap_claimed(
        self, location: str | None, who: str, deadline: float | None = None
    ) -> search_pb2.ReloadIndexResponse:
        """The gallery's turn is held throughout: a change made while the new gallery
        was read would be missing from it."""
        try:
            self.take_turn(deadline)
        except Refused:
            self._reload_turn.release()
            raise
        old = self.engine
        fresh_backend = None
        try:
            fresh_backend = old.backend.reopen(location)
            fresh = old.with_backend(fresh_backend)
            fresh.warm_up(1)
            self.engine = fresh  # before the turn is given up: the next reload starts here
        except Exception as error:
            if fresh_backend is not None and fresh_backend is not old.backend:
                fresh_backend.close()
            self.telemetry.reloads.labels("failed").inc()
            log.error(
                "reload by %s failed, kept gallery %s: %s", who, old.backend.info.version, error
            )
            raise
        finally:
            self.gallery_turn.release()
            self._reload_turn.release()
        old.backend.close()  # its writer's lock passes on; searches on it still finish
        self.telemetry.gallery_size.set(len(fresh.backend))
        self.telemetry.reloads.labels("ok").inc()
        log.info(
            "reload by %s: switched from gallery %s to %s (%d images)",
            who,
            old.backend.info.version,
            fresh.backend.info.version,
            len(fresh.backend),
        )
        answer = search_pb2.ReloadIndexResponse(
            index_version=fresh.backend.info.version,
            gallery_size=len(fresh.backend),
            previous_version=old.backend.info.version,
        )
        del old, fresh, fresh_backend  # the old gallery's last reference, unless a search runs
        trim_heap()
        return answer

    async def Search(  # noqa: N802 (gRPC method name)
        self, request: search_pb2.SearchRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.SearchResponse:
        note(k=request.k, bytes=len(request.image))
        limits = CallLimits(deadline_of(context))
        self._admit(request, context)
        engine = self.engine  # this call's engine, even if the index is swapped
        work = self._workers.submit(engine.search, request, limits)
        work.add_done_callback(self._release)
        try:
            response = await asyncio.wrap_future(work)
        except asyncio.CancelledError:  # the caller left: its thread stops soon
            limits.abandoned.set()
            raise
        t = response.timings
        note(
            matches=len(response.matches),
            decode_ms=round(t.decode_ms, 2),
            embed_ms=round(t.embed_ms, 2),
            search_ms=round(t.search_ms, 2),
        )
        return response

    def _admit(self, request: search_pb2.SearchRequest, context: grpc.aio.ServicerContext) -> None:
        """Admission: ready, valid arguments, and a free slot, which ``_release`` frees."""
        if not self.ready.is_set():
            raise Refused(grpc.StatusCode.UNAVAILABLE, "warming up; retry shortly")
        max_k = self.config.max_k
        if not 1 <= request.k <= max_k:
            raise Refused(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"k must be between 1 and {max_k}, got {request.k}",
            )
        if not request.max_distance >= 0:  # also catches NaN
            raise Refused(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"max_distance must be 0 (the server's default) or above, "
                f"got {request.max_distance}",
            )
        widest = self.engine.backend.max_breadth  # approximate index (#26): a bounded breadth
        if not 0 <= request.search_breadth <= (widest or request.search_breadth):
            raise Refused(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"search_breadth must be 0 (the server's default) or more"
                f"{f', at most {widest}' if widest else ''}, got {request.search_breadth}",
            )
        if not self._slots.acquire(blocking=False):
            self.telemetry.refused_call("Search", "busy", context.peer())
            raise Refused(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"server busy: {self.config.max_in_flight} searches in flight; retry with backoff",
            )
        self.telemetry.in_flight.inc()

    def _release(self, _work: object) -> None:
        self.telemetry.in_flight.dec()
        self._slots.release()

    async def GetInfo(  # noqa: N802 (gRPC method name)
        self, request: search_pb2.GetInfoRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.GetInfoResponse:
        return self._info()

    async def ReloadIndex(  # noqa: N802 (gRPC method name)
        self, request: search_pb2.ReloadIndexRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.ReloadIndexResponse:
        """Runs on a thread of its own; a caller who stops waiting does not stop it
        (its result is logged), and reloads asked for meanwhile are refused."""
        peer = context.peer()
        note(peer=peer)
        try:
            location = allowed_location(
                request.index_path, self.served, self.config.index_root, self.serves_folders
            )
            self._claim_reload(peer)
        except ReloadRefused as error:
            self.telemetry.reloads.labels("refused").inc()
            log.warning("reload by %s refused: %s", peer, error)
            raise
        deadline = deadline_of(context)
        answer = await asyncio.get_running_loop().run_in_executor(
            None, self._swap_claimed, location, peer, deadline
        )
        note(index_version=answer.index_version)
        return answer

    def close(self) -> None:
        self._workers.shutdown(wait=True, cancel_futures=True)

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
            max_k=self.config.max_k,
            knn_backend=backend.name,
            weights=embedder.info.weights,
            thumbnail_size=self.config.thumbnail_size,
            startup_seconds=self.telemetry.startup_seconds,
            warmup_seconds=self.telemetry.warmup_seconds,
            max_distance=self.config.max_distance or 0.0,
            intra_op_threads=embedder.threads,
            server_version=lookalike_version(),
            gallery_faces=backend.info.faces.mode,
            model_instances=self.config.model_instances,
            default_search_breadth=backend.default_breadth,
            max_search_breadth=backend.max_breadth or 0,
        )

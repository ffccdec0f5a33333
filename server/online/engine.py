"""Search, from photo bytes to the SearchResponse, in one place.

A Search passes each stage once, on one worker thread: decode and crop
(vision), embed and k-NN in a batch shared with concurrent searches (the
batcher runs ``Nearest``), matches within the distance limit, thumbnails, the
response. A Search of several faces of its photo (SearchRequest.faces,
``query_faces.py``) sends each face to the batcher as its own image, all
within the call's deadline and worker slot, and answers one FaceResult per
face; the top-level fields repeat the first face's, which is all an old client
reads. The engine is built once per server (``SearchEngine.open``); a
reload makes a sibling over the new gallery (``with_backend``) that shares the
model, the batcher and the settings, while calls already running finish on the
engine they started with.
"""

from __future__ import annotations

import time
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from lookalike.server.backends.base import Hit, SearchBackend
from lookalike.server.backends.memmap import MemmapBackend
from lookalike.server.index.store import GalleryIndex
from lookalike.server.online.batcher import DeadlinePassed, MicroBatcher
from lookalike.server.online.calls import CallLimits
from lookalike.server.online.config import ServerConfig
from lookalike.server.online.query_faces import QueryFace, query_faces, wire_box
from lookalike.server.online.telemetry import Telemetry
from lookalike.server.online.thumbnails import thumbnail_or_note
from lookalike.server.vision.align import load_models as load_alignment_models
from lookalike.server.vision.embedder import Embedder
from lookalike.server.vision.imaging import Prepared, decode, load
from lookalike.server.vision.selection import prepare_faces
from lookalike.server.vision.steps import tallied
from lookalike.v1 import search_pb2


def open_backend(config: ServerConfig) -> SearchBackend:
    """The backend ``config`` names: the index folder, or a Milvus collection."""
    if config.backend == "milvus":
        from lookalike.server.backends.milvus import MilvusBackend, MilvusTarget

        return MilvusBackend.open(
            MilvusTarget.with_token_file(
                config.milvus_uri or "",
                config.collection or "",
                config.milvus_token_file,
                config.milvus_timeout_s,
            )
        )
    return MemmapBackend(
        GalleryIndex.open(config.index), config.knn_algorithm, breadth=config.search_breadth
    )


def gallery_folder(config: ServerConfig, backend: SearchBackend) -> Path:
    """Where the gallery's files are here: --gallery-root, else the manifest's root."""
    return config.gallery_root or Path(backend.info.gallery_root)


@dataclass(frozen=True)
class Nearest:
    """The step a batch of searches shares: one embedder run, one k-NN call.

    The batcher groups jobs by step, so searches over another gallery (after a
    reload) or of another breadth never share a run; steps of the same embedder,
    gallery and breadth are equal (a frozen dataclass), so their jobs do.
    """

    embedder: Embedder
    backend: SearchBackend
    breadth: int = 0

    def __call__(self, pixels: np.ndarray, k: int) -> tuple[list[list[Hit]], float, float]:
        """Each image's k nearest items, and the ms spent embedding and in k-NN."""
        started = time.perf_counter()
        features = self.embedder.embed(pixels)
        embedded = time.perf_counter()
        found = self.backend.search(features, k, self.breadth)
        return found, (embedded - started) * 1e3, (time.perf_counter() - embedded) * 1e3


@dataclass(frozen=True)
class Stages:
    """Milliseconds per stage of one search. The wire's ``decode_ms`` is decode and crop
    together, its ``search_ms`` is ``knn_ms``."""

    decode_ms: float = 0.0
    crop_ms: float = 0.0
    embed_ms: float = 0.0
    knn_ms: float = 0.0
    response_ms: float = 0.0
    # parts of crop_ms, by vision.steps.CROP_STEPS name, for the steps the crop ran
    crop_steps_ms: dict[str, float] = field(default_factory=dict)


class SearchEngine:
    """The model and the gallery it embedded, behind whichever search backend."""

    def __init__(
        self,
        config: ServerConfig,
        embedder: Embedder,
        backend: SearchBackend,
        batcher: MicroBatcher | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        backend.check_model(embedder.info)
        self.config = config
        self.embedder = embedder
        self.backend = backend
        self.batcher = batcher  # None: each search runs its own step (tests, tools)
        self.telemetry = telemetry

    @classmethod
    def open(
        cls,
        config: ServerConfig,
        telemetry: Telemetry | None = None,
        embedder: Embedder | None = None,
    ) -> SearchEngine:
        """The server's engine, with its batcher; ``embedder``: one already loaded."""
        embedder = embedder or Embedder(
            config.model, config.device, config.threads, config.model_instances
        )
        backend = open_backend(config)
        try:
            if backend.info.crop.aligned:
                load_alignment_models()  # missing model files stop the start, not a Search
            batcher = MicroBatcher(
                config.batch_window_ms / 1e3, config.max_batch, telemetry, config.model_instances
            )
            return cls(config, embedder, backend, batcher, telemetry)
        except BaseException:
            backend.close()
            raise

    def with_backend(self, backend: SearchBackend) -> SearchEngine:
        """The same model, batcher and settings over another gallery (checked against
        the model)."""
        return SearchEngine(self.config, self.embedder, backend, self.batcher, self.telemetry)

    def close(self) -> None:
        """End the batcher and release the gallery (a server's stop; a reload closes only
        the old engine's backend, since siblings share the batcher)."""
        if self.batcher is not None:
            self.batcher.close()
        self.backend.close()

    def prepare(self, data: bytes) -> Prepared:
        """Decode and crop the way the gallery was embedded (raises ImageError)."""
        info = self.backend.info
        return load(data, info.crop, info.input_size, self.config.max_pixels)

    def gallery_faces(self, data: bytes) -> list[Prepared]:
        """The rows a gallery photo gets, the way the gallery was indexed: its largest face,
        or each face (raises ImageError)."""
        info = self.backend.info
        image = decode(data, self.config.max_pixels)
        return prepare_faces(image, info.crop, info.input_size, info.faces)

    def warm_up(self, runs: int, batch_sizes: tuple[int, ...] = (1,)) -> float:
        """First runs are slow (allocation, kernel choice); pay for them before SERVING."""
        started = time.perf_counter()
        size = self.embedder.info.input_size
        for batch in batch_sizes:
            for _ in range(runs):
                features = self.embedder.embed(np.zeros((batch, size, size, 3), np.float32))
            if runs:
                self.backend.search(features, 1)
        return time.perf_counter() - started

    def nearest(self, breadth: int = 0) -> Nearest:
        """The embed-and-search step of this gallery at ``breadth`` (0: the server's)."""
        return Nearest(self.embedder, self.backend, breadth)

    def distance_limit(self, request: search_pb2.SearchRequest) -> float | None:
        """The call's own limit, else the server's (None: no limit)."""
        return request.max_distance or self.config.max_distance

    def query_faces(self, image: Image.Image, request: search_pb2.SearchRequest) -> list[QueryFace]:
        """The faces of the decoded photo ``request`` asks for, cropped the way the gallery
        was embedded (raises Refused for a choice of faces that cannot be served)."""
        info = self.backend.info
        most = self.config.max_query_faces
        return query_faces(image, info.crop, info.input_size, request, most)

    def search(
        self, request: search_pb2.SearchRequest, limits: CallLimits
    ) -> search_pb2.SearchResponse:
        """The whole answer to an admitted SearchRequest. ``limits`` is checked between
        stages: a call past its deadline, or whose caller left, stops there."""
        limits.check()
        started = time.perf_counter()
        image = decode(request.image, self.config.max_pixels)
        decoded = time.perf_counter()
        with tallied() as crop_steps:
            faces = self.query_faces(image, request)
        cropped = time.perf_counter()
        limits.check()
        found, embed_ms, knn_ms = self._nearest_hits(
            [face.prepared.pixels for face in faces], request, limits
        )
        answered = time.perf_counter()
        limit = self.distance_limit(request)
        results = []
        thumbnails: dict[str, tuple[bytes, str]] = {}  # a photo matched by several faces
        for face, hits in zip(faces, found, strict=True):
            hits = [hit for hit in hits if limit is None or hit.distance <= limit]
            matches = [_match(rank, hit) for rank, hit in enumerate(hits, start=1)]
            if request.thumbnails:
                self._add_thumbnails(matches, hits, limits, thumbnails)
            results.append(_face_result(face, matches))
        stages = Stages(
            decode_ms=(decoded - started) * 1e3,
            crop_ms=(cropped - decoded) * 1e3,
            embed_ms=embed_ms,
            knn_ms=knn_ms,
            response_ms=(time.perf_counter() - answered) * 1e3,
            crop_steps_ms={name: seconds * 1e3 for name, seconds in crop_steps.items()},
        )
        self._observe(stages, len(faces))
        return self._response(results, limit, stages, limits)

    def _nearest_hits(
        self, pixels: list[np.ndarray], request: search_pb2.SearchRequest, limits: CallLimits
    ) -> tuple[list[list[Hit]], float, float]:
        """Each face's hits, through the batcher when there is one (a face a job, so the
        faces of one photo share runs as concurrent searches do); the embed and k-NN ms
        are the longest any face waited for."""
        step = self.nearest(request.search_breadth)
        if self.batcher is None:
            return step(np.stack(pixels), request.k)
        deadline = limits.deadline
        futures = [self.batcher.submit(step, face, request.k, deadline) for face in pixels]
        answers = []
        try:
            for future in futures:
                answers.append(
                    future.result(
                        timeout=None if deadline is None else max(0.0, deadline - time.monotonic())
                    )
                )
        except (FutureTimeout, DeadlinePassed):
            for future in futures:
                future.cancel()
            limits.check()  # the deadline passed: the check ends the call
            raise
        return (
            [answer.hits for answer in answers],
            max(answer.embed_ms for answer in answers),
            max(answer.knn_ms for answer in answers),
        )

    def _add_thumbnails(
        self,
        matches: list[search_pb2.Match],
        hits: list[Hit],
        limits: CallLimits,
        made: dict[str, tuple[bytes, str]],
    ) -> None:
        """Each match's thumbnail (``made``: those of this call so far, by row id); none is
        begun once the deadline has passed."""
        root = gallery_folder(self.config, self.backend)
        for match, hit in zip(matches, hits, strict=True):
            if hit.item.id not in made:
                limits.check()
                made[hit.item.id] = thumbnail_or_note(
                    root, hit.item, self.config.thumbnail_size, self.config.max_pixels
                )
            match.thumbnail_jpeg, match.note = made[hit.item.id]

    def _observe(self, stages: Stages, faces: int = 1) -> None:
        if self.telemetry is None:
            return
        self.telemetry.faces.observe(faces)
        for stage, ms in (
            ("decode", stages.decode_ms),
            ("crop", stages.crop_ms),
            ("embed", stages.embed_ms),
            ("knn", stages.knn_ms),
            ("response", stages.response_ms),
            *stages.crop_steps_ms.items(),
        ):
            self.telemetry.stages.labels(stage).observe(ms / 1e3)

    def _response(
        self,
        faces: list[search_pb2.FaceResult],
        limit: float | None,
        stages: Stages,
        limits: CallLimits,
    ) -> search_pb2.SearchResponse:
        first = faces[0]
        return search_pb2.SearchResponse(
            matches=first.matches,
            query_crop=first.query_crop,
            crop_note=first.crop_note,
            faces=faces,
            max_distance=limit or 0.0,
            model_fingerprint=self.embedder.info.fingerprint,
            index_version=self.backend.info.version,
            timings=search_pb2.Timings(
                decode_ms=stages.decode_ms + stages.crop_ms,
                embed_ms=stages.embed_ms,
                search_ms=stages.knn_ms,
                total_ms=(time.perf_counter() - limits.started) * 1e3,
            ),
        )


def _match(rank: int, hit: Hit) -> search_pb2.Match:
    """A match; in a gallery indexed by face, with the face's box in its photo."""
    return search_pb2.Match(
        rank=rank,
        id=hit.item.id,
        label=hit.item.label,
        path=hit.item.path,
        distance=hit.distance,
        face_box=wire_box(hit.item.box),
    )


def _face_result(face: QueryFace, matches: list[search_pb2.Match]) -> search_pb2.FaceResult:
    """One searched face of the query photo: where it is, what the model saw, its matches."""
    prepared = face.prepared
    left, top, right, bottom = prepared.box
    width, height = prepared.original_size
    return search_pb2.FaceResult(
        number=face.number,
        box=wire_box(prepared.face),
        score=prepared.score,
        query_crop=search_pb2.CropBox(
            left=left, top=top, right=right, bottom=bottom, image_width=width, image_height=height
        ),
        crop_note=prepared.note,
        matches=matches,
    )

"""The gRPC SearchService: validates a call, runs the engine, shapes the answer."""

from __future__ import annotations

import logging
import time

import grpc

from lookalike.server.engine import SearchEngine
from lookalike.server.imaging import ImageError
from lookalike.v1 import search_pb2, search_pb2_grpc

log = logging.getLogger(__name__)


class SearchService(search_pb2_grpc.SearchServiceServicer):
    def __init__(self, engine: SearchEngine, max_k: int) -> None:
        self.engine = engine
        self.max_k = max_k

    def Search(  # noqa: N802 (gRPC method name)
        self, request: search_pb2.SearchRequest, context: grpc.ServicerContext
    ) -> search_pb2.SearchResponse:
        started = time.perf_counter()
        if not 1 <= request.k <= self.max_k:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"k must be between 1 and {self.max_k}, got {request.k}",
            )
        try:
            result = self.engine.search(request.image, request.k)
        except ImageError as error:
            log.info("Search refused: %s (%d bytes)", error, len(request.image))
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad image: {error}")
        manifest = self.engine.index.manifest
        response = search_pb2.SearchResponse(
            matches=[
                search_pb2.Match(
                    rank=rank,
                    id=hit.item.id,
                    label=hit.item.label,
                    path=hit.item.path,
                    distance=hit.distance,
                )
                for rank, hit in enumerate(result.hits, start=1)
            ],
            model_fingerprint=self.engine.embedder.info.fingerprint,
            index_version=manifest.version,
            timings=search_pb2.Timings(
                decode_ms=result.decode_ms,
                embed_ms=result.embed_ms,
                search_ms=result.search_ms,
                total_ms=(time.perf_counter() - started) * 1e3,
            ),
        )
        log.info(
            "Search ok k=%d decode=%.1fms embed=%.1fms search=%.1fms",
            request.k,
            result.decode_ms,
            result.embed_ms,
            result.search_ms,
        )
        return response

    def GetInfo(  # noqa: N802 (gRPC method name)
        self, request: search_pb2.GetInfoRequest, context: grpc.ServicerContext
    ) -> search_pb2.GetInfoResponse:
        embedder, index = self.engine.embedder, self.engine.index
        return search_pb2.GetInfoResponse(
            model_name=embedder.info.name,
            model_fingerprint=embedder.info.fingerprint,
            embedding_size=embedder.info.embedding_size,
            input_size=embedder.info.input_size,
            execution_provider=embedder.provider,
            providers=embedder.providers,
            gallery_size=len(index),
            index_version=index.manifest.version,
            max_k=self.max_k,
            knn_backend=self.engine.knn.backend,
            weights=embedder.info.weights,
        )

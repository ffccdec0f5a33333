"""The asyncio client: SearchClient's methods, results and errors on grpc.aio."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc

from lookalike.client._wire import (
    DEFAULT_READY_TIMEOUT,
    ClientBase,
    GalleryPages,
    Readiness,
    add_batches,
    add_request,
    add_results,
    call_error,
    remove_request,
    remove_results,
    search_request,
    search_result,
    server_info,
)
from lookalike.client.values import (
    AddResult,
    Faces,
    GalleryEntry,
    ImageInput,
    NewImage,
    RemoveResult,
    SearchResult,
    ServerInfo,
)
from lookalike.v1 import search_pb2


class AsyncSearchClient(ClientBase):
    """Talks to one lookalike server from asyncio; ``async with`` closes the channel.

    A grpc.aio channel belongs to the event loop it was made on: share one client
    among the tasks of that loop, and make one per loop (or thread running a loop).

    >>> async with AsyncSearchClient("localhost:50051") as client:
    ...     await client.wait_until_ready()
    ...     result = await client.search("query.jpg", k=5)
    """

    channels = grpc.aio

    async def __aenter__(self) -> AsyncSearchClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def wait_until_ready(self, timeout: float = DEFAULT_READY_TIMEOUT) -> None:
        """Wait until the server's health service says SERVING (model loaded, warmed up);
        LookalikeError with DEADLINE_EXCEEDED after ``timeout`` seconds."""
        wait = Readiness(self.target, timeout)
        while True:
            try:
                answer = await self._health.Check(
                    wait.request,
                    timeout=wait.check_timeout(),
                    metadata=self._metadata,
                    wait_for_ready=True,
                )
                if wait.answered(answer):
                    return
            except grpc.RpcError as error:
                wait.failed(error)
            await asyncio.sleep(wait.pause())

    async def search(
        self,
        image: ImageInput,
        k: int = 20,
        thumbnails: bool = False,
        max_distance: float | None = None,
        search_breadth: int = 0,
        faces: Faces = "largest",
        max_faces: int = 0,
        faces_only: bool = False,
    ) -> SearchResult:
        """As ``SearchClient.search``: the k nearest gallery images, one result per face
        searched in ``result.faces``."""
        request = search_request(
            image, k, thumbnails, max_distance, search_breadth, faces, max_faces, faces_only
        )
        return search_result(await self._call(self._stub.Search, request))

    async def reload_index(self, index_path: str = "") -> tuple[str, int]:
        """Ask the server to switch to a rebuilt index; returns (version, gallery size)."""
        request = search_pb2.ReloadIndexRequest(index_path=index_path)
        response = await self._call(self._stub.ReloadIndex, request)
        return response.index_version, response.gallery_size

    async def add_images(self, images: Sequence[NewImage]) -> list[AddResult]:
        """Enrol images (admin); one result per image, in order. Safe to send again.
        Many images go in several calls; each call's images are added when it returns."""
        results: list[AddResult] = []
        for batch in add_batches(images) or [images]:
            response = await self._call(self._stub.AddImages, add_request(batch))
            results += add_results(response, len(results))
        return results

    async def remove_images(
        self,
        ids: Sequence[str] = (),
        labels: Sequence[str] = (),
        images: Sequence[ImageInput] = (),
        delete_files: bool = False,
    ) -> list[RemoveResult]:
        """Remove images by content or external id, by label, or by a photo's exact bytes
        (admin); ``delete_files`` also deletes their files from the gallery folder."""
        request = remove_request(ids, labels, images, delete_files)
        return remove_results(await self._call(self._stub.RemoveImages, request))

    async def list_images(self, label: str = "") -> list[GalleryEntry]:
        """Every image of the gallery, or of one label (admin), page by page."""
        pages = GalleryPages(label)
        while (request := pages.next_request()) is not None:
            pages.add(await self._call(self._stub.ListImages, request))
        return pages.found

    async def compact(self) -> tuple[str, int, int]:
        """Fold added and removed images into a new index version (admin):
        (version, gallery size, rows folded)."""
        response = await self._call(self._stub.CompactIndex, search_pb2.CompactIndexRequest())
        return response.index_version, response.gallery_size, response.folded_rows

    async def info(self) -> ServerInfo:
        return server_info(await self._call(self._stub.GetInfo, search_pb2.GetInfoRequest()))

    async def _call(self, method, request):  # noqa: ANN001, ANN202 (any unary stub method)
        try:
            return await method(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as error:
            raise call_error(error) from None

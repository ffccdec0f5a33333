"""A thin, typed Python client of the lookalike SearchService."""

from __future__ import annotations

import time
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


class SearchClient(ClientBase):
    """Talks to one lookalike server; use as a context manager to close the channel.

    One client (one channel) may be shared by any number of threads.

    >>> with SearchClient("localhost:50051") as client:
    ...     client.wait_until_ready()
    ...     for match in client.search("query.jpg", k=5).matches:
    ...         print(match.rank, match.label, match.distance)
    """

    channels = grpc  # where insecure_channel and secure_channel come from

    def __enter__(self) -> SearchClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def wait_until_ready(self, timeout: float = DEFAULT_READY_TIMEOUT) -> None:
        """Block until the server's health service says SERVING (model loaded, warmed up);
        LookalikeError with DEADLINE_EXCEEDED after ``timeout`` seconds."""
        wait = Readiness(self.target, timeout)
        while True:
            try:
                answer = self._health.Check(
                    wait.request,
                    timeout=wait.check_timeout(),
                    metadata=self._metadata,
                    wait_for_ready=True,
                )
                if wait.answered(answer):
                    return
            except grpc.RpcError as error:
                wait.failed(error)
            time.sleep(wait.pause())

    def search(
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
        """The k nearest gallery images; ``thumbnails`` also fetches a small JPEG of each;
        ``max_distance`` drops matches farther than it (None: the server's default);
        ``search_breadth`` is an approximate index's nprobe or efSearch for this call
        (0: the server's; more recall for more time, up to the server's limit).
        ``faces``: which faces of the photo to search, "largest", "all" (at most
        ``max_faces``, 0: the server's most), the face at a ``Box``, or at a point (x, y);
        ``result.faces`` has one result per face. ``faces_only``: NOT_FOUND when the photo
        has no such face, instead of searching the crop's fallback region."""
        request = search_request(
            image, k, thumbnails, max_distance, search_breadth, faces, max_faces, faces_only
        )
        return search_result(self._call(self._stub.Search, request))

    def reload_index(self, index_path: str = "") -> tuple[str, int]:
        """Ask the server to switch to a rebuilt index; returns (version, gallery size)."""
        request = search_pb2.ReloadIndexRequest(index_path=index_path)
        response = self._call(self._stub.ReloadIndex, request)
        return response.index_version, response.gallery_size

    def add_images(self, images: Sequence[NewImage]) -> list[AddResult]:
        """Enrol images (admin); one result per image, in order. Safe to send again.
        Many images go in several calls; each call's images are added when it returns."""
        results: list[AddResult] = []
        for batch in add_batches(images) or [images]:
            response = self._call(self._stub.AddImages, add_request(batch))
            results += add_results(response, len(results))
        return results

    def remove_images(
        self,
        ids: Sequence[str] = (),
        labels: Sequence[str] = (),
        images: Sequence[ImageInput] = (),
        delete_files: bool = False,
    ) -> list[RemoveResult]:
        """Remove images by content or external id, by label, or by a photo's exact bytes
        (admin); ``delete_files`` also deletes their files from the gallery folder."""
        request = remove_request(ids, labels, images, delete_files)
        return remove_results(self._call(self._stub.RemoveImages, request))

    def list_images(self, label: str = "") -> list[GalleryEntry]:
        """Every image of the gallery, or of one label (admin), page by page."""
        pages = GalleryPages(label)
        while (request := pages.next_request()) is not None:
            pages.add(self._call(self._stub.ListImages, request))
        return pages.found

    def compact(self) -> tuple[str, int, int]:
        """Fold added and removed images into a new index version (admin):
        (version, gallery size, rows folded)."""
        response = self._call(self._stub.CompactIndex, search_pb2.CompactIndexRequest())
        return response.index_version, response.gallery_size, response.folded_rows

    def info(self) -> ServerInfo:
        return server_info(self._call(self._stub.GetInfo, search_pb2.GetInfoRequest()))

    def _call(self, method, request):  # noqa: ANN001, ANN202 (any unary stub method)
        try:
            return method(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as error:
            raise call_error(error) from None

"""Enrolment and erasure on the live server: AddImages, RemoveImages, ListImages, CompactIndex.

Every change goes through the backend, which makes it durable before the call
answers and visible to the next Search. Changes, compactions and index reloads
take turns (one lock); searches never wait for them. The log records what was
removed by content id and count, never the label, the path or the image.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np

from lookalike.server.backends.base import BackendUnavailable, SearchBackend
from lookalike.server.index.gallery import content_id
from lookalike.server.index.store import InvalidIndexError, Item
from lookalike.server.online.gallery_files import (
    InvalidName,
    check_external_id,
    check_label,
    delete_image,
    suffix_of,
    write_image,
)
from lookalike.server.online.service import SearchService
from lookalike.server.vision.imaging import ImageError
from lookalike.v1 import search_pb2

log = logging.getLogger(__name__)

MAX_PAGE = 1000
R = search_pb2  # the ChangeResult values: R.ADDED, R.REMOVED, ...


@dataclass
class Pending:
    """One image of an AddImages call between checking and adding."""

    position: int
    item: Item
    data: bytes
    pixels: np.ndarray


class GalleryService(SearchService):
    """SearchService plus the admin RPCs that change the gallery it searches."""

    def __init__(self, *args: object, compact_after_rows: int = 0, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.compact_after_rows = compact_after_rows
        self._compacting: threading.Thread | None = None

    def AddImages(  # noqa: N802 (gRPC method name)
        self, request: search_pb2.AddImagesRequest, context: grpc.ServicerContext
    ) -> search_pb2.AddImagesResponse:
        if not request.images:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no images to add")
        with self.telemetry.call("AddImages", context) as call, self._changing(context):
            backend = self.engine.backend
            results, pending = self._check_new(request, backend)
            if pending:
                pixels = np.stack([p.pixels for p in pending])
                vectors = self.engine.embedder.embed(pixels)
                root = Path(backend.info.gallery_root)
                for image, vector in zip(pending, vectors, strict=True):
                    results.append(self._add(backend, root, image, vector))
            results.sort(key=lambda r: r.position)
            for result in results:
                self._count("add", result.result)
            call.update(images=len(results), added=sum(r.result == R.ADDED for r in results))
            return search_pb2.AddImagesResponse(
                results=results, gallery_size=len(backend), pending_rows=backend.pending_rows
            )

    def _check_new(
        self, request: search_pb2.AddImagesRequest, backend: SearchBackend
    ) -> tuple[list[search_pb2.AddResult], list[Pending]]:
        """Failures and images already there, answered; the rest, decoded, to embed."""
        results, pending, seen = [], [], set()
        for position, new in enumerate(request.images):
            try:
                label, wanted = check_label(new.label), check_external_id(new.external_id)
                prepared = self.engine.prepare(new.image)
                image_id = content_id(new.image)
                there = _of_content(backend, image_id)
                if there or image_id in seen:
                    item = there[0] if there else Item(image_id, label, "")
                    results.append(_result(position, R.ALREADY_PRESENT, item))
                    continue
                if wanted and backend.find(wanted):
                    raise InvalidName(f"the external id {wanted!r} names another image already")
                path = f"{label}/{wanted or image_id}{suffix_of(new.image)}"
            except (InvalidName, ImageError) as error:
                results.append(
                    search_pb2.AddResult(position=position, result=R.FAILED, error=str(error))
                )
                continue
            seen.add(image_id)
            pending.append(
                Pending(position, Item(image_id, label, path), new.image, prepared.pixels)
            )
        return results, pending

    def _add(
        self, backend: SearchBackend, root: Path, image: Pending, vector: np.ndarray
    ) -> search_pb2.AddResult:
        try:
            if not root.is_dir():  # never make a gallery where the index does not say one is
                raise FileNotFoundError(f"the gallery folder {root} is missing")
            write_image(root, image.item.path, image.data)
        except OSError as error:
            log.error("cannot write an enrolled image into the gallery: %s", error)
            reason = error if isinstance(error, FileExistsError) else "the gallery is not writable"
            return search_pb2.AddResult(
                position=image.position, result=R.FAILED, error=f"not added: {reason}"
            )
        there = backend.add(image.item, vector)
        if there is not None:
            return _result(image.position, R.ALREADY_PRESENT, there)
        log.info("added image %s", image.item.id)
        return _result(image.position, R.ADDED, image.item)

    def RemoveImages(  # noqa: N802 (gRPC method name)
        self, request: search_pb2.RemoveImagesRequest, context: grpc.ServicerContext
    ) -> search_pb2.RemoveImagesResponse:
        if not (request.ids or request.labels or request.images):
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "say what to remove: ids, labels or images"
            )
        with self.telemetry.call("RemoveImages", context) as call, self._changing(context):
            backend = self.engine.backend
            root = Path(backend.info.gallery_root)
            selectors = [("id", i, backend.find(i)) for i in request.ids]
            selectors += [("label", i, [it for it, _ in backend.items(i)]) for i in request.labels]
            for data in request.images:
                image_id = content_id(data)
                selectors.append(
                    ("image", image_id, [i for i in backend.find(image_id) if i.id == image_id])
                )
            results, positions = [], {"id": 0, "label": 0, "image": 0}
            for kind, _, items in selectors:
                gone = backend.remove([item.id for item in items]) if items else []
                result = search_pb2.RemoveResult(
                    selector=kind,
                    position=positions[kind],
                    result=R.REMOVED if gone else R.NOT_FOUND,
                    removed=[self._erased(root, item, request.delete_files) for item in gone],
                )
                positions[kind] += 1
                results.append(result)
                self._count("remove", result.result, max(1, len(gone)))
                if gone:
                    log.info(
                        "removed %d images by %s: ids %s%s",
                        len(gone),
                        kind,
                        ", ".join(item.id for item in gone),
                        ", files deleted" if request.delete_files else "",
                    )
            call.update(removed=sum(len(r.removed) for r in results))
            return search_pb2.RemoveImagesResponse(
                results=results, gallery_size=len(backend), pending_rows=backend.pending_rows
            )

    def _erased(self, root: Path, item: Item, delete_files: bool) -> search_pb2.RemovedImage:
        deleted = False
        if delete_files:
            try:
                deleted = all([delete_image(root, path) for path in (item.path, *item.also)])
            except OSError as error:
                log.error("removed image %s, but its file stays: %s", item.id, error.strerror)
        return search_pb2.RemovedImage(
            id=item.id, label=item.label, path=item.path, file_deleted=deleted
        )

    def ListImages(  # noqa: N802 (gRPC method name)
        self, request: search_pb2.ListImagesRequest, context: grpc.ServicerContext
    ) -> search_pb2.ListImagesResponse:
        with self.telemetry.call("ListImages", context):
            size = request.page_size or MAX_PAGE
            if not 1 <= size <= MAX_PAGE or not (request.page_token or "0").isdigit():
                context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"page_size must be 1 to {MAX_PAGE}, page_token one this RPC returned",
                )
            start = int(request.page_token or 0)
            backend = self.engine.backend
            try:
                found = backend.items(request.label or None)
            except BackendUnavailable as error:
                context.abort(grpc.StatusCode.UNAVAILABLE, str(error))
            page = found[start : start + size]
            return search_pb2.ListImagesResponse(
                images=[
                    search_pb2.GalleryEntry(
                        id=item.id,
                        label=item.label,
                        path=item.path,
                        also=item.also,
                        pending=pending,
                    )
                    for item, pending in page
                ],
                next_page_token=str(start + size) if start + size < len(found) else "",
                gallery_size=len(backend),
            )

    def CompactIndex(  # noqa: N802 (gRPC method name)
        self, request: search_pb2.CompactIndexRequest, context: grpc.ServicerContext
    ) -> search_pb2.CompactIndexResponse:
        with self.telemetry.call("CompactIndex", context) as call, self._changing(context):
            backend = self.engine.backend
            try:
                old, new, folded = backend.compact()
            except InvalidIndexError as error:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"not compacted: {error}")
            self._gauges(backend)
            call.update(index_version=new, folded=folded)
            return search_pb2.CompactIndexResponse(
                index_version=new,
                gallery_size=len(backend),
                previous_version=old,
                folded_rows=folded,
            )

    def _changing(self, context: grpc.ServicerContext):  # noqa: ANN202 (context manager)
        return _Changing(self, context)

    def _count(self, op: str, result: int, times: int = 1) -> None:
        name = search_pb2.ChangeResult.Name(result).lower()
        self.telemetry.changes.labels(op, name).inc(times)

    def _gauges(self, backend: SearchBackend) -> None:
        self.telemetry.gallery_size.set(len(backend))
        self.telemetry.pending_rows.set(backend.pending_rows)

    def after_change(self) -> None:
        """Update the gauges; past the threshold, compact in the background."""
        backend = self.engine.backend
        self._gauges(backend)
        due = self.compact_after_rows and backend.pending_rows >= self.compact_after_rows
        if due and (self._compacting is None or not self._compacting.is_alive()):
            self._compacting = threading.Thread(
                target=self.compact_in_background, name="compact", daemon=True
            )
            self._compacting.start()

    def compact_in_background(self) -> None:
        with self._reloading:
            backend = self.engine.backend
            try:
                old, new, folded = backend.compact()
            except (InvalidIndexError, BackendUnavailable, OSError) as error:
                log.error("automatic compaction failed, the changes stay journalled: %s", error)
                return
            self._gauges(backend)
            log.info("compacted %d changed rows: index %s -> %s", folded, old, new)


def _result(position: int, result: int, item: Item) -> search_pb2.AddResult:
    return search_pb2.AddResult(
        position=position, result=result, id=item.id, label=item.label, path=item.path
    )


def _of_content(backend: SearchBackend, image_id: str) -> list[Item]:
    """The image of exactly this content id (find also matches external ids)."""
    return [item for item in backend.find(image_id) if item.id == image_id]


class _Changing:
    """Holds the change lock while a call changes the gallery, and maps its failures."""

    def __init__(self, service: GalleryService, context: grpc.ServicerContext) -> None:
        self.service, self.context = service, context

    def __enter__(self) -> None:
        if not self.service.ready.is_set():
            self.context.abort(grpc.StatusCode.UNAVAILABLE, "warming up; retry shortly")
        self.service._reloading.acquire()

    def __exit__(self, kind, error, trace) -> bool:  # noqa: ANN001
        self.service._reloading.release()
        if error is None:
            self.service.after_change()
            return False
        if isinstance(error, BackendUnavailable):
            self.context.abort(grpc.StatusCode.UNAVAILABLE, str(error))
        if isinstance(error, OSError):
            log.error("a gallery change failed: %s", error)
            self.context.abort(
                grpc.StatusCode.INTERNAL,
                "a change could not be stored; send the call again (it is idempotent)",
            )
        return False

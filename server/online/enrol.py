"""Enrolment and erasure on the live server: AddImages, RemoveImages, ListImages, CompactIndex.

Every change goes through the backend, which makes it durable before the call
answers and visible to the next Search. Changes, compactions and index reloads
take turns at the gallery; searches never wait for them. An AddImages call is
worked through in chunks of ``max_batch`` images, a turn each, and stops
before the caller's deadline or as soon as the caller leaves: what was added
is durable and reported, the rest is reported not added. The log records what
was removed by content id and count, never the label, the path or the image.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc
import numpy as np

from lookalike.server.backends.base import ReadOnlyGallery, SearchBackend
from lookalike.server.index.gallery import content_id
from lookalike.server.index.item import Item, face_id, listing_key
from lookalike.server.index.store import InvalidIndexError
from lookalike.server.online.calls import CallLimits, deadline_of
from lookalike.server.online.engine import gallery_folder
from lookalike.server.online.errors import Refused
from lookalike.server.online.gallery_files import (
    GalleryFileError,
    InvalidName,
    check_external_id,
    check_label,
    delete_image,
    suffix_of,
    write_image,
)
from lookalike.server.online.heap import trim_heap
from lookalike.server.online.query_faces import wire_box
from lookalike.server.online.service import SearchService
from lookalike.server.online.telemetry import note
from lookalike.server.vision.imaging import ImageError
from lookalike.v1 import search_pb2

log = logging.getLogger(__name__)

MAX_PAGE = 1000
MAX_PAGE_TOKEN_BYTES = 4096
ADMIN_THREADS = 4
# The most an AddImages call keeps back from its deadline for its answer (a 2 s call that
# kept 0.2 s answered after its deadline once, in a full test run on two busy cores).
ANSWER_RESERVE_SECONDS = 0.5
Change = search_pb2.ChangeResult  # ADDED, ALREADY_PRESENT, REMOVED, NOT_FOUND, FAILED
NOT_REACHED = "not added: the call's deadline came before this image was reached; send it again"
T = TypeVar("T")


@dataclass
class Pending:
    """One image of an AddImages call between checking and adding: its row, or in a
    gallery indexed by face one row per face, each with its pixels."""

    position: int
    rows: list[Item]
    data: bytes
    pixels: list[np.ndarray]

    @property
    def item(self) -> Item:
        """The photo's first row (its largest face)."""
        return self.rows[0]


class GalleryService(SearchService):
    """SearchService plus the admin RPCs that change the gallery it searches.

    The admin RPCs are coroutines like Search; their blocking work runs on a
    pool of its own, so that they never take a search worker.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self._admin = ThreadPoolExecutor(ADMIN_THREADS, thread_name_prefix="admin")
        self._compacting: threading.Thread | None = None

    async def _run(self, context: grpc.aio.ServicerContext, work: Callable[..., T], *args) -> T:
        """``work(*args, limits)`` on the admin pool; a caller who leaves stops it at its
        next check (what it finished stays done)."""
        if not self.ready.is_set():
            raise Refused(grpc.StatusCode.UNAVAILABLE, "warming up; retry shortly")
        limits = CallLimits(deadline_of(context))
        task = asyncio.get_running_loop().run_in_executor(self._admin, work, *args, limits)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            limits.abandoned.set()
            raise

    def _changing(self, limits: CallLimits) -> SearchBackend:
        """Take the gallery's turn (the caller releases it) and the backend to change."""
        self.take_turn(limits.deadline)
        backend = self.engine.backend
        if not backend.writable:
            self.gallery_turn.release()
            raise ReadOnlyGallery("this server follows the gallery; it holds no writer lock")
        return backend

    # AddImages

    async def AddImages(  # noqa: N802 (gRPC method name)
        self, request: search_pb2.AddImagesRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.AddImagesResponse:
        most = self.config.max_images_per_add
        if not request.images:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "no images to add")
        if len(request.images) > most:
            raise Refused(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"at most {most} images per AddImages call, got {len(request.images)}; "
                "send them in several calls",
            )
        self._check_faces(request.faces)
        response = await self._run(context, self._add_images, request)
        note(
            images=len(response.results),
            added=sum(r.result == Change.ADDED for r in response.results),
        )
        return response

    def _check_faces(self, mode: int) -> None:
        """AddImagesRequest.faces: unset, or the gallery's own way of indexing."""
        if mode == search_pb2.FACE_MODE_UNSPECIFIED:
            return
        wanted = {search_pb2.FACE_MODE_LARGEST: "largest", search_pb2.FACE_MODE_ALL: "all"}
        if mode not in wanted:
            raise Refused(
                grpc.StatusCode.INVALID_ARGUMENT,
                "AddImagesRequest.faces is the largest face or every face (FACE_MODE_LARGEST "
                f"or FACE_MODE_ALL), not mode {mode}",
            )
        held = self.engine.backend.info.faces.mode
        if wanted[mode] != held:
            raise Refused(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"this gallery is indexed by {'every face' if held == 'all' else 'largest face'}"
                ", and images are added to it the same way; leave faces unset",
            )

    def _add_images(
        self, request: search_pb2.AddImagesRequest, limits: CallLimits
    ) -> search_pb2.AddImagesResponse:
        images, chunk = request.images, self.config.max_batch
        results: list[search_pb2.AddResult] = []
        claimed: set[str] = set()  # external ids given to images of this call
        reserve, slowest = answer_reserve(limits), 0.0
        for start in range(0, len(images), chunk):
            if must_stop(limits, slowest, reserve):
                break
            began = time.monotonic()
            backend = self._changing(limits)
            try:
                results += self._add_chunk(backend, images, start, start + chunk, claimed)
            finally:
                self.gallery_turn.release()
            self.after_change()
            slowest = max(slowest, time.monotonic() - began)
        done = len(results)
        if done < len(images):
            log.warning(
                "AddImages stopped after %d of %d images: %s",
                done,
                len(images),
                "the caller left" if limits.abandoned.is_set() else "its deadline was near",
            )
        results += [
            search_pb2.AddResult(position=p, result=Change.FAILED, error=NOT_REACHED)
            for p in range(done, len(images))
        ]
        for result in results:
            self._count("add", result.result)
        backend = self.engine.backend
        return search_pb2.AddImagesResponse(
            results=results, gallery_size=len(backend), pending_rows=backend.pending_rows
        )

    def _add_chunk(
        self,
        backend: SearchBackend,
        images: list[search_pb2.NewImage],
        start: int,
        end: int,
        claimed: set[str],
    ) -> list[search_pb2.AddResult]:
        """Check, embed and add images[start:end]; their results in order."""
        results: dict[int, search_pb2.AddResult] = {}
        pending = []
        for position in range(start, min(end, len(images))):
            checked = self._check_new(position, images[position], backend, claimed)
            if isinstance(checked, Pending):
                pending.append(checked)
            else:
                results[position] = checked
        if pending:
            pixels = [face for image in pending for face in image.pixels]
            vectors = self.engine.embedder.embed(np.stack(pixels))
            root = gallery_folder(self.config, backend)
            first = 0
            for image in pending:
                rows = vectors[first : first + len(image.rows)]
                first += len(image.rows)
                results[image.position] = self._add(backend, root, image, rows)
        return [results[position] for position in sorted(results)]

    def _check_new(
        self,
        position: int,
        new: search_pb2.NewImage,
        backend: SearchBackend,
        claimed: set[str],
    ) -> search_pb2.AddResult | Pending:
        """A failure or an image already there, answered; else the image decoded, to embed.
        Any failure fails this image alone."""
        try:
            label, wanted = check_label(new.label), check_external_id(new.external_id)
            faces = self.engine.gallery_faces(new.image)
            image_id = content_id(new.image)
            if there := _of_content(backend, image_id):
                return _result(position, Change.ALREADY_PRESENT, there)
            if wanted and wanted in claimed:
                raise InvalidName(f"the external id {wanted!r} is given to another image here")
            if wanted and backend.find(wanted):
                raise InvalidName(f"the external id {wanted!r} names another image already")
            path = f"{label}/{wanted or image_id}{suffix_of(new.image)}"
        except (InvalidName, ImageError) as error:
            return _failed(position, str(error))
        except Exception:  # noqa: BLE001 (a decoder's own failure: this image only)
            log.exception("image %d of an AddImages call could not be read", position)
            return _failed(position, "the image could not be read (the server's log says why)")
        if wanted:
            claimed.add(wanted)
        if backend.info.faces.mode == "largest":
            rows = [Item(image_id, label, path)]
        else:
            rows = [
                Item(face_id(image_id, n), label, path, box=face.face)
                for n, face in enumerate(faces)
            ]
        return Pending(position, rows, new.image, [face.pixels for face in faces])

    def _add(
        self, backend: SearchBackend, root: Path, image: Pending, vectors: np.ndarray
    ) -> search_pb2.AddResult:
        """Write the photo into the gallery, then add its row, or each of its faces' rows."""
        if there := _of_content(backend, image.item.file_id):  # an earlier copy in this call
            return _result(image.position, Change.ALREADY_PRESENT, there)
        try:
            if not root.is_dir():  # never make a gallery where the index does not say one is
                raise GalleryFileError("the gallery folder is missing on the server")
            write_image(root, image.item.path, image.data)
        except GalleryFileError as error:
            return _failed(image.position, f"not added: {error}")
        except OSError as error:
            log.error("cannot write an enrolled image into the gallery: %s", error)
            return _failed(image.position, "not added: the gallery is not writable")
        added = [
            row
            for row, vector in zip(image.rows, vectors, strict=True)
            if not backend.add(row, vector)
        ]
        if not added:
            return _result(image.position, Change.ALREADY_PRESENT, image.rows)
        log.info("added image %s (%d rows)", image.item.file_id, len(added))
        return _result(image.position, Change.ADDED, image.rows)

    # RemoveImages

    async def RemoveImages(  # noqa: N802 (gRPC method name)
        self, request: search_pb2.RemoveImagesRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.RemoveImagesResponse:
        selectors = len(request.ids) + len(request.labels) + len(request.images)
        most = self.config.max_ids_per_remove
        if not selectors:
            raise Refused(
                grpc.StatusCode.INVALID_ARGUMENT, "say what to remove: ids, labels or images"
            )
        if selectors > most:
            raise Refused(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"at most {most} ids, labels and images together per RemoveImages call, "
                f"got {selectors}; send them in several calls",
            )
        response = await self._run(context, self._remove_images, request)
        note(removed=sum(len(r.removed) for r in response.results))
        return response

    def _remove_images(
        self, request: search_pb2.RemoveImagesRequest, limits: CallLimits
    ) -> search_pb2.RemoveImagesResponse:
        backend = self._changing(limits)
        try:
            results = self._remove_all(backend, request, limits)
        finally:
            self.gallery_turn.release()
        self.after_change()
        return search_pb2.RemoveImagesResponse(
            results=results, gallery_size=len(backend), pending_rows=backend.pending_rows
        )

    def _remove_all(
        self, backend: SearchBackend, request: search_pb2.RemoveImagesRequest, limits: CallLimits
    ) -> list[search_pb2.RemoveResult]:
        root = gallery_folder(self.config, backend)
        selectors = [("id", position, i) for position, i in enumerate(request.ids)]
        selectors += [("label", position, i) for position, i in enumerate(request.labels)]
        selectors += [
            ("image", position, content_id(data)) for position, data in enumerate(request.images)
        ]
        results = []
        for kind, position, key in selectors:
            if limits.abandoned.is_set() or _past(limits):
                results.append(
                    search_pb2.RemoveResult(
                        selector=kind,
                        position=position,
                        result=Change.FAILED,
                        error="not removed: the call's deadline came first; send it again",
                    )
                )
                continue
            items = _selected(backend, kind, key)
            # Files first: a kill between the two leaves the face in the index, where
            # the caller's retry finds and erases it; the other order would leave its
            # file behind for good, with nothing left to find it by.
            keep = _photos_kept(backend, items)
            erased = [
                self._erased(root, item, request.delete_files and item.file_id not in keep)
                for item in items
            ]
            gone = {item.id for item in backend.remove([item.id for item in items])}
            results.append(
                search_pb2.RemoveResult(
                    selector=kind,
                    position=position,
                    result=Change.REMOVED if gone else Change.NOT_FOUND,
                    removed=[image for image in erased if image.id in gone],
                )
            )
            self._count("remove", results[-1].result, max(1, len(gone)))
            if gone:
                log.info(
                    "removed %d images by %s: ids %s%s",
                    len(gone),
                    kind,
                    ", ".join(sorted(gone)),
                    ", files deleted" if request.delete_files else "",
                )
        return results

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

    # ListImages

    async def ListImages(  # noqa: N802 (gRPC method name)
        self, request: search_pb2.ListImagesRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.ListImagesResponse:
        size = request.page_size or MAX_PAGE
        if not 1 <= size <= MAX_PAGE:
            raise Refused(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"page_size must be 1 to {MAX_PAGE}, got {request.page_size}",
            )
        after = read_page_token(request.page_token)
        return await self._run(context, self._list_page, request.label, size, after)

    def _list_page(
        self, label: str, size: int, after: tuple | None, _limits: CallLimits
    ) -> search_pb2.ListImagesResponse:
        backend = self.engine.backend
        page, more = backend.list_page(label or None, after, size)
        return search_pb2.ListImagesResponse(
            images=[
                search_pb2.GalleryEntry(
                    id=item.id,
                    label=item.label,
                    path=item.path,
                    also=item.also,
                    pending=pending,
                    face_box=wire_box(item.box),
                )
                for item, pending in page
            ],
            next_page_token=page_token(page[-1][0]) if more else "",
            gallery_size=len(backend),
        )

    # CompactIndex

    async def CompactIndex(  # noqa: N802 (gRPC method name)
        self, request: search_pb2.CompactIndexRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.CompactIndexResponse:
        response = await self._run(context, self._compact)
        note(index_version=response.index_version, folded=response.folded_rows)
        return response

    def _compact(self, limits: CallLimits) -> search_pb2.CompactIndexResponse:
        backend = self._changing(limits)
        try:
            old, new, folded = backend.compact()
        except InvalidIndexError as error:
            raise Refused(grpc.StatusCode.FAILED_PRECONDITION, f"not compacted: {error}") from None
        finally:
            self.gallery_turn.release()
        trim_heap()  # the old version's searcher is let go
        self._gauges(backend)
        return search_pb2.CompactIndexResponse(
            index_version=new, gallery_size=len(backend), previous_version=old, folded_rows=folded
        )

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
        threshold = self.config.compact_after_rows
        due = threshold and backend.writable and backend.pending_rows >= threshold
        if due and (self._compacting is None or not self._compacting.is_alive()):
            self._compacting = threading.Thread(
                target=self.compact_in_background, name="compact", daemon=True
            )
            self._compacting.start()

    def compact_in_background(self) -> None:
        with self.gallery_turn:
            backend = self.engine.backend
            try:
                old, new, folded = backend.compact()
            except Exception as error:  # noqa: BLE001 (the changes stay journalled)
                log.error("automatic compaction failed, the changes stay journalled: %s", error)
                return
            trim_heap()
            self._gauges(backend)
            log.info("compacted %d changed rows: index %s -> %s", folded, old, new)

    def close(self) -> None:
        self._admin.shutdown(wait=True, cancel_futures=True)
        super().close()


def answer_reserve(limits: CallLimits) -> float:
    """The time an AddImages call keeps for its answer (built, sent and read): a quarter
    of what is left when it starts adding, at most ``ANSWER_RESERVE_SECONDS``."""
    if limits.deadline is None:
        return 0.0
    return min(ANSWER_RESERVE_SECONDS, max(0.0, limits.deadline - time.monotonic()) / 4)


def must_stop(limits: CallLimits, slowest: float, reserve: float) -> bool:
    """Stop before a chunk that might not finish before the deadline, so the answer still
    reaches the caller; or at once when the caller left. A chunk is judged by the slowest
    of the call so far, twice over, not by the last: a call's images differ in size, and
    a busy disk stalls a sync."""
    if limits.abandoned.is_set():
        return True
    if limits.deadline is None:
        return False
    return limits.deadline - time.monotonic() < max(reserve, 2 * slowest)


def _past(limits: CallLimits) -> bool:
    return limits.deadline is not None and time.monotonic() >= limits.deadline - 0.1


def _selected(backend: SearchBackend, kind: str, key: str) -> list[Item]:
    if kind == "id":
        return backend.find(key)
    if kind == "label":
        return [item for item, _ in backend.items(key)]
    return _of_content(backend, key)


def _result(position: int, result: int, rows: list[Item]) -> search_pb2.AddResult:
    """The result of one image: its content id, label and path, and in a gallery indexed
    by face each face's row id and box."""
    first = rows[0]
    return search_pb2.AddResult(
        position=position,
        result=result,
        id=first.file_id,
        label=first.label,
        path=first.path,
        faces=[search_pb2.GalleryFace(id=row.id, box=wire_box(row.box)) for row in rows if row.box],
    )


def _failed(position: int, error: str) -> search_pb2.AddResult:
    return search_pb2.AddResult(position=position, result=Change.FAILED, error=error)


def _of_content(backend: SearchBackend, image_id: str) -> list[Item]:
    """The rows of the photo of exactly this content id: the photo, or each of its faces
    (find also matches external ids)."""
    return [item for item in backend.find(image_id) if item.file_id == image_id]


def _photos_kept(backend: SearchBackend, removing: list[Item]) -> set[str]:
    """Content ids of the photos that keep a face after ``removing``: their files stay."""
    leaving = {item.id for item in removing}
    faces = {item.file_id for item in removing if item.id != item.file_id}
    return {
        photo
        for photo in faces
        if any(item.id not in leaving for item in _of_content(backend, photo))
    }


def page_token(last: Item) -> str:
    """The token of the page after ``last``: where it stood, not how many came before,
    so a change between two pages neither skips nor repeats an image."""
    return base64.urlsafe_b64encode(json.dumps([last.path, last.id]).encode()).decode()


def read_page_token(token: str) -> tuple | None:
    """The key listing resumes after; Refused unless the token came from ListImages."""
    if not token:
        return None
    bad = Refused(
        grpc.StatusCode.INVALID_ARGUMENT,
        "page_token must be a next_page_token this RPC returned (or empty for the first page)",
    )
    if len(token) > MAX_PAGE_TOKEN_BYTES:
        raise bad
    try:
        path, image_id = json.loads(base64.urlsafe_b64decode(token.encode("ascii")))
    except (ValueError, TypeError, RecursionError, binascii.Error):
        raise bad from None
    if not isinstance(path, str) or not isinstance(image_id, str):
        raise bad
    return listing_key(Item(image_id, "", path))

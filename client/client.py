"""A thin, typed Python client of the lookalike SearchService."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Union

import grpc

from lookalike.v1 import search_pb2, search_pb2_grpc

if TYPE_CHECKING:
    from PIL.Image import Image

ImageInput = Union[str, PathLike, bytes, "Image"]

DEFAULT_TIMEOUT = 30.0


class LookalikeError(Exception):
    """A failed call, with the gRPC status code and the server's message kept."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Match:
    rank: int
    id: str
    label: str
    path: str
    distance: float
    thumbnail: bytes | None = None  # JPEG, when asked for and readable
    note: str = ""  # why a thumbnail asked for is missing


@dataclass(frozen=True)
class CropBox:
    """The part of the query photo the model saw, in the photo's pixels."""

    left: int
    top: int
    right: int
    bottom: int
    image_width: int
    image_height: int


@dataclass(frozen=True)
class Timings:
    decode_ms: float
    embed_ms: float
    search_ms: float
    total_ms: float


@dataclass(frozen=True)
class SearchResult:
    matches: list[Match]
    model_fingerprint: str
    index_version: str
    timings: Timings
    query_crop: CropBox | None = None
    crop_note: str = ""


@dataclass(frozen=True)
class ServerInfo:
    model_name: str
    model_fingerprint: str
    embedding_size: int
    input_size: int
    execution_provider: str
    providers: list[str]
    gallery_size: int
    index_version: str
    max_k: int
    knn_backend: str
    weights: str
    thumbnail_size: int
    startup_seconds: float
    warmup_seconds: float


@dataclass(frozen=True)
class NewImage:
    """An image to add: a path, bytes or a PIL image; its person; optionally your own id."""

    image: ImageInput
    label: str
    external_id: str = ""


@dataclass(frozen=True)
class AddResult:
    position: int
    result: str  # "added", "already_present" or "failed"
    id: str
    label: str
    path: str
    error: str = ""


@dataclass(frozen=True)
class RemovedImage:
    id: str
    label: str
    path: str
    file_deleted: bool


@dataclass(frozen=True)
class RemoveResult:
    selector: str  # "id", "label" or "image"
    position: int
    result: str  # "removed" or "not_found"
    removed: list[RemovedImage]


@dataclass(frozen=True)
class GalleryEntry:
    id: str
    label: str
    path: str
    also: list[str]
    pending: bool  # added since the last compaction


def retry_policy(retries: int) -> str:
    """gRPC's own retries: only UNAVAILABLE (nothing was done), with exponential backoff."""
    return json.dumps(
        {
            "methodConfig": [
                {
                    "name": [{"service": "lookalike.v1.SearchService"}],
                    "retryPolicy": {
                        "maxAttempts": retries + 1,
                        "initialBackoff": "0.2s",
                        "maxBackoff": "2s",
                        "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"],
                    },
                }
            ]
        }
    )


def image_bytes(image: ImageInput) -> bytes:
    """The encoded bytes of a path, raw bytes, or a PIL image (sent as PNG, lossless)."""
    if isinstance(image, bytes):
        return image
    if isinstance(image, (str, PathLike)):
        return Path(image).read_bytes()
    if hasattr(image, "save"):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()
    raise TypeError(f"expected a path, bytes or a PIL image, not {type(image).__name__}")


def _result_name(value: int) -> str:
    return search_pb2.ChangeResult.Name(value).lower()


class SearchClient:
    """Talks to one lookalike server; use as a context manager to close the channel.

    >>> with SearchClient("localhost:50051") as client:
    ...     for match in client.search("query.jpg", k=5).matches:
    ...         print(match.rank, match.label, match.distance)
    """

    def __init__(
        self,
        target: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        token: str | None = None,
        tls: bool = False,
        ca: bytes | str | PathLike | None = None,
        retries: int = 3,
    ) -> None:
        """``timeout`` bounds each call, retries included; ``ca`` (PEM) implies TLS."""
        self.target = target
        self.timeout = timeout
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        options = [("grpc.service_config", retry_policy(retries))] if retries > 0 else []
        if tls or ca is not None:
            roots = ca if isinstance(ca, bytes) or ca is None else Path(ca).read_bytes()
            credentials = grpc.ssl_channel_credentials(root_certificates=roots)
            self._channel = grpc.secure_channel(target, credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(target, options=options)
        self._stub = search_pb2_grpc.SearchServiceStub(self._channel)

    def __enter__(self) -> SearchClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def search(self, image: ImageInput, k: int = 20, thumbnails: bool = False) -> SearchResult:
        """The k nearest gallery images; ``thumbnails`` also fetches a small JPEG of each."""
        request = search_pb2.SearchRequest(image=image_bytes(image), k=k, thumbnails=thumbnails)
        response = self._call(self._stub.Search, request)
        crop = response.query_crop
        return SearchResult(
            matches=[
                Match(m.rank, m.id, m.label, m.path, m.distance, m.thumbnail_jpeg or None, m.note)
                for m in response.matches
            ],
            model_fingerprint=response.model_fingerprint,
            index_version=response.index_version,
            timings=Timings(
                response.timings.decode_ms,
                response.timings.embed_ms,
                response.timings.search_ms,
                response.timings.total_ms,
            ),
            query_crop=CropBox(
                crop.left, crop.top, crop.right, crop.bottom, crop.image_width, crop.image_height
            )
            if response.HasField("query_crop")
            else None,
            crop_note=response.crop_note,
        )

    def reload_index(self, index_path: str = "") -> tuple[str, int]:
        """Ask the server to switch to a rebuilt index; returns (version, gallery size)."""
        request = search_pb2.ReloadIndexRequest(index_path=index_path)
        response = self._call(self._stub.ReloadIndex, request)
        return response.index_version, response.gallery_size

    def add_images(self, images: list[NewImage]) -> list[AddResult]:
        """Enrol images (admin); one result per image, in order. Safe to send again."""
        request = search_pb2.AddImagesRequest(
            images=[
                search_pb2.NewImage(
                    image=image_bytes(new.image), label=new.label, external_id=new.external_id
                )
                for new in images
            ]
        )
        response = self._call(self._stub.AddImages, request)
        return [
            AddResult(r.position, _result_name(r.result), r.id, r.label, r.path, r.error)
            for r in response.results
        ]

    def remove_images(
        self,
        ids: Sequence[str] = (),
        labels: Sequence[str] = (),
        images: Sequence[ImageInput] = (),
        delete_files: bool = False,
    ) -> list[RemoveResult]:
        """Remove images by content or external id, by label, or by a photo's exact bytes
        (admin); ``delete_files`` also deletes their files from the gallery folder."""
        request = search_pb2.RemoveImagesRequest(
            ids=list(ids),
            labels=list(labels),
            images=[image_bytes(image) for image in images],
            delete_files=delete_files,
        )
        response = self._call(self._stub.RemoveImages, request)
        return [
            RemoveResult(
                r.selector,
                r.position,
                _result_name(r.result),
                [RemovedImage(g.id, g.label, g.path, g.file_deleted) for g in r.removed],
            )
            for r in response.results
        ]

    def list_images(self, label: str = "") -> list[GalleryEntry]:
        """Every image of the gallery, or of one label (admin), page by page."""
        found, token = [], ""
        while True:
            request = search_pb2.ListImagesRequest(label=label, page_token=token)
            response = self._call(self._stub.ListImages, request)
            found += [
                GalleryEntry(e.id, e.label, e.path, list(e.also), e.pending)
                for e in response.images
            ]
            token = response.next_page_token
            if not token:
                return found

    def compact(self) -> tuple[str, int, int]:
        """Fold added and removed images into a new index version (admin):
        (version, gallery size, rows folded)."""
        response = self._call(self._stub.CompactIndex, search_pb2.CompactIndexRequest())
        return response.index_version, response.gallery_size, response.folded_rows

    def info(self) -> ServerInfo:
        r = self._call(self._stub.GetInfo, search_pb2.GetInfoRequest())
        return ServerInfo(
            model_name=r.model_name,
            model_fingerprint=r.model_fingerprint,
            embedding_size=r.embedding_size,
            input_size=r.input_size,
            execution_provider=r.execution_provider,
            providers=list(r.providers),
            gallery_size=r.gallery_size,
            index_version=r.index_version,
            max_k=r.max_k,
            knn_backend=r.knn_backend,
            weights=r.weights,
            thumbnail_size=r.thumbnail_size,
            startup_seconds=r.startup_seconds,
            warmup_seconds=r.warmup_seconds,
        )

    def _call(self, method, request):  # noqa: ANN001, ANN202 (any unary stub method)
        try:
            return method(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as error:
            raise LookalikeError(error.code(), error.details() or "") from None

"""What the clients take and return: the images and results of each call, and its error.

Public: ``lookalike.client`` re-exports every name here.
"""

from __future__ import annotations

from dataclasses import dataclass
from os import PathLike
from typing import TYPE_CHECKING, Union

import grpc

if TYPE_CHECKING:
    from PIL.Image import Image

ImageInput = Union[str, PathLike, bytes, "Image"]


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
    # The distance past which matches were dropped (asked for, or the server's
    # default); None when there was none.
    max_distance: float | None = None


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
    max_distance: float | None = None  # the server's default for Search, None: no limit
    intra_op_threads: int = 0  # onnxruntime's intra-op pool
    server_version: str = ""  # the lookalike version the server runs


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
    result: str  # "removed", "not_found", or "failed" (not reached before the deadline)
    removed: list[RemovedImage]
    error: str = ""


@dataclass(frozen=True)
class GalleryEntry:
    id: str
    label: str
    path: str
    also: list[str]
    pending: bool  # added since the last compaction

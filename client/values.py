"""What the clients take and return: the images and results of each call, and its error.

Public: ``lookalike.client`` re-exports every name here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from os import PathLike
from typing import TYPE_CHECKING, Literal, Union

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
class Box:
    """A rectangle of a photo, in its pixels: left and top inclusive, right and bottom not."""

    left: int
    top: int
    right: int
    bottom: int


# Which faces of the query photo to search: "largest" (the default), "all", the face
# at a Box, or the face at a point (x, y).
Faces = Literal["largest", "all"] | Box | tuple[int, int]


@dataclass(frozen=True)
class Match:
    rank: int
    id: str  # the photo's content id; a face's "<content id>#<n>" in a gallery indexed by face
    label: str
    path: str
    distance: float
    thumbnail: bytes | None = None  # JPEG, when asked for and readable
    note: str = ""  # why a thumbnail asked for is missing
    face_box: Box | None = None  # the face matched in its photo (gallery indexed by face)


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
class FaceResult:
    """One face of the query photo and its own matches."""

    number: int  # among the faces found in the photo, 0 the largest
    box: Box  # the face as the detector found it
    score: float  # the detector's confidence; 0 for a fallback region
    matches: list[Match]
    query_crop: CropBox | None = None  # what the model saw of the photo for this face
    crop_note: str = ""  # set when no face was found and a fallback region was searched


@dataclass(frozen=True)
class SearchResult:
    """The answer to a search: ``matches``, ``query_crop`` and ``crop_note`` are the first
    face's; ``faces`` has one result per face searched (one, unless several were asked)."""

    matches: list[Match]
    model_fingerprint: str
    index_version: str
    timings: Timings
    query_crop: CropBox | None = None
    crop_note: str = ""
    # The distance past which matches were dropped (asked for, or the server's
    # default); None when there was none.
    max_distance: float | None = None
    faces: list[FaceResult] = field(default_factory=list)


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
    gallery_faces: str = "largest"  # "all": a row per face, matches carry face_box
    model_instances: int = 1  # embedder runs at once, each intra_op_threads wide
    default_search_breadth: int = 0  # an approximate index's breadth; 0: exact or Milvus
    max_search_breadth: int = 0  # the most a Search may ask for (search_breadth)


@dataclass(frozen=True)
class NewImage:
    """An image to add: a path, bytes or a PIL image; its person; optionally your own id."""

    image: ImageInput
    label: str
    external_id: str = ""


@dataclass(frozen=True)
class GalleryFace:
    """A face row of a gallery indexed by face: its id ("<content id>#<n>") and box."""

    id: str
    box: Box


@dataclass(frozen=True)
class AddResult:
    position: int
    result: str  # "added", "already_present" or "failed"
    id: str
    label: str
    path: str
    error: str = ""
    faces: list[GalleryFace] = field(default_factory=list)  # a gallery indexed by face


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
    face_box: Box | None = None  # the row's face in its photo (gallery indexed by face)

"""The lookalike client library: search a lookalike server from Python."""

from lookalike.client.aio import AsyncSearchClient
from lookalike.client.client import SearchClient
from lookalike.client.values import (
    AddResult,
    Box,
    CropBox,
    FaceResult,
    GalleryEntry,
    GalleryFace,
    LookalikeError,
    Match,
    NewImage,
    RemovedImage,
    RemoveResult,
    SearchResult,
    ServerInfo,
    Timings,
)

__all__ = [
    "AddResult",
    "AsyncSearchClient",
    "Box",
    "CropBox",
    "FaceResult",
    "GalleryFace",
    "GalleryEntry",
    "LookalikeError",
    "Match",
    "NewImage",
    "RemoveResult",
    "RemovedImage",
    "SearchClient",
    "SearchResult",
    "ServerInfo",
    "Timings",
]

"""The lookalike client library: search a lookalike server from Python."""

from lookalike.client.client import (
    AddResult,
    CropBox,
    GalleryEntry,
    LookalikeError,
    Match,
    NewImage,
    RemovedImage,
    RemoveResult,
    SearchClient,
    SearchResult,
    ServerInfo,
    Timings,
)

__all__ = [
    "AddResult",
    "CropBox",
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

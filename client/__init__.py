"""The lookalike client library: search a lookalike server from Python."""

from lookalike.client.client import (
    CropBox,
    LookalikeError,
    Match,
    SearchClient,
    SearchResult,
    ServerInfo,
    Timings,
)

__all__ = [
    "CropBox",
    "LookalikeError",
    "Match",
    "SearchClient",
    "SearchResult",
    "ServerInfo",
    "Timings",
]

"""The lookalike client library: search a lookalike server from Python."""

from lookalike.client.aio import AsyncSearchClient
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
    "AsyncSearchClient",
    "CropBox",
    "LookalikeError",
    "Match",
    "SearchClient",
    "SearchResult",
    "ServerInfo",
    "Timings",
]

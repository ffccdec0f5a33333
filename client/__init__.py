"""The lookalike client library: search a lookalike server from Python."""

from lookalike.client.client import (
    LookalikeError,
    Match,
    SearchClient,
    SearchResult,
    ServerInfo,
    Timings,
)

__all__ = ["LookalikeError", "Match", "SearchClient", "SearchResult", "ServerInfo", "Timings"]

"""Which gallery a reload may open: never simply the path a client sends.

A reload replaces what every caller sees and which files thumbnails read, so by
default it re-opens only the location the server was started with. With
``--index-root``, a client may name an index folder under that root: the name
is resolved (symlinks and ``..`` included) and must stay inside it. On Milvus a
reload may name another collection of the same Milvus (the way a fleet switches
galleries); it is checked like the served one (made by lookalike, same model).
"""

from __future__ import annotations

import re
from pathlib import Path

from lookalike.common.versions import served_name

# Milvus' own rule for collection names.
MAX_NAME_CHARS = 1024
COLLECTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")


class ReloadRefused(Exception):
    """The named location is not one this server may open; the message says why
    without naming any server path."""


class ReloadBusy(Exception):
    """Another reload is under way; reloads are refused, not queued."""


def allowed_location(
    requested: str, served: str, index_root: Path | None, names_folders: bool = True
) -> str | None:
    """The location to re-open for ``requested`` ("" or the served one: None, the served
    location), or ReloadRefused. ``names_folders`` is False for a Milvus collection."""
    if not requested or requested == served:
        return None
    if "\0" in requested or not requested.isprintable() or len(requested) > MAX_NAME_CHARS:
        raise ReloadRefused(
            f"index_path must be a printable name of at most {MAX_NAME_CHARS} characters"
        )
    if not names_folders:
        if not COLLECTION_NAME.fullmatch(requested):
            raise ReloadRefused("index_path must be a Milvus collection name on this server")
        return requested
    if index_root is None:
        if Path(requested).resolve() == Path(served).resolve():
            return None
        raise ReloadRefused(
            "this server reloads only the index it was started with; leave index_path "
            "empty, or start it with --index-root to allow naming an index under that root"
        )
    name = Path(requested)
    if name.is_absolute() or ".." in name.parts:
        raise ReloadRefused("index_path must be a name relative to the server's index root")
    if any(part.startswith(".") for part in name.parts):
        raise ReloadRefused("index_path must name an index, not a hidden folder (a version)")
    root = index_root.resolve()
    candidate = (root / name).resolve()
    if candidate == root or not candidate.is_relative_to(root):
        raise ReloadRefused("index_path leads outside the server's index root")
    # The name that serves it, so its changes are the ones kept under that name.
    return str(served_name(candidate))

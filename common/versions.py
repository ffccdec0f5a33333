"""Serving one of several versions under a fixed name, switched in one atomic rename.

The fixed name is a symbolic link into a folder of versions beside it::

    index -> .index.versions/20261202T013000Z-1a2b3c4d
    .index.versions/20261202T013000Z-1a2b3c4d/   the version served now

A version is written and synced in full, moved into the versions folder, and
only then served, by renaming a fresh link over the old one: at every moment
the name points at one complete version. Then the versions no longer served
are removed (an index's erased rows must not linger in an old one). A reader
resolves the link once and reads everything from the folder it names; one
that maps a file keeps it readable after its removal (POSIX), and one that
finds its version removed mid-read resolves the link again. A process killed
at any step (``crash_point``: ``<kind>-staged``, ``-placed``, ``-linked``,
``-switched``, ``-cleaned``) leaves the old or the new version served;
``recover`` removes what such a kill left behind.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from pathlib import Path

from lookalike.common.files import crash_point, fsync_path, fsync_tree

log = logging.getLogger(__name__)

STEPS = ("staged", "placed", "linked", "switched", "cleaned")


def versions_of(out: Path) -> Path:
    return out.parent / f".{out.name}.versions"


def served_name(path: Path) -> Path:
    """The fixed name that serves the version ``path`` leads to, or ``path`` resolved.

    However a gallery is named (its link, a link to the link, the version folder
    itself), this is the one name its changes, its writer's lock and its next
    version are kept beside: naming it another way must not start a second history.
    """
    folder = path.resolve()
    versions = folder.parent
    if versions.name.startswith(".") and versions.name.endswith(".versions"):
        link = versions.parent / versions.name[1 : -len(".versions")]
        if link.is_symlink() and link.resolve().parent == versions:
            return link
    return folder


def served_version(out: Path) -> str | None:
    """The name of the version ``out`` links to; None when it is no link into its versions."""
    if not out.is_symlink():
        return None
    target = Path(os.readlink(out))
    return (
        target.parts[1]
        if len(target.parts) > 1 and target.parts[0] == versions_of(out).name
        else None
    )


def publish_version(
    staging: Path, out: Path, version: str, kind: str, member: str | None = None
) -> Path:
    """Serve the finished folder ``staging`` at ``out`` (or its file ``member``); returns
    the version folder. The versions served before are removed."""
    check_publishable(out)
    fsync_tree(staging)
    crash_point(f"{kind}-staged")
    versions = versions_of(out)
    versions.mkdir(mode=0o755, exist_ok=True)
    fsync_path(out.parent)
    folder = _free_name(versions / version)
    os.replace(staging, folder)
    fsync_path(versions)
    fsync_path(out.parent)
    crash_point(f"{kind}-placed")
    point(out, folder / member if member else folder, kind)
    crash_point(f"{kind}-switched")
    _clean(out, keep=folder.name)
    crash_point(f"{kind}-cleaned")
    log.info("serving %s at %s", folder.name, out)
    return folder


def check_publishable(out: Path) -> None:
    """IsADirectoryError when ``out`` is a plain folder (a copy of a served folder: ``cp -r``
    follows the link), which no one rename can swap for a link; a link, a file or nothing
    is fine. Builds ask before their work, publishes again before anything moves."""
    if out.is_dir() and not out.is_symlink():
        raise IsADirectoryError(
            f"{out} is a plain folder, not a link into {versions_of(out).name}/: "
            "move it aside (or write to another path), then try again"
        )


def point(out: Path, target: Path, kind: str) -> None:
    """Make ``out`` (a link, a file or nothing) a link to ``target`` in one rename."""
    link = out.parent / f".{out.name}.link-{uuid.uuid4().hex[:8]}"
    os.symlink(os.path.relpath(target, out.parent), link)
    crash_point(f"{kind}-linked")
    os.replace(link, out)
    fsync_path(out.parent)


def recover(out: Path) -> None:
    """Remove what a killed publish left: stray links, and versions not served (the old
    one, or one placed but never switched to)."""
    if out.parent.is_dir():
        _clean(out, keep=served_version(out))


def _free_name(target: Path) -> Path:
    """``target``, or ``target.2``... when a version of that name exists already."""
    candidate, n = target, 1
    while candidate.exists():
        n += 1
        candidate = target.with_name(f"{target.name}.{n}")
    return candidate


def _versions(out: Path) -> list[Path]:
    versions = versions_of(out)
    return [v for v in versions.iterdir() if v.is_dir()] if versions.is_dir() else []


def _clean(out: Path, keep: str | None) -> None:
    """Remove every version but ``keep``, and stray links (or folders under their names)."""
    for version in _versions(out):
        if version.name != keep:
            shutil.rmtree(version, ignore_errors=True)
    for stray in out.parent.glob(f".{out.name}.link-*"):
        if stray.is_symlink() or stray.is_file():
            stray.unlink(missing_ok=True)
        else:
            shutil.rmtree(stray, ignore_errors=True)
    fsync_path(out.parent)
    if versions_of(out).is_dir():
        fsync_path(versions_of(out))

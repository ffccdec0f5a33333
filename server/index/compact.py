"""Compaction: an index and its changes folded into a new version of the index.

The rows are laid out exactly as a fresh build of the same gallery files lays
them out (files in gallery order, identical files on the first one's row), so
a compacted index and a rebuilt one answer alike, row for row; no image is
embedded again. The new version is published like a build's, in one step, with
the base's storage and index type (an approximate structure is built afresh).
"""

from __future__ import annotations

import shutil

import numpy as np

from lookalike.server.index.build import publish_staged
from lookalike.server.index.item import FACE_MARK, Item, gallery_order
from lookalike.server.index.journal import Journal, record_of
from lookalike.server.index.publish import compaction_staging
from lookalike.server.index.segment import Changes
from lookalike.server.index.store import FEATURES, GalleryIndex, Manifest

COPY_BLOCK = 262_144  # rows of the compacted matrix written at once


def folded_rows(base: GalleryIndex, changes: Changes) -> tuple[list[Item], list[tuple[bool, int]]]:
    """The items of the compacted index, and where each one's vector is:
    (True, base row) or (False, segment row)."""
    sources: dict[str, tuple[bool, int]] = {}
    files: list[dict] = []
    for row, item in enumerate(base.manifest.items):
        if item.id not in changes.removed:
            sources[item.id] = (True, row)
            files += [{**record_of(item, p), "label": p.split("/")[0]} for p in _paths(item)]
    for item, row in changes.added.values():
        sources[item.id] = (False, row)
        files.append(record_of(item, item.path))
    journal = Journal()
    for record in sorted(files, key=_file_then_face):
        journal.add(record)
    return journal.rows, [sources[item.id] for item in journal.rows]


def _file_then_face(record: dict) -> tuple:
    """Gallery order, and within a photo its faces by number (largest first)."""
    _, mark, number = record["id"].partition(FACE_MARK)
    return gallery_order(record["path"]), int(number) if mark else 0


def _paths(item: Item) -> tuple[str, ...]:
    return (item.path, *item.also)


def compact(base: GalleryIndex, changes: Changes, segment: np.ndarray) -> Manifest:
    """Write base + changes as a new version at the base's path; returns its manifest."""
    items, sources = folded_rows(base, changes)
    out = base.path
    staging = compaction_staging(out)
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(mode=0o755)
    matrix = np.lib.format.open_memmap(
        staging / FEATURES,
        mode="w+",
        dtype=np.float32,
        shape=(len(items), base.manifest.embedding_size),
    )
    from_base = np.array([in_base for in_base, _ in sources], dtype=bool)
    rows = np.array([row for _, row in sources], dtype=np.int64)
    for start in range(0, len(items), COPY_BLOCK):  # a block at a time: ten million rows
        part = slice(start, start + COPY_BLOCK)  # would be gigabytes gathered at once
        block, kept, at = matrix[part], from_base[part], rows[part]
        block[kept] = base.features[at[kept]]
        block[~kept] = segment[at[~kept]]
    matrix.flush()
    del matrix
    held = base.manifest.items
    removed = [held[row] for i in changes.removed if (row := held.row_of(i)) is not None]
    gone = {path for item in removed for path in _paths(item)}
    skipped = [entry for entry in base.manifest.skipped if entry["path"] not in gone]
    layout = base.manifest.layout.afresh()  # the structure is built again from the new rows
    return publish_staged(staging, out, base.manifest.info, items, skipped, layout)

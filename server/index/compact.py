"""Compaction: an index and its changes folded into a new version of the index.

The rows are laid out exactly as a fresh build of the same gallery files lays
them out (files in gallery order, identical files on the first one's row), so
a compacted index and a rebuilt one answer alike, row for row; no image is
embedded again. A gallery whose items are in columns is folded by splicing them
(server/index/splice.py); any other through the build journal. The new version is
published like a build's, in one step, with the base's storage and index type (an
approximate structure is built afresh).
"""

from __future__ import annotations

import shutil

import numpy as np

from lookalike.server.index import splice
from lookalike.server.index.build import publish_staged
from lookalike.server.index.item import FACE_MARK, Item, gallery_order
from lookalike.server.index.items import ITEMS_FOLDER, ItemColumns
from lookalike.server.index.journal import Journal, record_of
from lookalike.server.index.publish import compaction_staging
from lookalike.server.index.segment import Changes
from lookalike.server.index.store import FEATURES, GalleryIndex, Manifest, in_columns

COPY_BLOCK = 262_144  # rows of the compacted matrix written at once


Sources = splice.Sources  # where each row's vector is: (in the base, row), one per row


def folded_rows(base: GalleryIndex, changes: Changes) -> tuple[list[Item], Sources]:
    """The items of the compacted index, and where each one's vector is, through the build
    journal: every file's record, ordered and joined anew (for a gallery whose items are
    listed, or one that cannot be spliced; see ``_spliced``)."""
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
    found = [sources[item.id] for item in journal.rows]
    in_base = np.array([from_base for from_base, _ in found], dtype=bool)
    rows = np.array([row for _, row in found], dtype=np.int64)
    return journal.rows, (in_base, rows)


def _removed_rows(base: GalleryIndex, changes: Changes) -> list[int]:
    held = base.manifest.items
    return [row for i in changes.removed if (row := held.row_of(i)) is not None]


def _spliced(base: GalleryIndex, changes: Changes) -> splice.Splice | None:
    """The fold as a splice of the base's item columns (server/index/splice.py), where
    the base keeps its items in columns and the compacted gallery will too."""
    held = base.manifest.items
    removed = _removed_rows(base, changes)
    if not isinstance(held, ItemColumns) or not in_columns(
        len(held) - len(removed) + len(changes.added)
    ):
        return None
    if any(held.row_of(i) is not None and i not in changes.removed for i in changes.added):
        return None  # an identical file of a kept row: only the journal joins it to that row
    return splice.plan(held, removed, list(changes.added.values()))


def _file_then_face(record: dict) -> tuple:
    """Gallery order, and within a photo its faces by number (largest first)."""
    _, mark, number = record["id"].partition(FACE_MARK)
    return gallery_order(record["path"]), int(number) if mark else 0


def _paths(item: Item) -> tuple[str, ...]:
    return (item.path, *item.also)


def compact(base: GalleryIndex, changes: Changes, segment: np.ndarray) -> Manifest:
    """Write base + changes as a new version at the base's path; returns its manifest."""
    spliced = _spliced(base, changes)
    if spliced is not None:
        count, (from_base, rows) = spliced.rows, spliced.sources()
    else:
        items, (from_base, rows) = folded_rows(base, changes)
        count = len(items)
    out = base.path
    staging = compaction_staging(out)
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(mode=0o755)
    matrix = np.lib.format.open_memmap(  # in the stored dtype: no second pass to convert
        staging / FEATURES,
        mode="w+",
        dtype=base.manifest.layout.dtype,
        shape=(count, base.manifest.embedding_size),
    )
    for start in range(0, count, COPY_BLOCK):  # a block at a time: ten million rows
        part = slice(start, start + COPY_BLOCK)  # would be gigabytes gathered at once
        block, kept, at = matrix[part], from_base[part], rows[part]
        block[kept] = base.features[at[kept]]
        block[~kept] = segment[at[~kept]]
    matrix.flush()
    del matrix
    held = base.manifest.items
    gone = {path for row in _removed_rows(base, changes) for path in _paths(held[row])}
    skipped = [entry for entry in base.manifest.skipped if entry["path"] not in gone]
    layout = base.manifest.layout.afresh()  # the structure is built again from the new rows
    sums = None
    if spliced is not None:
        sums = spliced.write(staging / ITEMS_FOLDER)
        items = ItemColumns(staging / ITEMS_FOLDER)
    return publish_staged(staging, out, base.manifest.info, items, skipped, layout, sums)

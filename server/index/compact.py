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
    """The items of the compacted index, and where each one's vector is.

    The base's rows are in the fold's order already, so the few rows added are merged
    into them, a row at a time, without a record of every file; a base out of that
    order, or an added row of the same content as a kept base row, takes the fold
    through the build journal, which orders and joins every file anew."""
    merged = _merged_rows(base, changes)
    return merged if merged is not None else _journal_rows(base, changes)


def _merged_rows(base: GalleryIndex, changes: Changes) -> tuple[list[Item], Sources] | None:
    """The fold as a merge of the kept base rows with the added rows (None: it is not
    one; see ``folded_rows``)."""
    held = base.manifest.items
    added = _added_in_order(base, changes)
    if added is None:
        return None
    removed = set(_removed_rows(base, changes))
    items: list[Item] = []
    in_base = np.zeros(len(held) - len(removed) + len(added), dtype=bool)
    rows = np.zeros(len(in_base), dtype=np.int64)
    next_added, last = 0, None
    for row, item in enumerate(held):
        if row in removed:
            continue
        key = _row_key(item)
        if not _as_journal_makes_it(item) or (last is not None and key < last):
            return None
        last = key
        while next_added < len(added) and _row_key(added[next_added][0]) < key:
            items.append(added[next_added][0])
            rows[len(items) - 1] = added[next_added][1]
            next_added += 1
        in_base[len(items)] = True
        rows[len(items)] = row
        items.append(item)
    for item, segment_row in added[next_added:]:
        rows[len(items)] = segment_row
        items.append(item)
    return items, (in_base, rows)


def _added_in_order(base: GalleryIndex, changes: Changes) -> list[tuple[Item, int]] | None:
    """The added items and their segment rows in fold order; None where the journal
    must join them: two of one id, or one of a kept base row's id (an identical file)."""
    held = base.manifest.items
    added = sorted(changes.added.values(), key=lambda pair: _row_key(pair[0]))
    ids = [item.id for item, _ in added]
    if len(set(ids)) < len(ids) or any(
        held.row_of(i) is not None and i not in changes.removed for i in ids
    ):
        return None
    return added


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
    added = _added_in_order(base, changes)
    return None if added is None else splice.plan(held, removed, added)


def _row_key(item: Item) -> tuple:
    """A row's place in the fold: its file's, then its face's."""
    return gallery_order(item.path), item.face


def _as_journal_makes_it(item: Item) -> bool:
    """Whether the journal would make this base row again as it is: labelled by its
    folder, at its first file, with the identical files after it in gallery order."""
    if item.label != item.path.split("/")[0]:
        return False
    if not item.also:
        return True
    orders = [gallery_order(path) for path in (item.path, *item.also)]
    return orders == sorted(orders)


def _journal_rows(base: GalleryIndex, changes: Changes) -> tuple[list[Item], Sources]:
    """The fold through the build journal: every file's record, ordered and joined."""
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

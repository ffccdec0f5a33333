"""Compaction's fold for a gallery whose items are in columns: the new columns spliced
from runs of the base's, with the few added rows put between them.

A base written by a build or a compaction has its rows in the fold's order (its order
column is the identity), so the compacted gallery is the base with some rows cut out and
a few rows put in. Copying the runs between them costs seconds and the columns' size in
memory at ten million rows, where making every row an ``Item`` cost minutes and
gigabytes. The files written are the ones ``write_columns`` writes for the same items,
byte for byte (tests/server/test_splice.py holds it to that); where the base is not such
a gallery, ``plan`` answers None and the fold makes Items.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from lookalike.server.index.item import Item, gallery_order, listing_key
from lookalike.server.index.items import ItemColumns, key_hash, names_of, save_columns

# Where each row of the compacted index finds its vector: a base row, or a segment row.
Sources = tuple[np.ndarray, np.ndarray]  # (in the base: bool, row: int64), one per row


@dataclass(frozen=True)
class Splice:
    """The compacted rows: runs of base rows, and added items before given base rows."""

    base: ItemColumns
    runs: list[tuple[int, int]]  # kept base rows [start, stop), in order
    added: list[tuple[int, Item, int]]  # (before base row, item, segment row), in order
    removed: np.ndarray  # base rows cut out, sorted

    @property
    def rows(self) -> int:
        return sum(stop - start for start, stop in self.runs) + len(self.added)

    def pieces(self) -> list[tuple[int, int] | tuple[Item, int]]:
        """The new rows in order: a run of base rows (start, stop), or (added item, segment row)."""
        found: list = []
        added, next_added = self.added, 0
        for start, stop in self.runs:
            while start < stop:
                while next_added < len(added) and added[next_added][0] <= start:
                    found.append(added[next_added][1:])
                    next_added += 1
                end = min(stop, added[next_added][0]) if next_added < len(added) else stop
                found.append((start, end))
                start = end
        found += [(item, row) for _, item, row in added[next_added:]]
        return found

    def sources(self) -> Sources:
        in_base = np.zeros(self.rows, dtype=bool)
        rows = np.zeros(self.rows, dtype=np.int64)
        at = 0
        for piece in self.pieces():
            if isinstance(piece[0], Item):
                rows[at] = piece[1]
                at += 1
            else:
                start, stop = piece
                in_base[at : at + stop - start] = True
                rows[at : at + stop - start] = np.arange(start, stop)
                at += stop - start
        return in_base, rows

    def write(self, folder: Path) -> dict[str, str]:
        """Write the compacted rows' columns into ``folder`` (made here); their sha256s."""
        folder.mkdir()
        base, pieces = self.base, self.pieces()
        names = base.label_names
        numbers = {label: number for number, label in enumerate(names)}
        for _, item, _ in self.added:
            if item.label not in numbers:
                numbers[item.label] = len(names)
                names.append(item.label)
        columns = {
            "ids": _ids(base.column("ids"), pieces),
            "labels": _labels(base.column("labels"), pieces, numbers),
            "boxes": _stacked(
                base.column("boxes"),
                pieces,
                lambda item: np.array([item.box or (0, 0, 0, 0)], np.int32),
            ),
        }
        columns["paths"], columns["path_ends"] = _paths(
            base.column("paths"), base.column("path_ends"), pieces
        )
        columns["key_hashes"], columns["key_rows"] = self._keys()
        columns["order"] = np.arange(self.rows, dtype=np.int64)
        # the labels numbered by first appearance, as write_columns numbers them
        used, first = np.unique(columns["labels"], return_index=True)
        in_order = used[np.argsort(first, kind="stable")]
        renumber = np.zeros(len(names), dtype=np.int32)
        renumber[in_order] = np.arange(len(in_order), dtype=np.int32)
        columns["labels"] = renumber[columns["labels"]]
        return save_columns(folder, columns, [names[n] for n in in_order], self._also())

    def new_rows(self, base_rows: np.ndarray) -> np.ndarray:
        """Where kept base rows are in the compacted index."""
        before = np.array([before for before, _, _ in self.added], dtype=np.int64)
        cut = np.searchsorted(self.removed, base_rows, side="left")
        return base_rows - cut + np.searchsorted(before, base_rows, side="right")

    @cached_property
    def _added_rows(self) -> list[int]:
        """Where each added item is in the compacted index: after the kept base rows
        before it and the items added before it."""
        before = np.array([before for before, _, _ in self.added], dtype=np.int64)
        kept_before = before - np.searchsorted(self.removed, before, side="left")
        return (kept_before + np.arange(len(before))).tolist()

    def _keys(self) -> tuple[np.ndarray, np.ndarray]:
        """The base's key table without the cut rows, renumbered, with the added rows' keys
        put in: sorted by hash, then by row, as write_columns sorts them."""
        hashes, rows = self.base.column("key_hashes"), self.base.column("key_rows")
        if len(self.removed):
            kept = ~np.isin(rows, self.removed)
            hashes, rows = hashes[kept], rows[kept]
        rows = self.new_rows(rows)
        new = [
            (key_hash(key), row, number)
            for (_, item, _), row in zip(self.added, self._added_rows, strict=True)
            for number, key in enumerate(dict.fromkeys([item.id, *names_of(item)]))
        ]
        new.sort()
        places = []
        for wanted, row, _ in new:
            first = int(np.searchsorted(hashes, np.uint64(wanted), side="left"))
            last = int(np.searchsorted(hashes, np.uint64(wanted), side="right"))
            places.append(first + int(np.searchsorted(rows[first:last], row)))
        return (
            np.insert(hashes, places, np.array([h for h, _, _ in new], dtype=np.uint64)),
            np.insert(rows, places, np.array([r for _, r, _ in new], dtype=np.int64)),
        )

    def _also(self) -> list[list]:
        base_rows = sorted(row for row in self.base.also_rows if not _in_sorted(self.removed, row))
        moved = self.new_rows(np.array(base_rows, dtype=np.int64)).tolist()
        found = [
            [new, list(self.base.also_rows[old])] for old, new in zip(base_rows, moved, strict=True)
        ]
        found += [
            [row, list(item.also)]
            for (_, item, _), row in zip(self.added, self._added_rows, strict=True)
            if item.also
        ]
        return sorted(found)


def plan(
    base: ItemColumns, removed: Sequence[int], added: Sequence[tuple[Item, int]]
) -> Splice | None:
    """The fold of ``base`` less its rows ``removed``, with ``added`` (items and their
    segment rows, in any order, none of a kept base row's id) as a splice; None where
    the base is not in the fold's order or a row is not as the build journal makes it."""
    rows = len(base)
    if not base.in_listing_order:
        return None  # which is the fold's order
    if not _labelled_by_folder(base) or not _also_after(base):
        return None
    cut = np.unique(np.asarray(removed, dtype=np.int64))
    placed: list[tuple[int, Item, int]] = []
    for item, segment_row in sorted(added, key=lambda pair: fold_key(pair[0])):
        key = fold_key(item)
        before = bisect.bisect_right(range(rows), key, key=lambda row: fold_key(base[row]))
        placed.append((before, item, segment_row))
    runs, start = [], 0
    for row in [*cut.tolist(), rows]:
        if start < row:
            runs.append((start, row))
        start = row + 1
    splice = Splice(base, runs, placed, cut)
    if not _listed_in_order(splice):
        return None
    return splice


def fold_key(item: Item) -> tuple:
    """A row's place in the fold: its file's, then its face's."""
    return gallery_order(item.path), item.face


def _labelled_by_folder(base: ItemColumns) -> bool:
    """Every row labelled by its path's first folder, as the journal labels them. The rows
    are in gallery order, so a label's rows are one run, and a run whose first and last
    paths are in its folder has every path in it."""
    labels = base.column("labels")
    if not len(labels):
        return True
    starts = [0, *(np.flatnonzero(labels[1:] != labels[:-1]) + 1).tolist()]
    stops = [*starts[1:], len(labels)]
    names = base.label_names
    for start, stop in zip(starts, stops, strict=True):
        label = names[int(labels[start])]
        if "/" in label:
            return False
        for row in (start, stop - 1):
            if not _path(base, row).startswith(f"{label}/"):
                return False
    return True


def _also_after(base: ItemColumns) -> bool:
    """A row's identical files after its own, in gallery order, as the journal joins them."""
    for row, also in base.also_rows.items():
        orders = [gallery_order(path) for path in (_path(base, row), *also)]
        if orders != sorted(orders):
            return False
    return True


def _listed_in_order(splice: Splice) -> bool:
    """Whether the added rows sit in listing order among their neighbours, so that the
    compacted rows' order column is the identity too."""
    base, last = splice.base, None
    for piece in splice.pieces():
        if isinstance(piece[0], Item):
            key = listing_key(piece[0])
            if last is not None and key < last:
                return False
            last = key
        else:
            start, stop = piece
            if last is not None and listing_key(base[start]) < last:
                return False
            last = listing_key(base[stop - 1])
    return True


def _path(base: ItemColumns, row: int) -> str:
    ends = base.column("path_ends")
    start = int(ends[row - 1]) if row else 0
    return base.column("paths")[start : int(ends[row])].tobytes().decode()


def _in_sorted(values: np.ndarray, value: int) -> bool:
    at = int(np.searchsorted(values, value))
    return at < len(values) and int(values[at]) == value


def _ids(ids: np.ndarray, pieces: list) -> np.ndarray:
    """The ids column, as narrow as its longest id (as write_columns makes it)."""
    width = 1
    for piece in pieces:
        if isinstance(piece[0], Item):
            width = max(width, len(piece[0].id.encode()))
        else:
            width = max(width, int(np.strings.str_len(ids[piece[0] : piece[1]]).max()))
    return _stacked(  # a wider base column narrows as it is copied: no kept id is cut
        ids,
        pieces,
        lambda item: np.array([item.id.encode()], dtype=f"S{width}"),
        dtype=f"S{width}",
    )


def _labels(labels: np.ndarray, pieces: list, numbers: dict[str, int]) -> np.ndarray:
    return _stacked(labels, pieces, lambda item: np.array([numbers[item.label]], np.int32))


def _stacked(column: np.ndarray, pieces: list, of_item, dtype=None) -> np.ndarray:
    """A column of the compacted rows: runs of the base column and the added items' values."""
    parts = [
        of_item(piece[0]) if isinstance(piece[0], Item) else column[slice(*piece)]
        for piece in pieces
    ]
    total = sum(len(part) for part in parts)
    out = np.empty((total, *column.shape[1:]), dtype=dtype or column.dtype)
    at = 0
    for part in parts:
        out[at : at + len(part)] = part
        at += len(part)
    return out


def _paths(blob: np.ndarray, ends: np.ndarray, pieces: list) -> tuple[np.ndarray, np.ndarray]:
    """The paths' bytes and where each row's path ends, spliced."""
    blobs, all_ends, size = [], [], 0
    for piece in pieces:
        if isinstance(piece[0], Item):
            encoded = piece[0].path.encode()
            blobs.append(np.frombuffer(encoded, dtype=np.uint8))
            size += len(encoded)
            all_ends.append(np.array([size], dtype=np.int64))
        else:
            start, stop = piece
            first = int(ends[start - 1]) if start else 0
            blobs.append(blob[first : int(ends[stop - 1])])
            all_ends.append(ends[start:stop] - first + size)
            size += int(ends[stop - 1]) - first
    return np.concatenate(blobs) if blobs else blob[:0].copy(), (
        np.concatenate(all_ends) if all_ends else ends[:0].copy()
    )

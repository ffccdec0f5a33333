"""What each row of an index is: a read-only sequence of Items, looked up by id and by name.

A gallery of up to ``COLUMN_ROWS`` rows lists its items in manifest.json (``ItemList``),
readable and diffable. A larger one keeps them in columns of memory-mapped .npy files in
the index's ``items/`` folder (``ItemColumns``): ten million rows then cost the pages a
search touches, not the seven gigabytes of Python objects, and the dictionaries over
them, that a JSON list of them becomes.

Both answer the lookups a backend needs (``row_of``, ``ids_named``, ``rows_labelled``)
the same way; the columns from a table of 64-bit key hashes sorted once at build time,
each candidate checked against its row, so a hash collision costs a comparison, never
a wrong answer.
"""

from __future__ import annotations

import hashlib
import json
from abc import abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from functools import cached_property
from pathlib import Path

import numpy as np

from lookalike.server.index.item import Item, external_id, listing_key
from lookalike.server.vision.embedder import file_sha256

COLUMN_ROWS = 100_000  # past this many rows, the items are written in columns
ITEMS_FOLDER = "items"
# one file per column; the manifest records each one's checksum
COLUMNS = ("ids", "labels", "paths", "path_ends", "boxes", "key_hashes", "key_rows", "order")
LABELS_FILE = "labels.json"  # the distinct labels, in the order ``labels.npy`` numbers them
ALSO_FILE = "also.json"  # [row, [paths of identical files]] for the rows that have any
ITER_BLOCK = 65_536  # rows read at once when every row is walked


def names_of(item: Item) -> list[str]:
    """What else a row is found by: each of its files' external id (the file name without
    its suffix), and for one face of a photo, the photo's content id."""
    names = [external_id(path) for path in (item.path, *item.also)]
    if item.file_id != item.id:
        names.append(item.file_id)
    return names


class ItemTable(Sequence[Item]):
    """The items of an index's rows, in row order."""

    __hash__ = None  # type: ignore[assignment]

    def __eq__(self, other: object) -> bool:
        """Row for row, whether the items are listed or in columns (or a plain list)."""
        if not isinstance(other, ItemTable | list | tuple):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    @abstractmethod
    def row_of(self, item_id: str) -> int | None:
        """The row whose id is ``item_id``, or None."""
        ...

    @abstractmethod
    def ids_named(self, name: str) -> list[str]:
        """The ids of the rows found by ``name`` (``names_of``), in row order."""
        ...

    def rows_labelled(self, label: str) -> Iterable[int]:
        """The rows of one person, in row order."""
        return [row for row, item in enumerate(self) if item.label == label]

    @abstractmethod
    def listing_rows(self, label: str | None = None) -> Sequence[int]:
        """The rows (of one person) in listing order (``listing_key``), for paging."""
        ...

    def warm(self) -> None:
        """Work done once, when a server opens the index, rather than on a caller's first
        request."""


class ItemList(ItemTable):
    """Items read from manifest.json; the lookups are dictionaries built on first use."""

    def __init__(self, items: list[Item]) -> None:
        self._items = items

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, row):  # type: ignore[override]
        return self._items[row]

    def __iter__(self) -> Iterator[Item]:
        return iter(self._items)

    @cached_property
    def _rows(self) -> dict[str, int]:
        return {item.id: row for row, item in enumerate(self._items)}

    @cached_property
    def _named(self) -> dict[str, list[str]]:
        named: dict[str, list[str]] = {}
        for item in self._items:
            for name in dict.fromkeys(names_of(item)):
                named.setdefault(name, []).append(item.id)
        return named

    def row_of(self, item_id: str) -> int | None:
        return self._rows.get(item_id)

    def ids_named(self, name: str) -> list[str]:
        return list(self._named.get(name, ()))

    @cached_property
    def _listing(self) -> list[int]:
        return sorted(range(len(self._items)), key=lambda row: listing_key(self._items[row]))

    def listing_rows(self, label: str | None = None) -> Sequence[int]:
        if label is None:
            return self._listing
        return [row for row in self._listing if self._items[row].label == label]


def key_hash(key: str) -> int:
    """A stable 64-bit hash of an id or a name (Python's own hash changes per process)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")


class ItemColumns(ItemTable):
    """Items kept in an index's ``items/`` folder, mapped; an Item is made when a row is read."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        # plain arrays over the mappings: indexing a numpy.memmap costs several times more
        self._columns = {
            name: np.asarray(np.load(folder / f"{name}.npy", mmap_mode="r", allow_pickle=False))
            for name in COLUMNS
        }
        self._label_names: list[str] = json.loads((folder / LABELS_FILE).read_text())
        self._also = {
            int(row): tuple(paths) for row, paths in json.loads((folder / ALSO_FILE).read_text())
        }
        rows = {name: len(self._columns[name]) for name in ("ids", "labels", "path_ends", "boxes")}
        if len(set(rows.values())) != 1 or len(self._columns["key_rows"]) != len(
            self._columns["key_hashes"]
        ):
            raise ValueError(f"the item columns in {folder} disagree on their length: {rows}")

    def __len__(self) -> int:
        return len(self._columns["ids"])

    def column(self, name: str) -> np.ndarray:
        """One of ``COLUMNS``, mapped (read-only)."""
        return self._columns[name]

    @property
    def label_names(self) -> list[str]:
        """The labels, in the order the labels column numbers them."""
        return list(self._label_names)

    @property
    def also_rows(self) -> dict[int, tuple[str, ...]]:
        """The identical files of the rows that have any, by row."""
        return dict(self._also)

    def __getitem__(self, row):  # type: ignore[override]
        if isinstance(row, slice):
            return [self[i] for i in range(*row.indices(len(self)))]
        row = int(row)
        if row < 0:
            row += len(self)
        if not 0 <= row < len(self):
            raise IndexError(f"row {row} of {len(self)}")
        columns = self._columns
        ends = columns["path_ends"]
        start = int(ends[row - 1]) if row else 0
        return self._item(
            row,
            columns["ids"][row],
            int(columns["labels"][row]),
            columns["paths"][start : int(ends[row])].tobytes(),
            columns["boxes"][row].tolist(),
        )

    def _item(self, row: int, item_id: bytes, label: int, path: bytes, box: list[int]) -> Item:
        return Item(
            id=item_id.decode(),
            label=self._label_names[label],
            path=path.decode(),
            also=self._also.get(row, ()),
            # (0, 0, 0, 0): a one-face row; a face's box ends right of 0
            box=tuple(box) if box[2] > 0 else None,  # type: ignore[arg-type]
        )

    def __iter__(self) -> Iterator[Item]:
        """Every row, read a block of rows at a time (compaction and eval walk them all)."""
        columns = self._columns
        for start in range(0, len(self), ITER_BLOCK):
            stop = min(start + ITER_BLOCK, len(self))
            first = int(columns["path_ends"][start - 1]) if start else 0
            ends = (columns["path_ends"][start:stop] - first).tolist()
            blob = columns["paths"][first : first + ends[-1]].tobytes()
            rows = zip(
                range(start, stop),
                columns["ids"][start:stop].tolist(),
                columns["labels"][start:stop].tolist(),
                [0, *ends[:-1]],
                ends,
                columns["boxes"][start:stop].tolist(),
                strict=True,
            )
            for row, item_id, label, begin, end, box in rows:
                yield self._item(row, item_id, label, blob[begin:end], box)

    def _candidates(self, key: str) -> Iterator[int]:
        hashes = self._columns["key_hashes"]
        wanted = np.uint64(key_hash(key))
        first = int(np.searchsorted(hashes, wanted, side="left"))
        last = int(np.searchsorted(hashes, wanted, side="right"))
        yield from sorted({int(row) for row in self._columns["key_rows"][first:last]})

    def row_of(self, item_id: str) -> int | None:
        for row in self._candidates(item_id):
            if self._columns["ids"][row].decode() == item_id:
                return row
        return None

    def ids_named(self, name: str) -> list[str]:
        return [item.id for row in self._candidates(name) if name in names_of(item := self[row])]

    @cached_property
    def _label_numbers(self) -> dict[str, int]:
        return {label: number for number, label in enumerate(self._label_names)}

    def warm(self) -> None:
        """Both scans of the whole gallery that find a person's rows by binary search
        (0.15-0.2 s at ten million rows), done at open."""
        _ = self.in_listing_order, self._labels_ascending

    @cached_property
    def in_listing_order(self) -> bool:
        """Whether the rows are in listing order (the order column is the identity), as a
        build or a compaction lays them out."""
        order = self._columns["order"]
        return bool(np.array_equal(order, np.arange(len(order))))

    @cached_property
    def _labels_ascending(self) -> bool:
        """Whether the labels column never decreases: so in rows in gallery order, where a
        person's rows are one run and labels are numbered as they first appear. Then a
        person's rows are found by a binary search, not a scan of every row (30-110 ms at
        ten million)."""
        labels = self._columns["labels"]
        return bool(np.all(labels[1:] >= labels[:-1]))

    def _labelled(self, number: int) -> range | None:
        """The rows labelled ``number``, where the labels ascend; else None."""
        if not self._labels_ascending:
            return None
        labels = self._columns["labels"]
        wanted = labels.dtype.type(number)  # a Python int would convert the whole column
        first = int(np.searchsorted(labels, wanted, side="left"))
        return range(first, int(np.searchsorted(labels, wanted, side="right")))

    def rows_labelled(self, label: str) -> Iterable[int]:
        number = self._label_numbers.get(label)
        if number is None:
            return []
        if (rows := self._labelled(number)) is not None:
            return rows
        return (int(row) for row in np.flatnonzero(self._columns["labels"] == number))

    def listing_rows(self, label: str | None = None) -> Sequence[int]:
        order = self._columns["order"]
        if label is None:
            return order
        number = self._label_numbers.get(label)
        if number is None:
            return []
        if self.in_listing_order and (rows := self._labelled(number)) is not None:
            return order[rows.start : rows.stop]
        return order[self._columns["labels"][order] == number]


def write_columns(folder: Path, items: Sequence[Item]) -> dict[str, str]:
    """Write ``items`` as the columns of ``folder`` (made here, in a staged index, which
    its publish syncs and shows in one step); returns each file's sha256, for the manifest."""
    folder.mkdir()
    ids: list[bytes] = []
    labels: list[int] = []
    numbers: dict[str, int] = {}
    paths = bytearray()
    ends: list[int] = []
    boxes: list[tuple[int, int, int, int]] = []
    also: list[list] = []
    keys: list[int] = []
    key_rows: list[int] = []
    listed_in_order, last = True, None
    for row, item in enumerate(items):
        listed = listing_key(item)
        listed_in_order, last = listed_in_order and (last is None or last < listed), listed
        ids.append(item.id.encode())
        labels.append(numbers.setdefault(item.label, len(numbers)))
        paths += item.path.encode()
        ends.append(len(paths))
        boxes.append(item.box or (0, 0, 0, 0))
        if item.also:
            also.append([row, list(item.also)])
        for key in dict.fromkeys([item.id, *names_of(item)]):
            keys.append(key_hash(key))
            key_rows.append(row)
    hashes = np.array(keys, dtype=np.uint64)
    by_hash = np.argsort(hashes, kind="stable")
    columns = {
        "ids": np.array(ids, dtype=f"S{max((len(i) for i in ids), default=1)}"),
        "labels": np.array(labels, dtype=np.int32),
        "paths": np.frombuffer(bytes(paths), dtype=np.uint8),
        "path_ends": np.array(ends, dtype=np.int64),
        "boxes": np.array(boxes, dtype=np.int32).reshape(-1, 4),
        "key_hashes": hashes[by_hash],
        "key_rows": np.array(key_rows, dtype=np.int64)[by_hash],
        # a build's rows are in gallery order already; an append's new rows come last
        "order": np.arange(len(ids), dtype=np.int64)
        if listed_in_order
        else np.array(sorted(range(len(ids)), key=lambda r: listing_key(items[r])), np.int64),
    }
    return save_columns(folder, columns, list(numbers), also)


def save_columns(
    folder: Path, columns: dict[str, np.ndarray], labels: list[str], also: list[list]
) -> dict[str, str]:
    """Write the files of an ``items/`` folder (made already); returns each one's sha256."""
    sums = {}
    for name in COLUMNS:
        sums[name] = _save(folder / f"{name}.npy", columns[name])
    sums["labels_json"] = _write_text(folder / LABELS_FILE, json.dumps(labels))
    sums["also_json"] = _write_text(folder / ALSO_FILE, json.dumps(also))
    return sums


def column_checksums(folder: Path) -> dict[str, str]:
    """The sha256 of each file of an ``items/`` folder, as ``write_columns`` recorded them."""
    sums = {name: file_sha256(folder / f"{name}.npy") for name in COLUMNS}
    sums["labels_json"] = file_sha256(folder / LABELS_FILE)
    sums["also_json"] = file_sha256(folder / ALSO_FILE)
    return sums


def _save(file: Path, column: np.ndarray) -> str:
    np.save(file, column, allow_pickle=False)
    return file_sha256(file)


def _write_text(file: Path, text: str) -> str:
    file.write_text(text)
    return file_sha256(file)

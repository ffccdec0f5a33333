"""Changes to an index since it was built: an append segment of new rows and a tombstone set.

They live beside the index folder, in ``<index>.changes/``::

    journal.jsonl   the change journal, one JSON line per change, in the order made:
                    {"op": "add", "id", "label", "path", "row"} (and "box": a face of an
                    every-face gallery) or {"op": "remove", "ids": [...]}
    vectors.f32     the added rows' embeddings, float32, row ``row`` at row * D * 4

Both are fsynced before a change is acknowledged: the vector first, then the
journal line that points at it, so a line on disk always has its vector. A line
a crash cut short was never acknowledged and is ignored. Replaying the journal
is idempotent (each change sets an image present or absent), so it may be
replayed onto any version of the index: the one it was written against, a
compacted one that already holds the changes, or one an operator rebuilt.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lookalike.common.files import atomic_path, fsync_path
from lookalike.server.index.store import InvalidIndexError, Item

# The change journal's file name. Served galleries hold their pending changes under it,
# so it stays; the build journal (server/index/journal.py) shares it in another folder.
CHANGE_JOURNAL = "journal.jsonl"
VECTORS = "vectors.f32"


def changes_folder(index_path: Path) -> Path:
    """Where the changes of the index at ``index_path`` are kept."""
    return index_path.parent / f"{index_path.name}.changes"


@dataclass
class Changes:
    """The net effect of a journal on some base: rows added, and base ids removed."""

    added: dict[str, tuple[Item, int]] = field(default_factory=dict)  # id -> (item, vector row)
    removed: set[str] = field(default_factory=set)  # ids of base rows that are tombstoned

    @property
    def pending_rows(self) -> int:
        return len(self.added) + len(self.removed)

    @classmethod
    def replay(cls, records: list[dict], in_base: Callable[[str], bool]) -> Changes:
        """The state the records leave on a base that holds the ids ``in_base`` says."""
        changes = cls()
        for record in records:
            if record["op"] == "add":
                box = tuple(record["box"]) if record.get("box") else None
                item = Item(record["id"], record["label"], record["path"], box=box)  # type: ignore[arg-type]
                if not in_base(item.id) or item.id in changes.removed:
                    changes.added[item.id] = (item, record["row"])
            else:
                for image_id in record["ids"]:
                    changes.added.pop(image_id, None)
                    if in_base(image_id):
                        changes.removed.add(image_id)
        return changes


class ChangeLog:
    """The change journal and vector file of one index; appends are durable when they return.

    Not thread-safe: the backend serialises its changes.
    """

    def __init__(self, folder: Path, dim: int) -> None:
        self.folder = folder
        self.dim = dim
        self.records: list[dict] = []
        self.rows = 0  # add records, so the next vector row
        self._journal = None
        self._vectors = None
        self._good_bytes = 0  # the journal up to its last whole line
        if (folder / CHANGE_JOURNAL).is_file():
            self._read()

    def _read(self) -> None:
        data = (self.folder / CHANGE_JOURNAL).read_bytes()
        while (end := data.find(b"\n", self._good_bytes)) >= 0:
            try:
                record = json.loads(data[self._good_bytes : end])
            except json.JSONDecodeError:
                break  # the line a crash cut short: never acknowledged
            self.records.append(record)
            self.rows += record["op"] == "add"
            self._good_bytes = end + 1
        vectors = self.folder / VECTORS
        size = vectors.stat().st_size if vectors.exists() else 0
        if size < self.rows * self.dim * 4:
            raise InvalidIndexError(
                f"the changes journal of this index lists {self.rows} added rows but "
                f"{VECTORS} holds {size // (self.dim * 4)}: the folder was damaged"
            )

    def vectors(self) -> np.ndarray:
        """Every added row's vector, by row (a copy: the file grows under a map)."""
        if not self.rows:
            return np.empty((0, self.dim), np.float32)
        data = np.fromfile(self.folder / VECTORS, np.float32, count=self.rows * self.dim)
        return data.reshape(self.rows, self.dim)

    def _open(self) -> None:
        if self._journal is not None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        self._journal = open(self.folder / CHANGE_JOURNAL, "ab")  # noqa: SIM115 (kept open)
        self._journal.truncate(self._good_bytes)  # a torn last line goes before the next
        self._vectors = os.open(self.folder / VECTORS, os.O_RDWR | os.O_CREAT, 0o644)
        # vectors written before a crash cut their journal line short are dropped
        os.ftruncate(self._vectors, self.rows * self.dim * 4)
        fsync_path(self.folder)
        fsync_path(self.folder.parent)

    def add(self, item: Item, vector: np.ndarray) -> int:
        """Record an added row durably; returns its vector row."""
        self._open()
        row = self.rows
        data = np.ascontiguousarray(vector, np.float32).tobytes()
        if len(data) != self.dim * 4:
            raise ValueError(f"expected a {self.dim}-d vector")
        os.pwrite(self._vectors, data, row * self.dim * 4)
        os.fsync(self._vectors)
        record = {"op": "add", "id": item.id, "label": item.label, "path": item.path, "row": row}
        if item.box:
            record["box"] = list(item.box)
        self._append(record)
        self.rows += 1
        return row

    def remove(self, ids: list[str]) -> None:
        """Record removals durably."""
        self._open()
        self._append({"op": "remove", "ids": ids})

    def _append(self, record: dict) -> None:
        assert self._journal is not None
        self._journal.write((json.dumps(record) + "\n").encode())
        self._journal.flush()
        os.fsync(self._journal.fileno())
        self._good_bytes = self._journal.tell()
        self.records.append(record)

    def clear(self) -> None:
        """Forget every change (they are in the index now): the journal is emptied in one
        step, then the vectors are cut off; opening drops vectors no line points at."""
        self.close()
        if self.folder.is_dir():
            with atomic_path(self.folder / CHANGE_JOURNAL) as staging:
                staging.write_bytes(b"")
                fsync_path(staging)
            fsync_path(self.folder)
            if (self.folder / VECTORS).exists():  # the folder may hold only the writer lock
                with open(self.folder / VECTORS, "r+b") as vectors:
                    vectors.truncate(0)
                    os.fsync(vectors.fileno())
        self.records, self.rows, self._good_bytes = [], 0, 0

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
            os.close(self._vectors)
            self._journal = self._vectors = None

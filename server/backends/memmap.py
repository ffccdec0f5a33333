"""The default backend: an index folder's memory-mapped matrix, searched exactly in process,
with the images added and removed since it was built (``server/index/segment.py``)."""

from __future__ import annotations

import bisect
import logging
import os
import threading
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import numpy as np

from lookalike.common.versions import served_name
from lookalike.server.backends.approximate import RowSearcher, open_searcher
from lookalike.server.backends.base import (
    DEFAULT_ALGORITHM,
    Algorithm,
    Hit,
    ReadOnlyGallery,
)
from lookalike.server.backends.knn import row_norms_squared
from lookalike.server.index.compact import compact
from lookalike.server.index.item import gallery_order, listing_key
from lookalike.server.index.items import names_of
from lookalike.server.index.publish import recover_gallery
from lookalike.server.index.segment import CHANGE_JOURNAL, ChangeLog, Changes, changes_folder
from lookalike.server.index.store import GalleryIndex, GalleryInfo, InvalidIndexError, Item
from lookalike.server.index.writer_lock import WriterLock
from lookalike.server.vision.embedder import ModelInfo

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class View:
    """One consistent state of the gallery, which a search uses from start to end.

    Changes make a new View; a search that began on the old one finishes on it.
    ``segment`` is a prefix of an append-only buffer, so it is never written under
    a reader.
    """

    index: GalleryIndex
    knn: RowSearcher  # exact, or an approximate structure (server/backends/approximate.py)
    removed_rows: frozenset[int]
    segment: np.ndarray  # every added row so far; only ``live`` rows of it are searched
    segment_items: tuple[Item, ...]
    live: np.ndarray  # rows of ``segment`` not removed since

    def __len__(self) -> int:
        return len(self.index) - len(self.removed_rows) + len(self.live)

    def search(self, queries: np.ndarray, k: int, breadth: int = 0) -> list[list[Hit]]:
        found: list[list[Hit]] = [[] for _ in range(len(queries))]
        if len(self.index):
            wanted = min(len(self.index), k + len(self.removed_rows))
            distances, rows = self.knn.search(queries, wanted, breadth)
            items = self.index.manifest.items
            found = [
                [
                    Hit(items[row], float(d))
                    for row, d in zip(near, far, strict=True)
                    if row >= 0 and row not in self.removed_rows  # -1: an ANN found fewer
                ][:k]
                for near, far in zip(rows, distances, strict=True)
            ]
        if not len(self.live):
            return found
        return [
            sorted(base + extra, key=lambda hit: hit.distance)[:k]
            for base, extra in zip(found, self._search_segment(queries, k), strict=True)
        ]

    @cached_property
    def _live_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """The live added rows, gathered once per view, and their squared norms."""
        matrix = np.ascontiguousarray(self.segment[self.live])
        return matrix, row_norms_squared(matrix)

    def _search_segment(self, queries: np.ndarray, k: int) -> list[list[Hit]]:
        """Exact search of the added rows: few, so plain numpy."""
        matrix, norms = self._live_rows
        queries = np.asarray(queries, np.float32)
        squared = (
            row_norms_squared(queries)[:, None]
            - 2 * (queries @ matrix.T).astype(np.float64)
            + norms[None, :]
        )
        distances = np.sqrt(np.maximum(squared, 0))
        k = min(k, len(self.live))
        nearest = np.argsort(distances, axis=1, kind="stable")[:, :k]
        return [
            [Hit(self.segment_items[self.live[j]], float(d[j])) for j in order]
            for order, d in zip(nearest, distances, strict=True)
        ]


class MemmapBackend:
    """An index folder, its memory-mapped matrix and manifest, and the changes since.

    The backend holding the gallery's writer lock (``writer_lock.py``) makes the
    changes; any other follows them read-only (``refresh``), and takes the lock
    over when its holder is gone.
    """

    def __init__(
        self,
        index: GalleryIndex,
        algorithm: Algorithm = DEFAULT_ALGORITHM,
        writer: WriterLock | None | bool = True,
        *,
        breadth: int = 0,
    ) -> None:
        """``writer``: True to take the gallery's lock if free (else follow), False to
        follow, or a lock already held (an index reload hands it on)."""
        self.algorithm = algorithm
        self.breadth = breadth  # nprobe / efSearch of an approximate index; 0: the manifest's
        self._lock = threading.Lock()  # one change at a time; searches never wait for it
        self.path = served_name(index.path)
        opened = index.path.resolve()
        index = replace(index, path=self.path)
        self._changes_folder = changes_folder(self.path)
        if writer is True:
            writer = WriterLock.try_take(self._changes_folder)
            if writer is not None:
                recover_gallery(self.path)  # keeps the version served, removes the rest
                if opened != self.path.resolve():  # ``index`` was a version not served
                    index = GalleryIndex.open(self.path)
        self._writer: WriterLock | None = writer or None
        self._log = ChangeLog(self._changes_folder, index.manifest.embedding_size)
        self._seen = self._stamp()
        self._rebase(index)

    @property
    def writable(self) -> bool:
        return self._writer is not None

    def _rebase(self, index: GalleryIndex) -> None:
        """Search ``index`` with the journal replayed onto it."""
        self._index = index
        self._knn = open_searcher(index, self.algorithm, self.breadth)
        self._base = index.manifest.items  # looked up by id and by name (server/index/items.py)
        self._base.warm()
        # the added images' external ids (file names), and photo content ids -> row ids
        self._named: dict[str, set[str]] = {}
        self._changes = Changes.replay(self._log.records, self._in_base)
        # the base rows of the removed ids, kept as removals come (a lookup each in columns)
        self._removed_rows: set[int] = {
            row for i in self._changes.removed if (row := self._base.row_of(i)) is not None
        }
        vectors = self._log.vectors()
        self._buffer = np.empty((max(64, 2 * len(vectors)), vectors.shape[1]), np.float32)
        self._buffer[: len(vectors)] = vectors
        self._items: list[Item | None] = [None] * len(vectors)
        for item, row in self._changes.added.values():
            self._items[row] = item
            self._name(item)
        self._publish()

    def _name(self, item: Item) -> None:
        for name in names_of(item):
            self._named.setdefault(name, set()).add(item.id)

    def _in_base(self, image_id: str) -> bool:
        return self._base.row_of(image_id) is not None

    def _publish(self) -> None:
        added = self._changes.added.values()
        self._view = View(
            index=self._index,
            knn=self._knn,
            removed_rows=frozenset(self._removed_rows),
            segment=self._buffer[: len(self._items)],
            segment_items=tuple(self._items),
            live=np.array(sorted(row for _, row in added), dtype=np.int64),
        )

    @property
    def index(self) -> GalleryIndex:
        return self._index

    @property
    def info(self) -> GalleryInfo:
        return self._view.index.manifest.info

    @property
    def name(self) -> str:
        return self._knn.name

    @property
    def max_breadth(self) -> int | None:
        """The widest search a request may ask for; None: exact, breadth means nothing."""
        return getattr(self._knn, "max_breadth", None)

    @property
    def default_breadth(self) -> int:
        return getattr(self._knn, "default_breadth", 0)

    def __len__(self) -> int:
        return len(self._view)

    @property
    def pending_rows(self) -> int:
        return self._changes.pending_rows

    def search(self, queries: np.ndarray, k: int, breadth: int = 0) -> list[list[Hit]]:
        return self._view.search(queries, k, breadth)

    def check_model(self, model: ModelInfo) -> None:
        self._index.check_model(model)

    def reopen(self, location: str | None = None) -> MemmapBackend:
        """The gallery at ``location`` (default this one) read afresh; this backend's
        writer lock goes with it when it is the same gallery."""
        path = served_name(Path(location)) if location else self.path
        same = path == self.path and self._writer is not None
        writer = self._writer.share() if same else True
        return MemmapBackend(GalleryIndex.open(path), self.algorithm, writer, breadth=self.breadth)

    def close(self) -> None:
        """Let go of the writer lock (a reload's new backend may share it still)."""
        with self._lock:
            if self._writer is not None:
                self._writer.release()
                self._writer = None

    def _stamp(self) -> tuple[str, int, int]:
        """What changes when the writer publishes: the served version and the journal."""
        try:
            target = os.readlink(self.path) if self.path.is_symlink() else ""
        except OSError:
            target = ""
        try:
            journal = os.stat(self._changes_folder / CHANGE_JOURNAL)
        except OSError:
            return target, 0, 0
        return target, journal.st_ino, journal.st_size

    def refresh(self) -> bool:
        """A follower reads what the writer published since, or becomes the writer when
        the lock is free; whether the gallery searched changed."""
        with self._lock:
            if self._writer is not None:
                return False
            writer = WriterLock.try_take(self._changes_folder)
            if writer is not None:
                recover_gallery(self.path)
            stamp = self._stamp()
            if writer is None and stamp == self._seen:
                return False
            # The journal before the version: the writer switches versions first and
            # empties the journal after, so what is read here is never missing a change.
            changes = ChangeLog(self._changes_folder, self._index.manifest.embedding_size)
            index = self._index if stamp[0] == self._seen[0] else GalleryIndex.open(self.path)
            self._log.close()
            self._log, self._seen, self._writer = changes, stamp, writer
            self._rebase(index)
            if writer is not None:
                log.warning("took over the gallery's writer lock: this server now writes it")
            return True

    # Changes: each is on disk (fsynced) before it returns, and in the next search.

    def items(self, label: str | None = None) -> list[tuple[Item, bool]]:
        """Every image (of ``label``) in gallery order, with whether it awaits compaction."""
        with self._lock:
            removed, added = self._changes.removed, self._changes.added
            base = self._base
            rows = range(len(base)) if label is None else base.rows_labelled(label)
            found = [(item, False) for row in rows if (item := base[row]).id not in removed]
            found += [(item, True) for item, _ in added.values()]
        found = [pair for pair in found if label is None or pair[0].label == label]
        return sorted(found, key=lambda pair: (gallery_order(pair[0].path), pair[0].face))

    def list_page(
        self, label: str | None, after: tuple | None, size: int
    ) -> tuple[list[tuple[Item, bool]], bool]:
        """A binary search of the index's rows in listing order for where the page starts,
        then a walk from there, merged with the images added since: a page of a
        ten-million-row gallery costs about as much as one of a small one."""
        with self._lock:
            base, removed = self._base, frozenset(self._changes.removed)
            added = sorted(
                (item for item, _ in self._changes.added.values() if label in (None, item.label)),
                key=listing_key,
            )
            rows = base.listing_rows(label)
        start = 0
        if after is not None:
            added = [item for item in added if listing_key(item) > after]
            start = bisect.bisect_right(rows, after, key=lambda row: listing_key(base[row]))
        page: list[tuple[Item, bool]] = []
        position, extra = start, 0
        while len(page) <= size and (position < len(rows) or extra < len(added)):
            item = base[rows[position]] if position < len(rows) else None
            if item is not None and item.id in removed:
                position += 1
                continue
            if item is None or (
                extra < len(added) and listing_key(added[extra]) < listing_key(item)
            ):
                page.append((added[extra], True))
                extra += 1
            else:
                page.append((item, False))
                position += 1
        return page[:size], len(page) > size

    def find(self, image_id: str) -> list[Item]:
        """The row of id ``image_id`` (a photo's, or one face's); or else every face of the
        photo of that content id, or the rows of that external id."""
        with self._lock:
            if there := self._live(image_id):
                return [there]
            ids = {*self._base.ids_named(image_id), *self._named.get(image_id, ())}
            named = (self._live(row_id) for row_id in ids)
            return sorted((item for item in named if item is not None), key=_file_then_face)

    def _live(self, image_id: str) -> Item | None:
        """The item of this content id if the gallery holds it now."""
        if image_id in self._changes.added:
            return self._changes.added[image_id][0]
        row = self._base.row_of(image_id)
        if row is not None and image_id not in self._changes.removed:
            return self._base[row]
        return None

    def _check_writer(self) -> None:
        if self._writer is None:
            raise ReadOnlyGallery("another server holds this gallery's writer lock")

    def add(self, item: Item, vector: np.ndarray) -> Item | None:
        """Add ``item``; if its content is there already, change nothing and return that."""
        with self._lock:
            self._check_writer()
            if there := self._live(item.id):
                return there
            segment_row = self._log.add(item, vector)
            if segment_row >= len(self._buffer):
                grown = np.empty((2 * len(self._buffer), self._buffer.shape[1]), np.float32)
                grown[: len(self._buffer)] = self._buffer
                self._buffer = grown  # views keep the old buffer
            self._buffer[segment_row] = vector
            self._items.append(item)
            self._name(item)
            self._changes.added[item.id] = (item, segment_row)
            self._publish()
            return None

    def remove(self, ids: list[str]) -> list[Item]:
        """Remove the images of these content ids; returns those that were there."""
        with self._lock:
            self._check_writer()
            gone = [item for i in dict.fromkeys(ids) if (item := self._live(i)) is not None]
            if not gone:
                return []
            self._log.remove([item.id for item in gone])
            for item in gone:
                self._changes.added.pop(item.id, None)
                if (row := self._base.row_of(item.id)) is not None:
                    self._changes.removed.add(item.id)
                    self._removed_rows.add(row)
            self._publish()
            return gone

    def compact(self) -> tuple[str, str, int]:
        """Fold the changes into a new version of the index: (old version, new, rows folded).

        Searches go on, on the old view, until the new one is in place; changes wait.
        """
        with self._lock:
            self._check_writer()
            old, folded = self._index, self._changes.pending_rows
            if not folded:  # added and removed again: only the journal holds them
                self._log.clear()
                recover_gallery(self.path)  # a version an interrupted compaction left
                self._rebase(old)
                return old.manifest.version, old.manifest.version, 0
            if len(self._view) == 0:
                raise InvalidIndexError("compacting would leave the gallery empty")
            compact(old, self._changes, self._buffer[: len(self._items)])
            fresh = GalleryIndex.open(old.path)
            self._log.clear()
            self._rebase(fresh)
            return old.manifest.version, fresh.manifest.version, folded


def _file_then_face(item: Item) -> tuple[str, int]:
    return item.file_id, item.face

"""The memory-mapped backend's changes: append segment, tombstones, journal, compaction."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from lookalike.server.backends.memmap import MemmapBackend
from lookalike.server.index import compact as compaction
from lookalike.server.index.build import build_index
from lookalike.server.index.gallery import content_id
from lookalike.server.index.segment import CHANGE_JOURNAL, VECTORS, changes_folder
from lookalike.server.index.store import GalleryIndex, Item
from lookalike.server.vision.imaging import WHOLE_FRAME, load
from tests.imagegen import encode, person_image


@pytest.fixture
def live(gallery_dir, embedder, tmp_path):
    """A copy of the test gallery (people 0-3) and its own index."""
    root = tmp_path / "gallery"
    for person in range(4):
        shutil.copytree(gallery_dir / f"person_{person:02d}", root / f"person_{person:02d}")
    build_index(root, embedder, tmp_path / "index", progress=False)
    return root, tmp_path / "index"


def enrol(embedder, root, person, photo):
    """Write a new person's photo into the gallery as AddImages does; the item and vector."""
    data = encode(person_image(person, photo), "JPEG", quality=92)
    item = Item(content_id(data), f"person_{person:02d}", f"person_{person:02d}/p{photo}.jpg")
    (root / item.label).mkdir(exist_ok=True)
    (root / item.path).write_bytes(data)
    pixels = load(data, WHOLE_FRAME, embedder.info.input_size).pixels
    return item, data, embedder.embed(pixels[np.newaxis])[0]


def top(backend, embedder, data, k=1):
    pixels = load(data, WHOLE_FRAME, embedder.info.input_size).pixels
    return backend.search(embedder.embed(pixels[np.newaxis]), k)[0]


def test_added_rows_are_found_removed_ones_never_and_both_survive_reopening(live, embedder):
    root, index = live
    backend = MemmapBackend(GalleryIndex.open(index))
    item, data, vector = enrol(embedder, root, 7, 0)
    assert backend.add(item, vector) is None
    assert backend.add(item, vector) == item  # the same content again changes nothing
    assert top(backend, embedder, data)[0].item == item
    gone = backend.remove([i.id for i, _ in backend.items("person_01")])
    assert {i.label for i in gone} == {"person_01"} and len(gone) == 3
    assert backend.remove([i.id for i in gone]) == []
    assert (len(backend), backend.pending_rows) == (12 - 3 + 1, 4)
    query = (root / "person_01" / "person_01_0001.jpg").read_bytes()
    assert "person_01" not in {hit.item.label for hit in top(backend, embedder, query, k=100)}

    backend.close()  # a restart: the writer's lock goes with the process
    again = MemmapBackend(GalleryIndex.open(index))
    assert again.items() == backend.items()
    assert top(again, embedder, data)[0].item == item
    assert "person_01" not in {hit.item.label for hit in top(again, embedder, query, k=100)}


def test_a_journal_line_cut_short_is_dropped_and_the_next_change_kept(live, embedder):
    root, index = live
    backend = MemmapBackend(GalleryIndex.open(index))
    first, _, vector = enrol(embedder, root, 7, 0)
    backend.add(first, vector)
    journal = changes_folder(index) / CHANGE_JOURNAL
    with journal.open("ab") as stream:  # a crash in the middle of the next line
        stream.write(b'{"op": "add", "id": "abc')
    with (changes_folder(index) / VECTORS).open("ab") as stream:
        stream.write(b"\0" * 100)
    backend.close()
    after_crash = MemmapBackend(GalleryIndex.open(index))
    assert [i for i, pending in after_crash.items() if pending] == [first]
    second, data, vector = enrol(embedder, root, 8, 0)
    after_crash.add(second, vector)
    after_crash.close()
    reopened = MemmapBackend(GalleryIndex.open(index))
    assert {i for i, pending in reopened.items() if pending} == {first, second}
    assert top(reopened, embedder, data)[0].item == second


def test_compaction_equals_a_fresh_build_row_for_row(live, embedder, tmp_path, monkeypatch):
    root, index = live
    monkeypatch.setattr(compaction, "COPY_BLOCK", 4)  # the matrix copied in several blocks
    backend = MemmapBackend(GalleryIndex.open(index))
    for person, photo in ((7, 0), (7, 1), (0, 9), (8, 0)):
        backend.add(*enrol(embedder, root, person, photo)[::2])
    removed = backend.remove([i.id for i, _ in backend.items("person_02")])
    removed += backend.remove([backend.find("p1")[0].id])  # by external id: person_07/p1
    for item in removed:
        (root / item.path).unlink()
    queries = np.asarray(GalleryIndex.open(index).features[:9])
    before = backend.search(queries, 6)
    old, new, folded = backend.compact()
    assert (folded, backend.pending_rows) == (3 + 3, 0) and old != new  # 3 added, 3 tombstoned
    after = backend.search(queries, 6)
    assert [[h.item for h in hits] for hits in after] == [[h.item for h in b] for b in before]
    near = [[h.distance for h in hits] for hits in before]
    np.testing.assert_allclose([[h.distance for h in a] for a in after], near, atol=1e-3)

    build_index(root, embedder, tmp_path / "fresh", progress=False)
    fresh, compacted = GalleryIndex.open(tmp_path / "fresh"), GalleryIndex.open(index)
    assert compacted.manifest.items == fresh.manifest.items
    np.testing.assert_allclose(compacted.features, fresh.features, rtol=1e-5, atol=1e-6)
    assert [(i, False) for i in fresh.manifest.items] == backend.items()
    assert (changes_folder(index) / VECTORS).stat().st_size == 0


def test_an_image_added_and_removed_leaves_no_vector_after_compaction(live, embedder):
    root, index = live
    backend = MemmapBackend(GalleryIndex.open(index))
    item, _, vector = enrol(embedder, root, 7, 0)
    backend.add(item, vector)
    backend.remove([item.id])
    assert backend.pending_rows == 0
    assert vector.tobytes() in (changes_folder(index) / VECTORS).read_bytes()
    version = backend.info.version
    assert backend.compact() == (version, version, 0)
    assert (changes_folder(index) / VECTORS).read_bytes() == b""
    backend.close()
    assert MemmapBackend(GalleryIndex.open(index)).items() == backend.items()


def test_compacting_a_gallery_never_changed_folds_nothing(live):
    """The changes folder holds only the writer's lock until the first change: nothing
    to clear (this failed with FileNotFoundError once the lock moved in)."""
    _, index = live
    backend = MemmapBackend(GalleryIndex.open(index))
    version = backend.info.version
    assert backend.compact() == (version, version, 0)
    assert backend.items() == [(item, False) for item in GalleryIndex.open(index).manifest.items]

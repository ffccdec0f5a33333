"""Compaction of a gallery in columns splices the base's columns (server/index/splice.py):
the files it writes are the ones written for the build journal's fold, byte for byte,
and what it cannot splice goes through the journal."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from lookalike.server.index import compact as compaction
from lookalike.server.index import splice, store
from lookalike.server.index.build import build_index
from lookalike.server.index.item import Item, face_id
from lookalike.server.index.items import ItemColumns, write_columns
from lookalike.server.index.segment import Changes
from lookalike.server.index.store import GalleryIndex, Layout
from tests.unit.test_items import gallery_items


@pytest.fixture
def base(gallery_dir, embedder, tmp_path, monkeypatch, request) -> GalleryIndex:
    """Four people in columns, with identical files: one copied into another person's
    folder, one under a name that sorts before its original (its row's first file);
    stored float32, or as the test's parameter says."""
    root = tmp_path / "gallery"
    for person in range(4):
        shutil.copytree(gallery_dir / f"person_{person:02d}", root / f"person_{person:02d}")
    shutil.copy(root / "person_00" / "person_00_0001.jpg", root / "person_02" / "same.jpg")
    shutil.copy(root / "person_01" / "person_01_0002.jpg", root / "person_01" / "a_first.jpg")
    monkeypatch.setattr(store, "COLUMN_ROWS", 0)  # every gallery keeps its items in columns
    layout = Layout(storage=getattr(request, "param", "float32"))
    build_index(root, embedder, tmp_path / "index", progress=False, layout=layout)
    index = GalleryIndex.open(tmp_path / "index")
    assert isinstance(index.manifest.items, ItemColumns)
    assert sum(len(item.also) for item in index.manifest.items) == 2
    return index


def files(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def changes_of(base: GalleryIndex) -> Changes:
    items = base.manifest.items
    new = [
        Item("0" * 40, "person_00", "person_00/0.jpg"),  # before every row; the longest id
        Item("a1", "person_01", "person_01/person_01_0001b.jpg"),  # between two
        Item("a2", "person_02", "person_02/same.jpg.png"),  # after an identical file
        Item("a3", "person_09", "person_09/z.jpg"),  # after every row
        Item("a4", "person_05", "person_05/new.jpg"),  # a new person between none
    ]
    return Changes(
        added={item.id: (item, row) for row, item in enumerate(new)},
        removed={items[0].id, items[5].id, items[len(items) - 1].id},
    )


def test_the_splice_writes_the_columns_of_the_journals_fold(base, tmp_path):
    changes = changes_of(base)
    spliced = compaction._spliced(base, changes)
    assert spliced is not None
    items, (in_base, rows) = compaction.folded_rows(base, changes)
    assert spliced.write(tmp_path / "spliced") == write_columns(tmp_path / "journal", items)
    assert files(tmp_path / "spliced") == files(tmp_path / "journal")
    found_in_base, found_rows = spliced.sources()
    np.testing.assert_array_equal(found_in_base, in_base)
    np.testing.assert_array_equal(found_rows, rows)
    assert list(ItemColumns(tmp_path / "spliced")) == items


@pytest.mark.parametrize("base", ["float32", "float16"], indirect=True)
def test_a_compaction_in_columns_splices_and_publishes_the_journals_rows(base, monkeypatch):
    changes = changes_of(base)
    want, (in_base, rows) = compaction.folded_rows(base, changes)
    size = (len(changes.added), base.manifest.embedding_size)
    segment = np.random.default_rng(0).standard_normal(size).astype(np.float32)
    expected = np.stack(
        [
            base.features[row] if kept else segment[row]
            for kept, row in zip(in_base, rows, strict=True)
        ]
    )

    def unwanted(*_):
        raise AssertionError("the fold made Items where it could splice")

    monkeypatch.setattr(compaction, "folded_rows", unwanted)
    compaction.compact(base, changes, segment)
    fresh = GalleryIndex.open(base.path)
    assert isinstance(fresh.manifest.items, ItemColumns)
    assert list(fresh.manifest.items) == want
    assert fresh.features.dtype == base.features.dtype
    np.testing.assert_array_equal(fresh.features, expected.astype(base.features.dtype))
    for item in want:
        assert fresh.manifest.items.row_of(item.id) == want.index(item)


def test_an_added_copy_of_a_kept_row_is_joined_to_it_through_the_journal(base):
    """The same content under another name is an identical file of the kept row, which
    only the journal joins; the compaction still publishes columns."""
    kept = base.manifest.items[3]
    copy = Item(kept.id, kept.label, f"{kept.label}/zz_copy.jpg")
    changes = Changes(added={kept.id: (copy, 0)})
    assert compaction._spliced(base, changes) is None
    segment = np.zeros((1, base.manifest.embedding_size), np.float32)
    compaction.compact(base, changes, segment)
    items = GalleryIndex.open(base.path).manifest.items
    assert isinstance(items, ItemColumns) and len(items) == len(base.manifest.items)
    assert items[items.row_of(kept.id)].also[-1] == copy.path


def in_columns(folder: Path, items: list[Item]) -> ItemColumns:
    folder.parent.mkdir(parents=True, exist_ok=True)
    write_columns(folder, items)
    return ItemColumns(folder)


def test_faces_identical_files_and_a_narrower_id_column_splice_as_written(tmp_path):
    """Rows with boxes, labels past ASCII, identical files; the longest id cut out."""
    longest = Item("f" * 48, "Person_04", "Person_04/zz.jpg")
    rows = sorted([*gallery_items(seed=3), longest], key=splice.fold_key)
    base = in_columns(tmp_path / "base", rows)
    photo = "9" * 16
    added = [
        (Item(face_id(photo, face), "groups", "groups/g1b.jpg", (), (9, 9, 50 + face, 60)), face)
        for face in range(2)
    ]
    added.append((Item("b" * 16, "Zed", "Zed/one.jpg"), 2))
    cut = [rows.index(longest), 3, 4]
    spliced = splice.plan(base, cut, added)
    assert spliced is not None
    kept = [item for row, item in enumerate(rows) if row not in cut]
    folded = sorted([*kept, *(item for item, _ in added)], key=splice.fold_key)
    assert spliced.write(tmp_path / "spliced") == write_columns(tmp_path / "want", folded)
    assert files(tmp_path / "spliced") == files(tmp_path / "want")
    assert ItemColumns(tmp_path / "spliced").column("ids").dtype == np.dtype("S18")


def test_a_base_it_cannot_splice_is_refused(tmp_path):
    rows = sorted(gallery_items(seed=4), key=splice.fold_key)
    assert splice.plan(in_columns(tmp_path / "in_order", rows), [], []) is not None
    shuffled = [rows[1], rows[0], *rows[2:]]
    assert splice.plan(in_columns(tmp_path / "shuffled", shuffled), [], []) is None
    relabelled = [Item(rows[0].id, "someone", rows[0].path), *rows[1:]]
    assert splice.plan(in_columns(tmp_path / "relabelled", relabelled), [], []) is None


@pytest.mark.parametrize("seed", range(12))
def test_random_cuts_and_additions_splice_as_the_items_are_written(tmp_path, seed):
    """Rows cut anywhere (runs, the first, the last, every row of a label) and rows put
    anywhere (new labels, a group photo's faces, before and after every row)."""
    rng = np.random.default_rng(seed)
    rows = sorted(gallery_items(seed=seed), key=splice.fold_key)
    base = in_columns(tmp_path / "base", rows)
    cut = sorted(set(rng.choice(len(rows), size=rng.integers(0, len(rows) // 2)).tolist()))
    labels = sorted({item.label for item in rows}) + ["Aaa", "Person_05", "zzz", "Person_05b"]
    added: list[tuple[Item, int]] = []
    for number in range(int(rng.integers(0, 6))):
        label = labels[int(rng.integers(len(labels)))]
        content = f"{rng.integers(2**62):016x}"
        path = f"{label}/{label}_{rng.integers(10_000):04d}x.jpg"
        if rng.random() < 0.3:  # a group photo: a row per face, its box
            added += [
                (Item(face_id(content, face), label, path, (), (face, 1, face + 9, 9)), 0)
                for face in range(int(rng.integers(1, 4)))
            ]
        else:
            added.append((Item(content, label, path), number))
    spliced = splice.plan(base, cut, added)
    assert spliced is not None
    kept = [item for row, item in enumerate(rows) if row not in cut]
    folded = sorted([*kept, *(item for item, _ in added)], key=splice.fold_key)
    assert spliced.rows == len(folded)
    assert spliced.write(tmp_path / "spliced") == write_columns(tmp_path / "want", folded)
    assert files(tmp_path / "spliced") == files(tmp_path / "want")
    cut_ids = {rows[row].id for row in cut}
    assert not cut_ids & {item.id for item in ItemColumns(tmp_path / "spliced")}

"""Compaction's fold: the merge of the kept base rows with the added ones makes the items
and vector sources the build journal makes, and gives way to it where it cannot."""

from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pytest

from lookalike.server.index import compact as compaction
from lookalike.server.index.build import build_index
from lookalike.server.index.items import ItemList
from lookalike.server.index.segment import Changes
from lookalike.server.index.store import GalleryIndex, Item


@pytest.fixture
def base(gallery_dir, embedder, tmp_path) -> GalleryIndex:
    """Four people, with identical files: one copied into another person's folder, one
    under a name that sorts before its original (so it becomes the row's first file)."""
    root = tmp_path / "gallery"
    for person in range(4):
        shutil.copytree(gallery_dir / f"person_{person:02d}", root / f"person_{person:02d}")
    shutil.copy(root / "person_00" / "person_00_0001.jpg", root / "person_02" / "same.jpg")
    shutil.copy(root / "person_01" / "person_01_0002.jpg", root / "person_01" / "a_first.jpg")
    build_index(root, embedder, tmp_path / "index", progress=False)
    index = GalleryIndex.open(tmp_path / "index")
    assert sum(len(item.also) for item in index.manifest.items) == 2
    return index


def added(label: str, name: str, row: int) -> tuple[Item, int]:
    item = Item(f"{label}-{name}-content", label, f"{label}/{name}")
    return item, row


def same(found, expected) -> None:
    (items, (in_base, rows)), (want, (want_in_base, want_rows)) = found, expected
    assert items == want
    np.testing.assert_array_equal(in_base, want_in_base)
    np.testing.assert_array_equal(rows, want_rows)


def test_the_merge_makes_what_the_journal_makes(base):
    items = base.manifest.items
    changes = Changes(
        added=dict(
            (pair[0].id, pair)
            for pair in (
                added("person_00", "0.jpg", 0),  # before every base row
                added("person_01", "person_01_0001b.jpg", 1),  # between two
                added("person_02", "same.jpg.png", 2),  # right after an identical file
                added("person_09", "z.jpg", 3),  # after every base row
                added("person_05", "new.jpg", 4),  # a new person between none
            )
        ),
        removed={items[0].id, items[5].id, items[len(items) - 1].id},
    )
    merged = compaction._merged_rows(base, changes)
    assert merged is not None
    same(merged, compaction._journal_rows(base, changes))
    assert len(merged[0]) == len(items) - 3 + 5
    assert not any(item.id in changes.removed for item in merged[0])


def test_nothing_changed_folds_the_base_as_it_is(base):
    merged = compaction._merged_rows(base, Changes())
    assert merged is not None and merged[0] == list(base.manifest.items)
    np.testing.assert_array_equal(merged[1][1], np.arange(len(base.manifest.items)))
    same(merged, compaction._journal_rows(base, Changes()))


def test_an_added_row_of_a_kept_rows_content_goes_through_the_journal(base):
    """Its file joins the kept row as an identical one, which only the journal does."""
    kept = base.manifest.items[3]
    copy = Item(kept.id, kept.label, f"{kept.label}/zz_copy.jpg")
    changes = Changes(added={kept.id: (copy, 0)})
    assert compaction._merged_rows(base, changes) is None
    items, _ = compaction.folded_rows(base, changes)
    assert items == compaction._journal_rows(base, changes)[0]
    assert "zz_copy.jpg" in next(item for item in items if item.id == kept.id).also[-1]


def test_a_base_out_of_gallery_order_goes_through_the_journal(base):
    rows = list(base.manifest.items)
    rows[1], rows[2] = rows[2], rows[1]
    shuffled = replace(base, manifest=replace(base.manifest, items=ItemList(rows)))
    assert compaction._merged_rows(shuffled, Changes()) is None
    items, (_, sources) = compaction.folded_rows(shuffled, Changes())
    assert items == list(base.manifest.items)
    assert sources[:3].tolist() == [0, 2, 1]

"""The items of an index in columns answer every lookup as the items listed in its JSON do."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from lookalike.server.index import items as columns_module
from lookalike.server.index.item import Item, external_id, face_id, listing_key
from lookalike.server.index.items import ItemColumns, ItemList, write_columns


def gallery_items(seed: int = 0) -> list[Item]:
    """Photos of a few people, some with identical copies, and every face of some group
    photos (rows with boxes, found by their photo's content id too)."""
    rng = random.Random(seed)
    found: list[Item] = []
    for person in range(12):
        label = f"Person_{person:02d}" if person % 5 else f"Personne_é_{person}"  # not ASCII
        for shot in range(rng.randint(1, 4)):
            file_id = f"{rng.getrandbits(64):016x}"
            path = f"{label}/{label}_{shot:04d}.jpg"
            also = (f"copies/{label}_{shot}.png",) if rng.random() < 0.2 else ()
            found.append(Item(file_id, label, path, also))
    for group in range(3):
        file_id = f"{rng.getrandbits(64):016x}"
        for face in range(3):
            box = (10 * face, 5, 10 * face + 40, 60)
            found.append(Item(face_id(file_id, face), "groups", f"groups/g{group}.jpg", (), box))
    return found


def test_columns_read_back_every_item_and_answer_as_the_list(tmp_path):
    listed = gallery_items()
    written = write_columns(tmp_path / "items", listed)
    columns, plain = ItemColumns(tmp_path / "items"), ItemList(listed)
    assert set(written) == {*columns_module.COLUMNS, "labels_json", "also_json"}
    assert len(columns) == len(listed) and list(columns) == listed and columns == plain
    assert columns[-1] == listed[-1] and columns[2:5] == listed[2:5]
    with pytest.raises(IndexError):
        columns[len(listed)]
    names = {name for item in listed for name in (item.id, *columns_module.names_of(item))}
    for name in [*names, "nobody", "Person_01_0000.jpg", ""]:
        assert columns.row_of(name) == plain.row_of(name), name
        assert columns.ids_named(name) == plain.ids_named(name), name
    for label in ["Person_03", "Personne_é_5", "groups", "nobody"]:
        assert list(columns.rows_labelled(label)) == list(plain.rows_labelled(label))
    group = listed[-1]
    assert columns.ids_named(group.file_id) == [face_id(group.file_id, n) for n in range(3)]
    copy = next(item for item in listed if item.also)
    assert columns.ids_named(external_id(copy.also[0])) == [copy.id]  # found by its copy's name


def test_colliding_hashes_cost_a_comparison_not_a_wrong_answer(tmp_path, monkeypatch):
    """Every key given the same hash: each lookup checks its candidates against their rows."""
    monkeypatch.setattr(columns_module, "key_hash", lambda key: 7)
    listed = gallery_items(seed=1)
    write_columns(tmp_path / "items", listed)
    columns, plain = ItemColumns(tmp_path / "items"), ItemList(listed)
    for item in listed:
        assert columns.row_of(item.id) == plain.row_of(item.id)
        for name in columns_module.names_of(item):
            assert columns.ids_named(name) == plain.ids_named(name)
    assert columns.row_of("0123456789abcdef") is None


def test_the_files_hold_no_python_objects(tmp_path):
    """Plain arrays, mapped; the labels and the identical files' paths as JSON."""
    write_columns(tmp_path / "items", gallery_items())
    columns = ItemColumns(tmp_path / "items")
    arrays = columns._columns.values()
    assert all(isinstance(a.base, np.memmap) and not a.dtype.hasobject for a in arrays)
    assert json.loads((tmp_path / "items" / columns_module.LABELS_FILE).read_text())[0]


@pytest.mark.parametrize(
    "path",
    ["a/b.jpg", "a/b.tar.gz", "a/.hidden", "a/b.", "a/b", "b.jpg", "a/b/", "a/..b", "ä/é.png", ""],
)
def test_external_id_is_the_stem_pathlib_gives(path):
    from pathlib import PurePosixPath

    assert external_id(path) == PurePosixPath(path).stem


def test_walking_every_row_block_by_block_reads_what_rows_read_one_at_a_time(tmp_path, monkeypatch):
    listed = gallery_items(seed=2)
    write_columns(tmp_path / "items", listed)
    columns = ItemColumns(tmp_path / "items")
    monkeypatch.setattr(columns_module, "ITER_BLOCK", 5)  # blocks end inside paths' blob
    assert list(columns) == [columns[row] for row in range(len(columns))] == listed


@pytest.mark.parametrize("in_gallery_order", [True, False])
def test_a_persons_rows_are_found_alike_by_binary_search_and_by_scan(tmp_path, in_gallery_order):
    """Rows in gallery order have ascending label numbers: a person's rows are a range
    found by binary search; otherwise every row is scanned. Both answer as the list."""
    listed = sorted(gallery_items(seed=5), key=listing_key)
    if not in_gallery_order:  # a face of a group photo first: that label has two runs
        listed = [listed[-1], *listed[:-1]]
    write_columns(tmp_path / "items", listed)
    columns, plain = ItemColumns(tmp_path / "items"), ItemList(listed)
    assert columns._labels_ascending is in_gallery_order
    assert columns.in_listing_order is in_gallery_order
    for label in [*{item.label for item in listed}, "nobody"]:
        assert [int(r) for r in columns.rows_labelled(label)] == list(plain.rows_labelled(label))
        assert [int(r) for r in columns.listing_rows(label)] == list(plain.listing_rows(label))

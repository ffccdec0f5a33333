"""A gallery past COLUMN_ROWS keeps its items in mapped columns (server/index/items.py):
served, enrolled into, erased from, compacted and reopened as one listed in its JSON."""

from __future__ import annotations

import json
import shutil

import grpc
import pytest

from lookalike.client import NewImage, SearchClient
from lookalike.server.index import store
from lookalike.server.index.build import build_index
from lookalike.server.index.items import ITEMS_FOLDER, ItemColumns, ItemList
from lookalike.server.index.store import MANIFEST, GalleryIndex, InvalidIndexError
from lookalike.v1 import search_pb2, search_pb2_grpc
from tests.imagegen import person_jpeg
from tests.serving import in_process_server


@pytest.fixture
def two_indexes(gallery_dir, embedder, tmp_path, monkeypatch) -> tuple:
    """(gallery root, index with listed items, index with columns) of people 0-3."""
    root = tmp_path / "gallery"
    for person in range(4):
        shutil.copytree(gallery_dir / f"person_{person:02d}", root / f"person_{person:02d}")
    listed, columns = tmp_path / "listed" / "index", tmp_path / "columns" / "index"
    build_index(root, embedder, listed, progress=False)
    monkeypatch.setattr(store, "COLUMN_ROWS", 0)  # every gallery is past it from here on
    build_index(root, embedder, columns, progress=False)
    return root, listed, columns


def answers(client: SearchClient, queries: list[bytes]) -> list[list[tuple]]:
    return [
        [(m.id, m.label, m.path, round(m.distance, 5)) for m in client.search(q, k=20).matches]
        for q in queries
    ]


def test_columns_are_written_past_the_threshold_and_searched_alike(two_indexes, embedder):
    root, listed, columns = two_indexes
    body = json.loads((columns / MANIFEST).read_text())
    assert set(body["items"]) == {"folder", "sha256"} and (columns / ITEMS_FOLDER).is_dir()
    assert isinstance(json.loads((listed / MANIFEST).read_text())["items"], list)
    opened, plain = GalleryIndex.open(columns), GalleryIndex.open(listed)
    assert isinstance(opened.manifest.items, ItemColumns)
    assert isinstance(plain.manifest.items, ItemList)
    assert opened.manifest.items == plain.manifest.items
    queries = [p.read_bytes() for p in sorted(root.glob("person_0[13]/*.jpg"))]
    queries.append(person_jpeg(2, 9))
    with (
        in_process_server(embedder, listed) as a,
        in_process_server(embedder, columns) as b,
        SearchClient(a) as first,
        SearchClient(b) as second,
    ):
        assert answers(first, queries) == answers(second, queries)
        assert first.list_images("person_02") == second.list_images("person_02")
        assert first.list_images() == second.list_images()


def test_erased_faces_stay_gone_through_compaction_and_restart(two_indexes, embedder):
    root, _, index = two_indexes
    person_01 = [p.read_bytes() for p in sorted((root / "person_01").glob("*.jpg"))]
    one_of_2 = sorted((root / "person_02").glob("*.jpg"))[0]
    with in_process_server(embedder, index) as target, SearchClient(target) as client:
        (added,) = client.add_images([NewImage(person_jpeg(9, 1), "new_09", "newcomer")])
        assert client.search(person_jpeg(9, 1), k=1).matches[0].id == added.id
        (by_label,) = client.remove_images(labels=["person_01"])
        assert len(by_label.removed) == 3
        (by_name,) = client.remove_images(ids=[one_of_2.stem])  # the file's external id
        assert [r.path for r in by_name.removed] == [f"person_02/{one_of_2.name}"]
        assert client.list_images("person_01") == [] and len(client.list_images("person_02")) == 2
        assert [e.id for e in client.list_images("new_09")] == [added.id]
        before = answers(client, person_01)
        _, size, folded = client.compact()
        assert (size, folded) == (12 - 4 + 1, 5)
        assert answers(client, person_01) == before
    assert isinstance(GalleryIndex.open(index).manifest.items, ItemColumns)
    with in_process_server(embedder, index) as target, SearchClient(target) as client:
        assert answers(client, person_01) == before
        found = {m.label for q in person_01 for m in client.search(q, k=20).matches}
        assert "person_01" not in found and "new_09" in found
        assert client.remove_images(ids=[one_of_2.stem])[0].result == "not_found"


def test_a_changed_column_is_refused_when_checked(two_indexes):
    _, _, index = two_indexes
    labels = index.resolve() / ITEMS_FOLDER / "labels.json"
    labels.write_text(labels.read_text().replace("person_01", "person_07"))
    with pytest.raises(InvalidIndexError, match="item columns"):
        GalleryIndex.open(index)


def pages(target: str, label: str = "", size: int = 3) -> list[tuple[str, str, bool]]:
    """Every entry of ListImages, ``size`` at a time."""
    stub = search_pb2_grpc.SearchServiceStub(grpc.insecure_channel(target))
    found, token = [], ""
    while True:
        request = search_pb2.ListImagesRequest(label=label, page_size=size, page_token=token)
        response = stub.ListImages(request, timeout=30)
        found += [(entry.id, entry.path, entry.pending) for entry in response.images]
        if not (token := response.next_page_token):
            return found


def test_pages_of_an_appended_gallery_with_changes_list_every_image_once_in_order(
    two_indexes, gallery_dir, embedder
):
    """Appended rows come after the base's in the matrix but in the gallery's order when
    listed; a page starts where the last one ended (a binary search of the columns), and
    the images added and removed since are merged in as with listed items."""
    root, listed, columns = two_indexes
    shutil.copytree(gallery_dir / "person_04", root / "aaa_person")  # listed first
    shutil.copytree(gallery_dir / "person_05", root / "person_025")  # between 02 and 03
    for index in (listed, columns):
        build_index(root, embedder, index, progress=False, append_to=index)
    order = GalleryIndex.open(columns).manifest.items.listing_rows()
    assert list(order) != sorted(order)  # the appended rows are not last in the listing
    listings = []
    for index in (listed, columns):
        with in_process_server(embedder, index) as target, SearchClient(target) as client:
            client.add_images([NewImage(person_jpeg(8, 0), "person_02", "added_02")])
            client.add_images([NewImage(person_jpeg(8, 1), "zzz", "added_z")])
            client.remove_images(labels=["person_01"])
            client.remove_images(ids=[sorted((root / "person_025").glob("*.jpg"))[1].stem])
            listings.append([pages(target, size=size) for size in (1, 3, 100)])
            listings.append([pages(target, "person_02", size) for size in (1, 2)])
    json_pages, json_labelled, column_pages, column_labelled = listings
    assert json_pages == column_pages and json_labelled == column_labelled
    everything = column_pages[2]
    assert len(everything) == len({entry for entry in everything}) == 12 + 6 - 3 - 1 + 2
    assert [path for _, path, _ in everything] == sorted(
        (path for _, path, _ in everything), key=lambda path: path.split("/")
    )
    assert [pending for _, path, pending in everything if "added" in path] == [True, True]
    assert all(pages == everything for pages in column_pages)

"""Galleries indexed by face: one row per detected face, on real LFW group photos."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from lookalike.server.backends.memmap import MemmapBackend
from lookalike.server.index.build import build_index
from lookalike.server.index.gallery import content_id
from lookalike.server.index.store import GalleryIndex, InvalidIndexError, Item
from lookalike.server.vision.imaging import Crop
from lookalike.server.vision.selection import FaceSelection

ALIGN = Crop("align")
EVERY = FaceSelection("all")
# LFW photos where dlib finds two faces (scripts/group_photos.py), and one-face photos
GROUP = [
    "Alejandro_Avila/Alejandro_Avila_0003.jpg",
    "Alistair_MacDonald/Alistair_MacDonald_0001.jpg",
]
SINGLE = ["Alejandro_Avila/Alejandro_Avila_0001.jpg", "Tony_Blair/Tony_Blair_0002.jpg"]


@pytest.fixture
def faces_gallery(lfw_dir, tmp_path):
    root = tmp_path / "gallery"
    for path in GROUP + SINGLE:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(lfw_dir / "images" / path, root / path)
    return root


def test_every_face_has_a_row_with_its_box_and_the_first_is_the_one_face_row(
    faces_gallery, embedder, tmp_path
):
    largest = build_index(faces_gallery, embedder, tmp_path / "one", ALIGN, progress=False)
    every = build_index(
        faces_gallery, embedder, tmp_path / "every", ALIGN, progress=False, faces=EVERY
    )
    assert (largest.rows, every.rows) == (4, 6)
    assert every.faces_per_file == {1: 2, 2: 2} and largest.faces_per_file == {1: 4}
    one, index = GalleryIndex.open(tmp_path / "one"), GalleryIndex.open(tmp_path / "every")
    assert index.manifest.faces == EVERY and one.manifest.faces == FaceSelection()
    items = index.manifest.items
    assert len({item.id for item in items}) == 6
    group_id = content_id((faces_gallery / GROUP[0]).read_bytes())
    faces = [item for item in items if item.file_id == group_id]
    assert [item.id for item in faces] == [f"{group_id}#0", f"{group_id}#1"]
    assert all(item.box and item.path == GROUP[0] for item in faces)
    assert faces[0].box != faces[1].box
    for row, item in enumerate(one.manifest.items):  # face 0: the one-face row, exactly
        assert item.box is None and item.id == item.file_id
        np.testing.assert_array_equal(
            index.features[items.index(faces_of(items, item.id)[0])], one.features[row]
        )


def faces_of(items: list[Item], file_id: str) -> list[Item]:
    return [item for item in items if item.file_id == file_id]


def test_an_index_from_before_faces_opens_as_largest_face(faces_gallery, embedder, tmp_path):
    build_index(faces_gallery, embedder, tmp_path / "old", ALIGN, progress=False)
    manifest = tmp_path / "old" / "manifest.json"
    body = json.loads(manifest.read_text())
    del body["faces"]  # as written before every-face indexing
    manifest.write_text(json.dumps(body))
    index = GalleryIndex.open(tmp_path / "old")
    assert index.manifest.faces == FaceSelection()
    assert all(item.box is None and item.face == 0 for item in index.manifest.items)


def test_an_append_keeps_the_faces_of_its_index(faces_gallery, embedder, tmp_path, lfw_dir):
    build_index(faces_gallery, embedder, tmp_path / "every", ALIGN, progress=False, faces=EVERY)
    extra = "Andre_Agassi/Andre_Agassi_0001.jpg"  # another group photo
    (faces_gallery / extra).parent.mkdir()
    shutil.copyfile(lfw_dir / "images" / extra, faces_gallery / extra)
    with pytest.raises(InvalidIndexError, match="not largest"):
        build_index(
            faces_gallery,
            embedder,
            tmp_path / "more",
            progress=False,
            append_to=tmp_path / "every",
            faces=FaceSelection(),
        )
    report = build_index(
        faces_gallery, embedder, tmp_path / "more", progress=False, append_to=tmp_path / "every"
    )
    assert (report.rows, report.embedded, report.faces) == (8, 2, "all")
    with pytest.raises(InvalidIndexError, match="needs a crop that detects faces"):
        build_index(faces_gallery, embedder, tmp_path / "c", Crop("center"), faces=EVERY)


def test_erasing_a_photo_takes_all_its_faces_and_erasing_a_face_only_that_one(
    faces_gallery, embedder, tmp_path
):
    build_index(faces_gallery, embedder, tmp_path / "every", ALIGN, progress=False, faces=EVERY)
    backend = MemmapBackend(GalleryIndex.open(tmp_path / "every"))
    first, second = (content_id((faces_gallery / path).read_bytes()) for path in GROUP)
    assert [item.id for item in backend.find(first)] == [f"{first}#0", f"{first}#1"]
    assert [item.id for item in backend.find("Alejandro_Avila_0003")] == [
        f"{first}#0",
        f"{first}#1",
    ]
    gone = backend.remove([item.id for item in backend.find(first)])
    assert len(gone) == 2 and backend.find(first) == []
    gone = backend.remove([f"{second}#1"])
    assert [item.id for item in gone] == [f"{second}#1"]
    assert [item.id for item in backend.find(second)] == [f"{second}#0"]
    assert len(backend) == 3
    old, new, folded = backend.compact()
    assert folded == 3 and old != new
    index = GalleryIndex.open(tmp_path / "every")
    assert [item.id for item in index.manifest.items if item.file_id == second] == [f"{second}#0"]
    assert all(item.box for item in index.manifest.items) and len(index) == 3


def test_added_faces_keep_their_boxes_through_the_journal_and_compaction(
    faces_gallery, embedder, tmp_path
):
    build_index(faces_gallery, embedder, tmp_path / "every", ALIGN, progress=False, faces=EVERY)
    backend = MemmapBackend(GalleryIndex.open(tmp_path / "every"))
    vector = np.ones(embedder.info.embedding_size, np.float32)
    face = Item("0123456789abcdef#2", "Someone", "Someone/x.jpg", box=(1, 2, 30, 40))
    assert backend.add(face, vector) is None
    backend.close()
    again = MemmapBackend(GalleryIndex.open(tmp_path / "every"))  # replayed from the journal
    assert again.find("0123456789abcdef") == [face]
    again.compact()
    compacted = GalleryIndex.open(tmp_path / "every")
    assert [item for item in compacted.manifest.items if item.file_id == face.file_id] == [face]


def test_milvus_rows_carry_faces_and_boxes(faces_gallery, embedder, tmp_path):
    from lookalike.server.backends.milvus import MilvusBackend, MilvusTarget, load_index

    build_index(faces_gallery, embedder, tmp_path / "every", ALIGN, progress=False, faces=EVERY)
    index = GalleryIndex.open(tmp_path / "every")
    target = MilvusTarget(str(tmp_path / "milvus.db"), "faces")
    assert load_index(index, target, progress=False).rows == 6
    backend = MilvusBackend.open(target)
    assert backend.info.faces == EVERY
    first = content_id((faces_gallery / GROUP[0]).read_bytes())
    held = backend.find(first)
    assert held == faces_of(index.manifest.items, first) and all(item.box for item in held)
    assert [item.id for item in backend.remove([f"{first}#1"])] == [f"{first}#1"]
    assert [item.id for item in backend.find(first)] == [f"{first}#0"]
    hits = backend.search(np.asarray(index.features[:1]), 1)[0]
    assert hits[0].item == index.manifest.items[0]  # with its box


def test_a_face_thumbnail_shows_its_box_on_the_photo(faces_gallery, embedder, tmp_path):
    import io

    from PIL import Image

    from lookalike.server.online.thumbnails import thumbnail_or_note

    build_index(faces_gallery, embedder, tmp_path / "every", ALIGN, progress=False, faces=EVERY)
    items = GalleryIndex.open(tmp_path / "every").manifest.items
    second = next(item for item in items if item.face == 1)
    left, top, right, bottom = second.box

    def edge_pixels(item: Item) -> int:
        jpeg, note = thumbnail_or_note(faces_gallery, item, 150, 10_000_000)
        assert note == ""
        pixels = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), np.int32)
        edge = pixels[(top + bottom) // 2, left : left + 2]  # the box's left edge, 2 px
        return np.abs(edge - np.array([255, 0, 255])).max(axis=1).min()  # nearest magenta

    assert edge_pixels(second) < 40
    plain = Item(second.id, second.label, second.path)  # the same photo, one-face row
    assert edge_pixels(plain) > 100


def test_an_every_face_build_resumes_only_as_every_face(faces_gallery, embedder, tmp_path):
    broken = faces_gallery / "Tony_Blair" / "broken.jpg"
    broken.write_bytes(b"not a jpeg")  # 1 of 5 files: over the 5% a build may skip
    out = tmp_path / "every"
    with pytest.raises(InvalidIndexError, match="could not be read"):
        build_index(faces_gallery, embedder, out, ALIGN, progress=False, faces=EVERY)
    broken.unlink()
    with pytest.raises(InvalidIndexError, match="--resume continues only the same build.*faces"):
        build_index(faces_gallery, embedder, out, ALIGN, progress=False, resume=True)
    report = build_index(
        faces_gallery, embedder, out, ALIGN, progress=False, resume=True, faces=EVERY
    )
    assert (report.rows, report.embedded) == (6, 0)
    assert all(item.box for item in GalleryIndex.open(out).manifest.items)

"""A live server on a gallery indexed by face: listing face rows, erasing a photo or a face."""

from __future__ import annotations

import shutil

import grpc
import pytest

from lookalike.server.index.build import build_index
from lookalike.server.index.gallery import content_id
from lookalike.server.vision.imaging import Crop
from lookalike.server.vision.selection import FaceSelection
from lookalike.v1 import search_pb2, search_pb2_grpc
from tests.serving import in_process_server

GROUP = [
    "Alejandro_Avila/Alejandro_Avila_0003.jpg",
    "Alistair_MacDonald/Alistair_MacDonald_0001.jpg",
]
SINGLE = ["Alejandro_Avila/Alejandro_Avila_0001.jpg", "Tony_Blair/Tony_Blair_0002.jpg"]
REMOVED = search_pb2.ChangeResult.REMOVED


@pytest.fixture
def face_gallery(lfw_dir, embedder, tmp_path):
    root = tmp_path / "gallery"
    for path in GROUP + SINGLE:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(lfw_dir / "images" / path, root / path)
    build_index(
        root,
        embedder,
        tmp_path / "index",
        Crop("align"),
        progress=False,
        faces=FaceSelection("all"),
    )
    return root, tmp_path / "index"


def listed(stub) -> list[search_pb2.GalleryEntry]:
    """Every entry, a page of one at a time: the page token must step over faces of a photo."""
    entries, token = [], ""
    while True:
        page = stub.ListImages(search_pb2.ListImagesRequest(page_size=1, page_token=token))
        entries += page.images
        if not (token := page.next_page_token):
            return entries


def test_face_rows_are_listed_with_boxes_and_erased_by_photo_or_by_face(embedder, face_gallery):
    root, index = face_gallery
    first, second = (content_id((root / path).read_bytes()) for path in GROUP)
    with in_process_server(embedder, index) as target, grpc.insecure_channel(target) as channel:
        stub = search_pb2_grpc.SearchServiceStub(channel)
        entries = listed(stub)
        assert len(entries) == 6 and len({entry.id for entry in entries}) == 6
        assert all(entry.HasField("face_box") for entry in entries)
        assert [e.id for e in entries if e.path == GROUP[0]] == [f"{first}#0", f"{first}#1"]

        photo = stub.RemoveImages(search_pb2.RemoveImagesRequest(ids=[first]))
        assert photo.results[0].result == REMOVED
        assert sorted(r.id for r in photo.results[0].removed) == [f"{first}#0", f"{first}#1"]
        face = stub.RemoveImages(search_pb2.RemoveImagesRequest(ids=[f"{second}#1"]))
        assert [r.id for r in face.results[0].removed] == [f"{second}#1"]
        assert face.gallery_size == 3
        assert [e.id for e in listed(stub) if e.path == GROUP[1]] == [f"{second}#0"]
        by_bytes = stub.RemoveImages(
            search_pb2.RemoveImagesRequest(images=[(root / GROUP[1]).read_bytes()])
        )
        assert [r.id for r in by_bytes.results[0].removed] == [f"{second}#0"]


def test_deleting_one_face_keeps_the_photo_file_for_its_other_faces(embedder, face_gallery):
    root, index = face_gallery
    photo = content_id((root / GROUP[0]).read_bytes())
    with in_process_server(embedder, index) as target, grpc.insecure_channel(target) as channel:
        stub = search_pb2_grpc.SearchServiceStub(channel)
        one = stub.RemoveImages(
            search_pb2.RemoveImagesRequest(ids=[f"{photo}#1"], delete_files=True)
        )
        assert [(r.id, r.file_deleted) for r in one.results[0].removed] == [(f"{photo}#1", False)]
        assert (root / GROUP[0]).is_file()  # face 0 is still indexed from it
        rest = stub.RemoveImages(search_pb2.RemoveImagesRequest(ids=[photo], delete_files=True))
        assert [(r.id, r.file_deleted) for r in rest.results[0].removed] == [(f"{photo}#0", True)]
        assert not (root / GROUP[0]).exists()


def test_a_live_server_reloads_from_one_face_to_every_face(embedder, face_gallery, tmp_path):
    root, _ = face_gallery
    served = tmp_path / "served"
    build_index(root, embedder, served, Crop("align"), progress=False)  # one face a photo
    with in_process_server(embedder, served) as target, grpc.insecure_channel(target) as channel:
        stub = search_pb2_grpc.SearchServiceStub(channel)
        assert not any(entry.HasField("face_box") for entry in listed(stub))
        assert stub.GetInfo(search_pb2.GetInfoRequest()).gallery_faces == "largest"
        build_index(
            root, embedder, served, Crop("align"), progress=False, faces=FaceSelection("all")
        )
        reloaded = stub.ReloadIndex(search_pb2.ReloadIndexRequest())
        assert reloaded.gallery_size == 6
        assert all(entry.HasField("face_box") for entry in listed(stub))
        assert stub.GetInfo(search_pb2.GetInfoRequest()).gallery_faces == "all"


def test_add_images_to_a_gallery_indexed_by_face_adds_every_face(lfw_dir, embedder, face_gallery):
    _, index = face_gallery
    data = (lfw_dir / "images" / "Andre_Agassi" / "Andre_Agassi_0001.jpg").read_bytes()
    photo = content_id(data)
    new = search_pb2.NewImage(image=data, label="Andre_Agassi")
    with in_process_server(embedder, index) as target, grpc.insecure_channel(target) as channel:
        stub = search_pb2_grpc.SearchServiceStub(channel)
        (added,) = stub.AddImages(search_pb2.AddImagesRequest(images=[new])).results
        assert added.result == search_pb2.ChangeResult.ADDED and added.id == photo
        assert [face.id for face in added.faces] == [f"{photo}#0", f"{photo}#1"]
        assert all(face.box.right > face.box.left for face in added.faces)
        (again,) = stub.AddImages(search_pb2.AddImagesRequest(images=[new])).results
        assert again.result == search_pb2.ChangeResult.ALREADY_PRESENT
        assert [face.id for face in again.faces] == [f"{photo}#0", f"{photo}#1"]
        every = search_pb2.FaceSelection(mode=search_pb2.FACE_MODE_ALL)
        found = stub.Search(search_pb2.SearchRequest(image=data, k=1, faces=every))
        assert [face.matches[0].id for face in found.faces] == [f"{photo}#0", f"{photo}#1"]
        assert [face.matches[0].face_box for face in found.faces] == [f.box for f in added.faces]
        for mode, code in (
            (search_pb2.FACE_MODE_LARGEST, grpc.StatusCode.FAILED_PRECONDITION),
            (search_pb2.FACE_MODE_POINT, grpc.StatusCode.INVALID_ARGUMENT),
        ):
            with pytest.raises(grpc.RpcError) as error:
                stub.AddImages(search_pb2.AddImagesRequest(images=[new], faces=mode))
            assert error.value.code() == code, error.value.details()

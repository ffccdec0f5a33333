"""Search of several faces on a real server: dlib's face network, real LFW photos."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path

import grpc
import pytest
from PIL import Image

from lookalike.client import AsyncSearchClient, Box, SearchClient, SearchResult
from lookalike.client.cli import main
from lookalike.server.vision.align import detect_faces
from lookalike.server.vision.embedder import Embedder
from lookalike.v1 import search_pb2, search_pb2_grpc
from tests.face_galleries import both_indexes
from tests.imagegen import encode, noise_image
from tests.models.test_every_face import LEFT, RIGHT, side_by_side
from tests.old_contract import OLD_CONTRACT, old_messages
from tests.serving import running_server

SAME_PERSON = 0.6722  # the face network's operating point (docs/RESULTS.md, issue #24)
GALLERY = [
    "Zarai_Toledo/Zarai_Toledo_0001.jpg",  # she is face 1, behind a larger face
    "Orlando_Bloom/Orlando_Bloom_0001.jpg",  # Keira Knightley is face 1, at the edge
    "Orlando_Bloom/Orlando_Bloom_0002.jpg",
    "Tony_Blair/Tony_Blair_0002.jpg",
    "Tony_Blair/Tony_Blair_0003.jpg",
    "Colin_Powell/Colin_Powell_0002.jpg",
    "Colin_Powell/Colin_Powell_0003.jpg",
]
ALL = search_pb2.FaceSelection(mode=search_pb2.FACE_MODE_ALL)


@pytest.fixture(scope="module")
def face_embedder(face_model):
    return Embedder(face_model, device="cpu")


@pytest.fixture(scope="module")
def galleries(lfw_dir, face_embedder, tmp_path_factory):
    """The same photos indexed by largest face and by every face."""
    _, largest, every = both_indexes(lfw_dir, GALLERY, face_embedder, tmp_path_factory.mktemp("f"))
    return largest, every


@pytest.fixture(scope="module")
def pair(lfw_dir) -> tuple[bytes, list]:
    """Tony Blair beside a smaller Colin Powell, as a JPEG, and the faces dlib finds."""
    frame = side_by_side(lfw_dir, LEFT, RIGHT, right_scale=0.8)
    return encode(frame, "JPEG", quality=95), detect_faces(frame, limit=10)


def search(target: str, **fields) -> search_pb2.SearchResponse:
    with grpc.insecure_channel(target) as channel:
        stub = search_pb2_grpc.SearchServiceStub(channel)
        return stub.Search(search_pb2.SearchRequest(**fields), timeout=60)


def box_of(face: search_pb2.Box) -> tuple[int, int, int, int]:
    return face.left, face.top, face.right, face.bottom


def test_a_group_photo_query_gets_one_result_per_face_with_its_box(face_embedder, galleries, pair):
    largest, _ = galleries
    data, detected = pair
    with running_server(face_embedder, largest) as server:
        answer = search(f"127.0.0.1:{server.port}", image=data, k=3, faces=ALL)
        faces_seen = server.telemetry.registry.get_sample_value("lookalike_search_faces_sum")
    assert [face.number for face in answer.faces] == [0, 1]
    expected = [tuple(round(v) for v in face.box) for face in detected]
    assert [box_of(face.box) for face in answer.faces] == expected
    assert all(face.score > 0 and not face.crop_note for face in answer.faces)
    assert [face.matches[0].label for face in answer.faces] == ["Tony_Blair", "Colin_Powell"]
    assert answer.matches == answer.faces[0].matches  # old fields: the first face
    assert answer.query_crop == answer.faces[0].query_crop
    assert faces_seen == 2


def test_a_person_is_found_in_a_gallery_photo_where_they_are_not_the_largest_face(
    lfw_dir, face_embedder, galleries
):
    largest, every = galleries
    data = (lfw_dir / "images" / "Keira_Knightley" / "Keira_Knightley_0001.jpg").read_bytes()
    fields = {"image": data, "k": 3, "max_distance": SAME_PERSON}
    with running_server(face_embedder, every) as server:
        found = search(f"127.0.0.1:{server.port}", thumbnails=True, **fields).matches
    assert found[0].path == "Orlando_Bloom/Orlando_Bloom_0001.jpg"
    assert found[0].id.endswith("#1") and found[0].HasField("face_box")
    assert found[0].face_box.left == 0  # the face at the photo's left edge
    assert found[0].thumbnail_jpeg and not found[0].note
    with running_server(face_embedder, largest) as server:
        missed = search(f"127.0.0.1:{server.port}", **fields).matches
    assert "Orlando_Bloom/Orlando_Bloom_0001.jpg" not in {m.path for m in missed}


def test_an_old_client_gets_the_answer_it_always_did(face_embedder, galleries, pair, tmp_path):
    largest, _ = galleries
    data, _ = pair
    old = old_messages(tmp_path)
    with running_server(face_embedder, largest) as server:
        target = f"127.0.0.1:{server.port}"
        with grpc.insecure_channel(target) as channel:
            old_search = channel.unary_unary(
                "/lookalike.v1.SearchService/Search",
                request_serializer=old["SearchRequest"].SerializeToString,
                response_deserializer=old["SearchResponse"].FromString,
            )
            answer = old_search(old["SearchRequest"](image=data, k=4), timeout=60)
        new = search(target, image=data, k=4)
    assert [(m.id, m.label, m.rank) for m in answer.matches] == [
        (m.id, m.label, m.rank) for m in new.matches
    ]
    assert [m.distance for m in answer.matches] == [m.distance for m in new.matches]
    assert len(new.faces) == 1 and new.faces[0].number == 0  # the largest face alone
    assert answer.matches[0].label == "Tony_Blair"
    assert (answer.query_crop.left, answer.query_crop.right) == (
        new.query_crop.left,
        new.query_crop.right,
    )


def test_limits_and_photos_without_a_face(face_embedder, galleries, pair):
    largest, _ = galleries
    data, _ = pair
    noise = encode(noise_image((200, 200)), "PNG")
    with running_server(face_embedder, largest, max_query_faces=1) as server:
        target = f"127.0.0.1:{server.port}"
        assert len(search(target, image=data, k=1, faces=ALL).faces) == 1  # the server's most
        fallback = search(target, image=noise, k=1)  # today's fallback, with its note
        assert fallback.crop_note and fallback.faces[0].crop_note == fallback.crop_note
        for fields, code in (
            ({"image": noise, "faces_only": True}, grpc.StatusCode.NOT_FOUND),
            ({"image": noise, "faces": ALL, "faces_only": True}, grpc.StatusCode.NOT_FOUND),
            (
                {"image": data, "faces": search_pb2.FaceSelection(mode=4, limit=-2)},
                grpc.StatusCode.INVALID_ARGUMENT,
            ),
            (
                {
                    "image": data,
                    "faces": search_pb2.FaceSelection(
                        mode=search_pb2.FACE_MODE_POINT, point=search_pb2.Point(x=5000, y=1)
                    ),
                },
                grpc.StatusCode.INVALID_ARGUMENT,
            ),
        ):
            with pytest.raises(grpc.RpcError) as error:
                search(target, k=1, **fields)
            assert error.value.code() == code, error.value.details()
            assert error.value.details()


def test_a_face_chosen_by_point(face_embedder, galleries, pair):
    largest, _ = galleries
    data, detected = pair
    left, top, right, bottom = detected[1].box
    point = search_pb2.Point(x=round((left + right) / 2), y=round((top + bottom) / 2))
    chosen = search_pb2.FaceSelection(mode=search_pb2.FACE_MODE_POINT, point=point)
    with running_server(face_embedder, largest) as server:
        answer = search(f"127.0.0.1:{server.port}", image=data, k=1, faces=chosen)
    assert [face.number for face in answer.faces] == [1]
    assert answer.matches[0].label == "Colin_Powell"


def test_the_clients_and_the_command_return_one_result_per_face(
    face_embedder, galleries, pair, tmp_path, capsys
):
    largest, _ = galleries
    data, detected = pair
    expected = [Box(*(round(v) for v in face.box)) for face in detected]
    photo = tmp_path / "pair.jpg"
    photo.write_bytes(data)
    with running_server(face_embedder, largest) as server:
        target = f"127.0.0.1:{server.port}"
        with SearchClient(target) as client:
            result = client.search(photo, k=2, faces="all")
            one = client.search(photo, k=2, faces=(expected[1].left + 5, expected[1].top + 5))

        async def search_async() -> SearchResult:
            async with AsyncSearchClient(target) as client:
                return await client.search(data, k=2, faces="all", thumbnails=True)

        found = asyncio.run(search_async())
        common = ["search", str(photo), "--server", target, "-k", "2", "--faces", "all"]
        assert main([*common, "--json"]) == 0
        printed = json.loads(capsys.readouterr().out)
        sheet = tmp_path / "sheet.png"
        assert main([*common, "--sheet", str(sheet), "--label", "Tony_Blair"]) == 0
        table = capsys.readouterr().out
    assert [face.box for face in result.faces] == expected == [f.box for f in found.faces]
    assert [face.matches[0].label for face in found.faces] == ["Tony_Blair", "Colin_Powell"]
    assert all(m.thumbnail for face in found.faces for m in face.matches)
    assert result.matches == result.faces[0].matches
    assert [face.number for face in one.faces] == [1]
    assert [face["number"] for face in printed["faces"]] == [0, 1]
    assert printed["faces"][1]["matches"][0]["label"] == "Colin_Powell"
    assert table.count("face 0 at") == 1 and table.count("face 1 at") == 1
    assert Image.open(sheet).size[1] > 2 * 160 + 2 * (160 + 40)  # the query, then two rows


def grpc_js() -> Path:
    """Where @grpc/grpc-js and @grpc/proto-loader are installed (LOOKALIKE_GRPC_JS, a
    node_modules folder); the test skips without them and node."""
    folder = Path(os.environ.get("LOOKALIKE_GRPC_JS", "node_modules"))
    if not shutil.which("node") or not (folder / "@grpc" / "grpc-js").is_dir():
        pytest.skip("node and @grpc/grpc-js not found (set LOOKALIKE_GRPC_JS=.../node_modules)")
    return folder


def test_grpc_js_clients_old_and_new_read_their_fields(face_embedder, galleries, pair, tmp_path):
    modules = grpc_js()
    largest, _ = galleries
    data, detected = pair
    photo = tmp_path / "pair.jpg"
    photo.write_bytes(data)
    proto = Path(__file__).resolve().parents[2] / "proto" / "lookalike" / "v1" / "search.proto"
    old_proto = tmp_path / "old.proto"  # the contract a JavaScript backend was built on
    old_proto.write_text(OLD_CONTRACT)
    script = Path(__file__).with_name("grpc_js_search.js")
    with running_server(face_embedder, largest) as server:
        target = f"127.0.0.1:{server.port}"
        answers = [
            json.loads(
                subprocess.run(
                    ["node", str(script), str(contract), target, str(photo), *extra],
                    capture_output=True,
                    text=True,
                    check=True,
                    timeout=120,
                    env={**os.environ, "NODE_PATH": str(modules)},
                ).stdout
            )
            for contract, extra in ((old_proto, []), (proto, ["all"]))
        ]
    plain, every = answers
    assert [m["label"] for m in plain["matches"]] == ["Tony_Blair", "Tony_Blair"]
    assert "faces" not in plain  # a field the old contract does not know
    assert [face["number"] for face in every["faces"]] == [0, 1]
    assert every["faces"][1]["matches"][0]["label"] == "Colin_Powell"
    boxes = [
        tuple(face["box"][side] for side in ("left", "top", "right", "bottom"))
        for face in every["faces"]
    ]
    assert boxes == [tuple(round(v) for v in face.box) for face in detected]


def test_a_milvus_gallery_indexed_by_face_answers_with_face_boxes(
    lfw_dir, face_embedder, galleries, tmp_path
):
    from lookalike.server.backends.milvus import MilvusTarget, load_index
    from lookalike.server.index.store import GalleryIndex

    _, every = galleries
    uri = str(tmp_path / "faces.db")
    load_index(GalleryIndex.open(every), MilvusTarget(uri, "faces"), progress=False)
    data = (lfw_dir / "images" / "Keira_Knightley" / "Keira_Knightley_0001.jpg").read_bytes()
    settings = {"backend": "milvus", "milvus_uri": uri, "collection": "faces"}
    with running_server(face_embedder, None, **settings) as server:
        found = search(f"127.0.0.1:{server.port}", image=data, k=1, max_distance=SAME_PERSON)
    assert found.matches[0].path == "Orlando_Bloom/Orlando_Bloom_0001.jpg"
    assert found.matches[0].id.endswith("#1") and found.matches[0].face_box.left == 0

"""SearchRequest.faces read into the faces a Search embeds, on real LFW photos."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from lookalike.server.online.errors import Refused
from lookalike.server.online.query_faces import NO_FACE, NOT_AT_BOX, NOT_AT_POINT, query_faces
from lookalike.server.vision.imaging import Crop, prepare
from lookalike.v1 import search_pb2
from tests.imagegen import noise_image
from tests.models.test_every_face import LEFT, RIGHT, side_by_side

ALIGN = Crop("align")
Mode = search_pb2.FaceMode


def ask(mode=0, faces_only=False, **selection) -> search_pb2.SearchRequest:
    return search_pb2.SearchRequest(
        faces=search_pb2.FaceSelection(mode=mode, **selection), faces_only=faces_only
    )


@pytest.fixture(scope="module")
def pair(lfw_dir):
    """Tony Blair on the left (the larger face), Colin Powell on the right."""
    return side_by_side(lfw_dir, LEFT, RIGHT, right_scale=0.8)


def test_a_request_without_faces_gets_the_largest_face_as_before(pair):
    (face,) = query_faces(pair, ALIGN, 64, search_pb2.SearchRequest(), most=5)
    before = prepare(pair, ALIGN, 64)
    assert face.number == 0 and face.prepared.box == before.box
    np.testing.assert_array_equal(face.prepared.pixels, before.pixels)


def test_every_face_numbered_largest_first_and_limited(pair):
    faces = query_faces(pair, ALIGN, 64, ask(Mode.FACE_MODE_ALL), most=5)
    assert [face.number for face in faces] == [0, 1]
    assert faces[0].prepared.face[2] <= 155 <= faces[1].prepared.face[0] + 5
    assert len(query_faces(pair, ALIGN, 64, ask(Mode.FACE_MODE_ALL, limit=1), most=5)) == 1
    assert len(query_faces(pair, ALIGN, 64, ask(Mode.FACE_MODE_ALL, limit=9), most=1)) == 1


def test_a_face_chosen_by_point_or_box(pair):
    right = query_faces(pair, ALIGN, 64, ask(Mode.FACE_MODE_ALL), most=5)[1].prepared.face
    centre = search_pb2.Point(x=(right[0] + right[2]) // 2, y=(right[1] + right[3]) // 2)
    (by_point,) = query_faces(pair, ALIGN, 64, ask(Mode.FACE_MODE_POINT, point=centre), most=5)
    assert (by_point.number, by_point.prepared.face) == (1, right)
    box = search_pb2.Box(left=right[0] - 4, top=right[1], right=right[2], bottom=right[3] + 4)
    (by_box,) = query_faces(pair, ALIGN, 64, ask(Mode.FACE_MODE_BOX, box=box), most=5)
    assert (by_box.number, by_box.prepared.face) == (1, right)


def test_no_face_there_falls_back_with_a_note_or_is_not_found(pair):
    corner = search_pb2.Point(x=2, y=2)
    (face,) = query_faces(pair, ALIGN, 64, ask(Mode.FACE_MODE_POINT, point=corner), most=5)
    assert face.prepared.note == NOT_AT_POINT
    empty = search_pb2.Box(left=0, top=0, right=30, bottom=30)
    (face,) = query_faces(pair, ALIGN, 64, ask(Mode.FACE_MODE_BOX, box=empty), most=5)
    assert face.prepared.note == NOT_AT_BOX and face.prepared.face == (0, 0, 30, 30)
    for request in (
        ask(Mode.FACE_MODE_POINT, faces_only=True, point=corner),
        ask(Mode.FACE_MODE_BOX, faces_only=True, box=empty),
    ):
        with pytest.raises(Refused) as refused:
            query_faces(pair, ALIGN, 64, request, most=5)
        assert refused.value.code == grpc.StatusCode.NOT_FOUND


def test_a_photo_without_a_face(pair):
    noise = noise_image((200, 200))
    (face,) = query_faces(noise, ALIGN, 64, search_pb2.SearchRequest(), most=5)
    assert face.prepared.note  # today's fallback, with its note
    for mode in (0, Mode.FACE_MODE_ALL):
        with pytest.raises(Refused, match=NO_FACE) as refused:
            query_faces(noise, ALIGN, 64, ask(mode, faces_only=True), most=5)
        assert refused.value.code == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("request_", "crop", "message"),
    [
        (ask(Mode.FACE_MODE_ALL, limit=-1), ALIGN, "cannot be negative"),
        (
            ask(Mode.FACE_MODE_BOX, box=search_pb2.Box(left=10, right=5, bottom=9)),
            ALIGN,
            "covers none",
        ),
        (
            ask(Mode.FACE_MODE_BOX, box=search_pb2.Box(left=900, right=990, bottom=9)),
            ALIGN,
            "covers none",
        ),
        (ask(Mode.FACE_MODE_POINT, point=search_pb2.Point(x=-1, y=3)), ALIGN, "outside"),
        (ask(Mode.FACE_MODE_ALL), Crop("center"), "finds no faces"),
        (ask(17), ALIGN, "unknown face mode"),
    ],
)
def test_requests_that_cannot_be_right_are_invalid(pair, request_, crop, message):
    with pytest.raises(Refused, match=message) as refused:
        query_faces(pair, crop, 64, request_, most=5)
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT

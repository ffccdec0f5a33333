"""The every-face fields keep the contract backwards compatible, and each is documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lookalike.v1 import search_pb2
from tests.old_contract import old_messages

ROOT = Path(__file__).resolve().parents[2]
NEW_FIELDS = {
    "SearchRequest": ["faces", "faces_only"],
    "FaceSelection": ["mode", "box", "point", "limit"],
    "Match": ["face_box"],
    "SearchResponse": ["faces"],
    "FaceResult": ["number", "box", "score", "query_crop", "crop_note", "matches"],
    "AddImagesRequest": ["faces"],
    "AddResult": ["faces"],
    "GalleryFace": ["id", "box"],
    "RemoveImagesRequest": ["ids"],
    "GalleryEntry": ["face_box"],
    "GetInfoResponse": ["gallery_faces"],
}


@pytest.fixture(scope="module")
def old(tmp_path_factory):
    return old_messages(tmp_path_factory.mktemp("old-contract"))


def test_an_old_request_asks_for_the_largest_face_with_the_fallback(old):
    sent = old["SearchRequest"](image=b"jpeg", k=3, max_distance=0.6).SerializeToString()
    request = search_pb2.SearchRequest.FromString(sent)
    assert not request.HasField("faces")
    assert request.faces.mode == search_pb2.FACE_MODE_UNSPECIFIED
    assert not request.faces_only and request.k == 3


def test_an_old_client_reads_the_first_face_from_the_top_level_fields(old):
    first = [search_pb2.Match(rank=1, id="a1b2#1", label="Zarai_Toledo", distance=0.53)]
    response = search_pb2.SearchResponse(
        matches=first,
        query_crop=search_pb2.CropBox(left=1, top=2, right=50, bottom=60),
        faces=[
            search_pb2.FaceResult(number=0, matches=first, box=search_pb2.Box(right=40)),
            search_pb2.FaceResult(number=1, matches=[search_pb2.Match(rank=1, id="c3")]),
        ],
    )
    response.matches[0].face_box.right = 30
    seen = old["SearchResponse"].FromString(response.SerializeToString())
    assert [(m.id, m.label, m.rank) for m in seen.matches] == [("a1b2#1", "Zarai_Toledo", 1)]
    assert seen.query_crop.right == 50


def test_every_new_field_is_documented_in_the_proto():
    text = (ROOT / "proto" / "lookalike" / "v1" / "search.proto").read_text()
    for message, names in NEW_FIELDS.items():
        body = re.search(rf"\nmessage {message} {{\n(.*?)\n}}", text, re.S)
        assert body, message
        lines = body.group(1).split("\n")
        for name in names:
            (at,) = [
                n
                for n, line in enumerate(lines)
                if re.match(rf"\s+(repeated )?\S+ {name} = \d+;", line)
            ]
            documented = at > 0 and lines[at - 1].strip().startswith("//")
            assert documented, f"{message}.{name} has no comment"
    for value in ("UNSPECIFIED", "LARGEST", "BOX", "POINT", "ALL"):
        assert re.search(rf"//[^\n]*\n\s+FACE_MODE_{value} = \d;", text), value

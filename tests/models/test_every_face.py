"""Every face of a photo: dlib's and OpenCV's detectors on real LFW faces, side by side."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lookalike.server.vision import align
from lookalike.server.vision.faces import every_face, largest_face
from lookalike.server.vision.imaging import Crop, prepare
from lookalike.server.vision.selection import (
    FaceSelection,
    face_at_point,
    face_in_box,
    prepare_faces,
)
from tests.imagegen import noise_image

LEFT, RIGHT = "Tony_Blair/Tony_Blair_0010.jpg", "Colin_Powell/Colin_Powell_0001.jpg"


def side_by_side(lfw_dir, left: str, right: str, right_scale: float = 1.0) -> Image.Image:
    """Two LFW photos pasted into one frame (the right one shrunk by ``right_scale``): a
    group photo whose faces are known to lie one in each half."""
    first = Image.open(lfw_dir / "images" / left).convert("RGB")
    second = Image.open(lfw_dir / "images" / right).convert("RGB")
    second = second.resize((round(second.width * right_scale),) * 2, Image.Resampling.BICUBIC)
    frame = Image.new("RGB", (first.width + second.width, first.height), (128, 128, 128))
    frame.paste(first, (0, 0))
    frame.paste(second, (first.width, (first.height - second.height) // 2))
    return frame


def test_every_face_of_a_pasted_pair_is_found_largest_first(lfw_dir):
    frame = side_by_side(lfw_dir, LEFT, RIGHT, right_scale=0.8)
    faces = align.detect_faces(frame, limit=10)
    assert len(faces) == 2 and all(face.note == "" and face.score > 0 for face in faces)
    (first, second) = (face.box for face in faces)
    assert first[2] <= 150 + 5 and second[0] >= 150 - 5  # one face in each half
    assert (first[2] - first[0]) > (second[2] - second[0])  # largest first
    assert faces[0].box == align.find_face(frame)[0]  # the one-face mode's face


def test_all_faces_start_with_the_largest_face_chip_unchanged(lfw_dir):
    frame = side_by_side(lfw_dir, RIGHT, LEFT, right_scale=0.7)
    faces = prepare_faces(frame, Crop("align"), 112, FaceSelection("all"))
    largest = prepare(frame, Crop("align"), 112)
    assert len(faces) == 2
    np.testing.assert_array_equal(faces[0].pixels, largest.pixels)
    assert faces[0].box == largest.box
    assert faces[1].face[0] >= 145  # the smaller face, on the right
    only = prepare_faces(frame, Crop("align"), 112)
    assert len(only) == 1 and only[0].face == faces[0].face and only[0].score == faces[0].score


def test_limit_and_smallest_face(lfw_dir):
    frame = side_by_side(lfw_dir, LEFT, RIGHT, right_scale=0.5)
    assert len(prepare_faces(frame, Crop("align"), 64, FaceSelection("all", limit=1))) == 1
    both = prepare_faces(frame, Crop("align"), 64, FaceSelection("all", min_size=10))
    assert len(both) == 2
    small_side = min(both[1].face[2] - both[1].face[0], both[1].face[3] - both[1].face[1])
    tight = FaceSelection("all", min_size=small_side + 1)
    assert len(prepare_faces(frame, Crop("align"), 64, tight)) == 1


def test_a_photo_without_a_face_still_gives_one_region_with_its_note():
    faces = prepare_faces(noise_image((300, 200)), Crop("align"), 64, FaceSelection("all"))
    assert len(faces) == 1
    assert faces[0].note in (align.NO_FACE_NOTE, align.NO_DLIB_FACE_NOTE)


def test_every_face_needs_a_detecting_crop():
    image = Image.new("RGB", (64, 64))
    for mode in ("none", "center"):
        with pytest.raises(ValueError, match="needs a crop that detects faces"):
            prepare_faces(image, Crop(mode), 64, FaceSelection("all"))
    with pytest.raises(ValueError, match="faces must be one of"):
        FaceSelection("some")  # type: ignore[arg-type]
    assert FaceSelection.from_dict(None) == FaceSelection()  # an old manifest: largest
    selection = FaceSelection("all", limit=3, min_size=40)
    assert FaceSelection.from_dict(selection.to_dict()) == selection


def test_the_cascade_finds_both_faces_too(lfw_dir):
    frame = side_by_side(lfw_dir, LEFT, RIGHT, right_scale=0.8)
    faces = every_face(frame, limit=10)
    assert len(faces) == 2 and faces[0][0] == largest_face(frame)
    assert faces[1][0][0] >= 140 and faces[0][1] > 0
    prepared = prepare_faces(frame, Crop("detect"), 64, FaceSelection("all"))
    assert [face.box for face in prepared] == [box for box, _ in faces]


def test_a_face_is_chosen_by_a_point_or_a_box(lfw_dir):
    frame = side_by_side(lfw_dir, LEFT, RIGHT, right_scale=0.8)
    faces = prepare_faces(frame, Crop("align"), 64, FaceSelection("all"))
    right = faces[1].face
    centre = ((right[0] + right[2]) / 2, (right[1] + right[3]) / 2)
    assert face_at_point(faces, *centre) == 1
    assert face_at_point(faces, 1, 1) is None
    assert face_in_box(faces, (right[0] - 5, right[1] - 5, right[2] + 5, right[3] + 5)) == 1
    assert face_in_box(faces, (0, 0, 5, 5)) is None

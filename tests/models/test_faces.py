"""--crop detect: a real face detector on real faces, and its fallback."""

from __future__ import annotations

from PIL import Image

from lookalike.server.vision.imaging import NO_FACE_NOTE, Crop, load
from tests.imagegen import encode, noise_image


def test_detect_finds_the_face_in_lfw_images(lfw_dir):
    """LFW centres each face; the detected box must sit around the centre, inside the frame."""
    for person in ("Tony_Blair/Tony_Blair_0010.jpg", "Colin_Powell/Colin_Powell_0001.jpg"):
        data = (lfw_dir / "images" / person).read_bytes()
        prepared = load(data, Crop("detect"), 64)
        left, top, right, bottom = prepared.box
        width, height = prepared.original_size
        assert prepared.note == ""
        assert 0 <= left < width / 2 < right <= width
        assert 0 <= top < height / 2 < bottom <= height
        assert 0.25 * width < right - left < 0.9 * width  # a face, not the whole frame


def test_no_face_falls_back_to_the_centre_and_says_so():
    data = encode(noise_image((200, 200)), "PNG")
    prepared = load(data, Crop("detect", 0.5), 64)
    assert prepared.note == NO_FACE_NOTE
    assert prepared.box == Crop("center", 0.5).box(200, 200)


def test_detect_is_recorded_like_any_crop():
    crop = Crop("detect", 0.6)
    assert Crop.from_dict(crop.to_dict()) == crop
    image = Image.new("RGB", (10, 10))
    assert crop.locate(image) == (Crop("center", 0.6).box(10, 10), NO_FACE_NOTE)

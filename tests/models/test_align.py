"""--crop align and the dlib teacher, on real LFW faces where it matters."""

from __future__ import annotations

import numpy as np
from PIL import Image

from lookalike.server.evaluation.evaluate import EvalConfig, evaluate
from lookalike.server.index.gallery import list_gallery
from lookalike.server.vision import align
from lookalike.server.vision.imaging import Crop, load
from tests.imagegen import encode, noise_image


def spread_over_people(lfw_dir, split: str, count: int) -> list:
    images = list_gallery(lfw_dir / "images", split)  # type: ignore[arg-type]
    return images[:: max(1, len(images) // count)][:count]


def test_alignment_puts_the_eyes_of_lfw_faces_on_the_template(lfw_dir):
    """The landmark model, run again on each aligned chip, finds the eye corners where the
    template puts them: within a few pixels at 112 px."""
    size, errors = 112, []
    for image in spread_over_people(lfw_dir, "test", 40):
        prepared = load((lfw_dir / "images" / image.path).read_bytes(), Crop("align"), size)
        chip = np.ascontiguousarray(prepared.pixels.astype(np.uint8))
        template_box = tuple(value * size for value in align.TEMPLATE_BOX)
        found = align.landmarks_in(chip, template_box)[align.EYE_CORNERS]
        errors.append(np.linalg.norm(found - align.TEMPLATE[align.EYE_CORNERS] * size, axis=1))
    errors = np.concatenate(errors)
    assert np.median(errors) < 3.0, errors
    assert np.mean(errors < 5.0) > 0.9, errors


def test_align_records_where_the_face_was(lfw_dir):
    data = (lfw_dir / "images" / "Tony_Blair" / "Tony_Blair_0010.jpg").read_bytes()
    prepared = load(data, Crop("align"), 64)
    left, top, right, bottom = prepared.box
    width, height = prepared.original_size
    assert prepared.note == ""
    assert prepared.pixels.shape == (64, 64, 3) and prepared.pixels.dtype == np.float32
    assert 0 <= left < width / 2 < right <= width
    assert 0 <= top < height / 2 < bottom <= height


def test_no_face_is_aligned_in_the_centre_and_says_so():
    prepared = load(encode(noise_image((300, 200)), "PNG"), Crop("align"), 64)
    assert prepared.note in (align.NO_FACE_NOTE, align.NO_DLIB_FACE_NOTE)
    assert prepared.pixels.shape == (64, 64, 3)
    left, top, right, bottom = prepared.box
    assert 0 <= left < 150 < right <= 300 and 0 <= top < 100 < bottom <= 200


def test_a_large_photo_is_aligned_like_its_small_copy(lfw_dir):
    """Detection runs on a downscaled copy; the warp still uses the full photo."""
    image = Image.open(lfw_dir / "images" / "Colin_Powell" / "Colin_Powell_0001.jpg")
    small = align.align(image, 112)
    large = align.align(image.resize((1500, 1500), Image.Resampling.BICUBIC), 112)
    assert small.note == large.note == ""
    difference = np.abs(small.pixels - large.pixels).mean()
    assert difference < 12, difference  # same face, same place; resampling differs


def test_similarity_transform_recovers_a_known_one():
    rng = np.random.default_rng(0)
    points = rng.uniform(0, 100, (5, 2))
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -5.0])
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = points @ rotation.T + shift
    transform = align.similarity_transform(points, moved)
    assert np.allclose(transform[:, :2], rotation) and np.allclose(transform[:, 2], shift)
    assert np.allclose(align.apply_transform(align.invert_transform(transform), moved), points)


def test_the_teacher_ranks_the_same_person_first(lfw_dir, tmp_path):
    """The ceiling: dlib's descriptor on aligned chips, scored by eval's own protocol."""
    root = tmp_path / "gallery"
    people = [p for p in sorted((lfw_dir / "images").iterdir()) if len(list(p.iterdir())) >= 4]
    for person in people[:8]:
        (root / person.name).mkdir(parents=True)
        for photo in sorted(person.iterdir())[:4]:
            (root / person.name / photo.name).write_bytes(photo.read_bytes())
    report = evaluate(EvalConfig(gallery=root, teacher="dlib", progress=False))
    assert report.to_dict()["crop"]["mode"] == "align"
    assert report.to_dict()["hit_at_1"] > 0.8


def test_each_threads_detector_copy_finds_what_dlib_finds(lfw_dir):
    """A worker thread's detector is copied from bytes made once (0.25 s to make, 2 ms to
    copy); it must find the same boxes with the same scores as one dlib makes afresh."""
    import threading

    photos = [
        np.asarray(Image.open(lfw_dir / "images" / image.path).convert("RGB"))
        for image in spread_over_people(lfw_dir, "test", 30)
    ]
    fresh = align.new_detector()
    found: dict[str, list] = {}

    def detect(name: str) -> None:
        detector, _ = align._dlib_models()
        found[name] = [detector.run(photo, up, 0.0) for photo in photos for up in (0, 1)]

    threads = [threading.Thread(target=detect, args=(f"worker-{n}",)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    expected = [fresh.run(photo, up, 0.0) for photo in photos for up in (0, 1)]

    def boxes(runs: list) -> list:
        return [
            ([(r.left(), r.top(), r.right(), r.bottom()) for r in b], list(s)) for b, s, _ in runs
        ]

    assert sum(len(b) for b, _ in boxes(expected)) >= len(photos)  # faces were found at all
    assert boxes(found["worker-0"]) == boxes(found["worker-1"]) == boxes(expected)


def both_ways(image: Image.Image, face: align.Detection, size: int, monkeypatch) -> tuple:
    """``align_detection`` from the pixels around the face, and from the whole photo."""
    near = align.align_detection(image, face, size)
    with monkeypatch.context() as whole_photo:
        whole_photo.setattr(align, "REGION_MARGIN", 1e9)  # the region: the whole frame
        whole = align.align_detection(image, face, size)
    return near, whole


def assert_aligned_alike(near: align.Alignment, whole: align.Alignment) -> None:
    np.testing.assert_array_equal(near.landmarks, whole.landmarks)
    np.testing.assert_array_equal(near.transform, whole.transform)
    assert near.box == whole.box
    differ = np.abs(near.pixels - whole.pixels)  # OpenCV's fixed point may round apart
    assert differ.max() <= 1 and differ.mean() < 0.01, (differ.max(), differ.mean())


def placed(face_photo: Image.Image, at: tuple[float, float], side: int = 2400) -> Image.Image:
    """A 3000 x 2000 photo with ``face_photo`` enlarged to ``side`` pixels, its top left
    corner at ``at`` (fractions of the room left): at the edges, in the middle."""
    canvas = Image.new("RGB", (3000, 2000), (90, 110, 130))
    big = face_photo.resize((side, side), Image.Resampling.BICUBIC)
    x, y = round(at[0] * (3000 - side)), round(at[1] * (2000 - side))
    canvas.paste(big, (x, y))
    return canvas


def test_a_face_is_aligned_from_its_part_of_the_photo_as_from_the_whole(lfw_dir, monkeypatch):
    """Landmarks, transform and box equal, the chip equal to a rounding, for faces in the
    middle of a large photo, at each of its edges, and past them (the photo's own edge
    pixels repeated), and for every face dlib finds."""
    corners = [(0.5, 0.5), (0.0, 0.0), (1.0, 1.0), (0.0, 1.0), (1.0, 0.0)]
    checked = 0
    for number, image in enumerate(spread_over_people(lfw_dir, "test", 10)):
        photo = Image.open(lfw_dir / "images" / image.path).convert("RGB")
        side = 2400 if number % 2 else 1200  # the face past the frame, or inside it
        for frame in (photo, placed(photo, corners[number % len(corners)], side)):
            for face in align.detect_faces(frame, limit=4):
                assert_aligned_alike(*both_ways(frame, face, 150, monkeypatch))
                checked += 1
    assert checked >= 20


def test_a_photo_without_a_face_is_aligned_from_its_part_as_from_the_whole(monkeypatch):
    """The fallback boxes (the cascade's, the centre of the frame) and their warps."""
    for seed in range(4):
        photo = noise_image((1600 + 300 * seed, 1200), seed)
        (face,) = align.detect_faces(photo)
        assert face.note
        assert_aligned_alike(*both_ways(photo, face, 112, monkeypatch))

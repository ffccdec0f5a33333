"""Face alignment for ``--crop align``: five landmarks onto one template, by one warp.

A face recogniser compares faces best when eyes and nose always land on the
same pixels. dlib's HOG detector finds the face (OpenCV's Haar cascade, then a
centre box, when it finds none, and the note says so); dlib's 5-point model
(eye corners and the base of the nose) places the landmarks in that box; one
similarity transform (rotation, uniform scale, shift; least squares, Umeyama)
maps them onto ``TEMPLATE`` scaled to the model's input size, and the photo is
warped once. The template is the geometry of dlib's own face chips, so the
dlib face descriptor (the teacher, ``teacher.py``) reads our chips as its own.

The model files come from the ``face_recognition_models`` wheel (the ``faces``
extra), found without importing that package, whose ``__init__`` needs
``pkg_resources``. dlib objects are made per thread: dlib does not promise that
one may run on several threads at once.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import pickle
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from lookalike.server.vision.steps import step

# (x, y) of dlib's five landmarks in a chip of side 1 (pixel = value * size): the
# outer and inner corners of the eye on the image's right, the outer and inner
# corners of the other eye, the base of the nose. The mean landmark positions in
# dlib's get_face_chip(size=150, padding=0.25) chips of LFW's train-split people.
TEMPLATE = np.array(
    [
        [0.74044, 0.31054],
        [0.60030, 0.31354],
        [0.24675, 0.31137],
        [0.38662, 0.31412],
        [0.49255, 0.58724],
    ]
)
EYE_CORNERS = slice(0, 4)
# When dlib finds no face: the Haar cascade's box, moved and scaled the way dlib's
# box differs from it on average (centre shift in x and y, then side, as shares of
# the Haar side), or else this box of the frame (left, top, right, bottom as
# shares of width and height): dlib's mean box on LFW.
HAAR_TO_DLIB = (-0.0352, 0.0775, 1.0435)
CENTRE_BOX = (0.2546, 0.2923, 0.7304, 0.7681)
# A fallback box whose landmarks give a warp this far from the box's own scale
# (ratio) or rotated more than this (radians) is taken as no face: the box is
# warped onto the template's mean face box instead.
MAX_SCALE_RATIO = 1.5
MAX_ROTATION = 0.6
TEMPLATE_BOX = (-0.0383, -0.0330, 0.9936, 0.9989)  # dlib's mean box in chip units

FIVE_POINT_MODEL = "shape_predictor_5_face_landmarks.dat"
# Landmarks and warp read the photo within this many face sides of the face's box (an
# aligned chip shows about the box; dlib's landmark features lie within it).
REGION_MARGIN = 1.0
NO_DLIB_FACE_NOTE = "dlib found no face; aligned in the box of OpenCV's face cascade"
NO_FACE_NOTE = "no face found; aligned in the centre of the frame"

_local = threading.local()


def model_file(name: str) -> Path:
    """A model file shipped by the face_recognition_models wheel."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "face_recognition_models is not installed", name="face_recognition_models"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / name
    if not path.is_file():
        raise FileNotFoundError(f"{name} is missing from face_recognition_models ({path})")
    return path


def load_models() -> None:
    """Load dlib and the landmark model now (raises ModuleNotFoundError without the
    faces extra), so a server fails at start, not at its first Search."""
    _dlib_models()


def _dlib_models():  # noqa: ANN202 (dlib's detector and shape predictor)
    if not hasattr(_local, "predictor"):
        import dlib

        _local.detector = pickle.loads(_detector_bytes())
        _local.predictor = dlib.shape_predictor(str(model_file(FIVE_POINT_MODEL)))
    return _local.detector, _local.predictor


@functools.cache
def _detector_bytes() -> bytes:
    """dlib's detector, serialised once: making one parses its built-in model (0.25 s),
    while a copy from these bytes takes 2 ms, and a server makes one per worker thread."""
    return pickle.dumps(new_detector())


def new_detector():  # noqa: ANN201 (dlib's HOG face detector)
    """dlib's frontal face detector, made afresh."""
    import dlib

    return dlib.get_frontal_face_detector()


@dataclass(frozen=True)
class Alignment:
    """An aligned face chip and where it came from in the photo."""

    pixels: np.ndarray  # (size, size, 3) float32, RGB 0..255
    box: tuple[int, int, int, int]  # the photo's region the chip shows, clipped to the frame
    note: str  # empty when dlib found the face
    landmarks: np.ndarray  # (5, 2) in the photo's pixels
    transform: np.ndarray  # (2, 3) photo -> chip pixels


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 2x3 similarity that maps ``source`` points closest to ``target`` (least squares).

    Umeyama (1991): the rotation from the SVD of the covariance of the centred
    point sets, with a reflection ruled out, then the scale and the shift.
    """
    source, target = np.asarray(source, np.float64), np.asarray(target, np.float64)
    source_mean, target_mean = source.mean(axis=0), target.mean(axis=0)
    centred_source, centred_target = source - source_mean, target - target_mean
    u, singular, vt = np.linalg.svd(centred_target.T @ centred_source / len(source))
    sign = np.diag([1.0, -1.0 if np.linalg.det(u) * np.linalg.det(vt) < 0 else 1.0])
    rotation = u @ sign @ vt
    scale = np.trace(np.diag(singular) @ sign) / centred_source.var(axis=0).sum()
    transform = np.empty((2, 3))
    transform[:, :2] = scale * rotation
    transform[:, 2] = target_mean - scale * rotation @ source_mean
    return transform


def apply_transform(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    return np.asarray(points, np.float64) @ transform[:, :2].T + transform[:, 2]


def box_transform(box: tuple[float, float, float, float], size: int) -> np.ndarray:
    """The shift and scale that put ``box`` where dlib's mean face box sits in the chip."""
    left, top, right, bottom = box
    t_left, t_top, t_right, t_bottom = (value * size for value in TEMPLATE_BOX)
    scale = ((t_right - t_left) / (right - left) + (t_bottom - t_top) / (bottom - top)) / 2
    shift_x = (t_left + t_right) / 2 - scale * (left + right) / 2
    shift_y = (t_top + t_bottom) / 2 - scale * (top + bottom) / 2
    return np.array([[scale, 0.0, shift_x], [0.0, scale, shift_y]])


def _haar_box(image: Image.Image) -> tuple[float, float, float, float] | None:
    from lookalike.server.vision.faces import cascade_faces

    found = cascade_faces(image)
    if not found:
        return None
    x, y, w, h = max(found, key=lambda box: box[2] * box[3])
    side = (w + h) / 2
    centre_x = x + w / 2 + HAAR_TO_DLIB[0] * side
    centre_y = y + h / 2 + HAAR_TO_DLIB[1] * side
    half = side * HAAR_TO_DLIB[2] / 2
    return centre_x - half, centre_y - half, centre_x + half, centre_y + half


@dataclass(frozen=True)
class Detection:
    """One face a detector found: its box in the photo's pixels and how sure it was."""

    box: tuple[float, float, float, float]  # left, top, right, bottom
    score: float  # dlib's detection score (SVM margin); 0 for a fallback box
    note: str  # empty when dlib found it

    @property
    def side(self) -> float:
        return min(self.box[2] - self.box[0], self.box[3] - self.box[1])


def find_face(image: Image.Image) -> tuple[tuple[float, float, float, float], str]:
    """The largest face box dlib finds (upsampling once if it finds none), else the
    Haar cascade's, else the centre box; and a note unless dlib found it.

    Detection runs on ``faces.detection_copy`` (at most 800 pixels long); the box
    is scaled back to the photo.
    """
    largest = detect_faces(image, limit=1)[0]
    return largest.box, largest.note


@step("detect")
def detect_faces(image: Image.Image, limit: int = 1, min_size: float = 0) -> list[Detection]:
    """The faces of ``image``, at most ``limit``, the first always ``find_face``'s.

    The first is the largest face dlib finds without upsampling (upsampling once
    if it finds none), else the Haar cascade's or the centre box: exactly the
    face a one-face index embeds, so an every-face index's first row of a photo
    is its one-face row. The others, largest first, are the faces dlib finds in
    the photo upsampled once (faces down to about 40 px) that do not overlap one
    already taken and are at least ``min_size`` pixels on their shorter side.
    """
    from lookalike.server.vision.faces import detection_copy

    small, scale = detection_copy(image)
    rgb = np.ascontiguousarray(np.asarray(small.convert("RGB")))
    detector, _ = _dlib_models()
    found: list[Detection] = []
    for upsample in (0, 1):
        boxes, scores, _ = detector.run(rgb, upsample, 0.0)
        found = sorted(
            (
                Detection((r.left(), r.top(), r.right(), r.bottom()), float(score), "")
                for r, score in zip(boxes, scores, strict=True)
            ),
            key=lambda face: -_dlib_area(face.box),
        )
        if found:
            break
    if not found:
        box, note = _haar_box(small), NO_DLIB_FACE_NOTE
        if box is None:
            left, top, right, bottom = CENTRE_BOX
            box = (
                left * small.width,
                top * small.height,
                right * small.width,
                bottom * small.height,
            )
            note = NO_FACE_NOTE
        return [Detection(_scaled(box, scale), 0.0, note)]
    faces = [found[0]]
    if limit > 1 and upsample == 0:
        boxes, scores, _ = detector.run(rgb, 1, 0.0)
        found = [
            Detection((r.left(), r.top(), r.right(), r.bottom()), float(score), "")
            for r, score in zip(boxes, scores, strict=True)
        ]
    for face in sorted(found, key=lambda face: -_dlib_area(face.box)):
        if len(faces) >= limit:
            break
        if face.side / scale >= min_size and all(_overlap(face.box, f.box) < 0.3 for f in faces):
            faces.append(face)
    return [Detection(_scaled(face.box, scale), face.score, face.note) for face in faces]


def _scaled(box: tuple[float, ...], scale: float) -> tuple[float, float, float, float]:
    left, top, right, bottom = (value / scale for value in box)
    return left, top, right, bottom


def _dlib_area(box: tuple[float, ...]) -> float:
    """Area as dlib's rectangle counts it (inclusive corners): the order find_face kept."""
    return (box[2] - box[0] + 1) * (box[3] - box[1] + 1)


def _area(box: tuple[float, ...]) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over the smaller box: one face found twice (at two upsamplings,
    or nested) overlaps near 1; two neighbours in a group photo hardly at all."""
    inner = (max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3]))
    smaller = min(_area(a), _area(b))
    return _area(inner) / smaller if smaller > 0 else 0.0


@step("landmarks")
def landmarks_in(
    rgb: np.ndarray, box: tuple[float, float, float, float], origin: tuple[int, int] = (0, 0)
) -> np.ndarray:
    """dlib's five landmarks of the face in ``box``, in the photo's pixels; ``rgb`` is the
    photo, or the part of it whose top left corner is at ``origin``."""
    import dlib

    _, predictor = _dlib_models()
    x, y = origin
    left, top, right, bottom = (round(value) for value in box)  # rounded where the photo is
    rect = dlib.rectangle(left - x, top - y, right - x, bottom - y)
    parts = predictor(rgb, rect).parts()
    return np.array([[p.x + x, p.y + y] for p in parts], dtype=np.float64)


def _plausible(transform: np.ndarray, fallback: np.ndarray) -> bool:
    """Does a landmark warp agree roughly with the box's own scale and stay upright?"""
    scale = np.hypot(*transform[:, 0])
    ratio = scale / fallback[0, 0]
    rotation = abs(np.arctan2(transform[1, 0], transform[0, 0]))
    return 1 / MAX_SCALE_RATIO < ratio < MAX_SCALE_RATIO and rotation < MAX_ROTATION


def align(image: Image.Image, size: int) -> Alignment:
    """The face of ``image`` (RGB) warped so its landmarks sit on ``TEMPLATE`` * size."""
    box, note = find_face(image)
    return align_detection(image, Detection(box, 0.0, note), size)


def align_detection(image: Image.Image, face: Detection, size: int) -> Alignment:
    """The face ``face`` of ``image`` warped so its landmarks sit on ``TEMPLATE`` * size.

    Landmarks and warp read only the pixels around the face: the photo's part within
    ``REGION_MARGIN`` face sides of its box is copied out, not the whole photo (a 12 MP
    photo's copy took 56-60 ms, once for every face). A warp that would sample beyond that
    part, where the photo goes on, is made from the whole photo instead.
    """
    region = face_region(face.box, image.size)
    rgb = pixels_of(image, region)
    origin = region[:2]
    landmarks = landmarks_in(rgb, face.box, origin)
    transform = similarity_transform(landmarks, TEMPLATE * size)
    if face.note:  # landmarks in a box dlib did not find may be noise
        fallback = box_transform(face.box, size)
        if not _plausible(transform, fallback):
            transform = fallback
    if not _covers(region, _sampled_box(transform, size), image.size):
        region, origin = (0, 0, *image.size), (0, 0)
        rgb = pixels_of(image, region)
    return Alignment(
        pixels=warp(rgb, _moved(transform, origin), size),
        box=_source_box(transform, size, image.size),
        note=face.note,
        landmarks=landmarks,
        transform=transform,
    )


@step("warp")
def warp(rgb: np.ndarray, transform: np.ndarray, size: int) -> np.ndarray:
    """The (size, size, 3) float32 chip that ``transform`` (photo -> chip pixels) cuts."""
    import cv2

    # The template counts pixel corners (0..size); OpenCV samples pixel centres.
    sampling = transform.copy()
    sampling[:, 2] -= 0.5
    shrinking = np.hypot(*transform[:, 0]) < 0.6
    chip = cv2.warpAffine(
        rgb,
        sampling,
        (size, size),
        flags=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    return chip.astype(np.float32)


def face_region(
    box: tuple[float, float, float, float], frame: tuple[int, int]
) -> tuple[int, int, int, int]:
    """The photo's whole pixels within ``REGION_MARGIN`` face sides of ``box``."""
    left, top, right, bottom = box
    margin = REGION_MARGIN * max(right - left, bottom - top, 1.0)
    width, height = frame
    return (
        max(0, math.floor(left - margin)),
        max(0, math.floor(top - margin)),
        min(width, math.ceil(right + margin)),
        min(height, math.ceil(bottom + margin)),
    )


def pixels_of(image: Image.Image, region: tuple[int, int, int, int]) -> np.ndarray:
    """The RGB pixels of ``region`` of ``image`` (the whole frame: no crop)."""
    part = image if region == (0, 0, *image.size) else image.crop(region)
    return np.ascontiguousarray(np.asarray(part if part.mode == "RGB" else part.convert("RGB")))


def _sampled_box(transform: np.ndarray, size: int) -> tuple[float, float, float, float]:
    """The photo's pixels a warp by ``transform`` reads: the chip's corners mapped back,
    widened by an interpolation footprint (a shrinking warp averages 1 / scale pixels)."""
    corners = _chip_corners(transform, size)
    reach = 2.0 + 1.0 / max(np.hypot(*transform[:, 0]), 1e-6)
    (left, top), (right, bottom) = corners.min(axis=0) - reach, corners.max(axis=0) + reach
    return float(left), float(top), float(right), float(bottom)


def _covers(
    region: tuple[int, int, int, int],
    needed: tuple[float, float, float, float],
    frame: tuple[int, int],
) -> bool:
    """Whether a warp reading ``needed`` sees the same pixels in ``region`` as in the whole
    photo: each side inside the region, or the region's side the photo's own edge (where
    both repeat the edge pixels)."""
    width, height = frame
    left, top, right, bottom = region
    return (
        (needed[0] >= left or left == 0)
        and (needed[1] >= top or top == 0)
        and (needed[2] <= right or right == width)
        and (needed[3] <= bottom or bottom == height)
    )


def _moved(transform: np.ndarray, origin: tuple[int, int]) -> np.ndarray:
    """``transform`` (photo -> chip) for pixels counted from ``origin`` of the photo."""
    if origin == (0, 0):
        return transform
    moved = transform.copy()
    moved[:, 2] += transform[:, :2] @ np.asarray(origin, np.float64)
    return moved


def _source_box(
    transform: np.ndarray, size: int, frame: tuple[int, int]
) -> tuple[int, int, int, int]:
    """The photo's region under the chip: its corners mapped back, bounded, clipped."""
    corners = _chip_corners(transform, size)
    width, height = frame
    left, top = np.clip(corners.min(axis=0), 0, (width, height))
    right, bottom = np.clip(corners.max(axis=0), 0, (width, height))
    return (
        round(left),
        round(top),
        max(round(left) + 1, round(right)),
        max(round(top) + 1, round(bottom)),
    )


def _chip_corners(transform: np.ndarray, size: int) -> np.ndarray:
    """The chip's four corners in the photo's pixels (``transform``: photo -> chip)."""
    inverse = invert_transform(transform)
    return apply_transform(inverse, [(0, 0), (size, 0), (0, size), (size, size)])


def invert_transform(transform: np.ndarray) -> np.ndarray:
    """The inverse of a 2x3 affine transform."""
    linear_inverse = np.linalg.inv(transform[:, :2])
    return np.hstack([linear_inverse, -linear_inverse @ transform[:, 2:]])

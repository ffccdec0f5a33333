"""Face detection for ``--crop detect``: OpenCV's Haar cascade, which ships in its wheel.

opencv-python-headless 4.x carries the cascade files and works offline; the
5.x wheels no longer ship them. A detector per thread, since OpenCV does not
promise that one classifier may run on several threads at once.
"""

from __future__ import annotations

import threading

import numpy as np
from PIL import Image

from lookalike.server.vision.steps import step

# The detected box is square and tight around the eyes and mouth; grow it so
# the crop holds the whole face, as LFW's 2.2x enlarged boxes do more loosely.
FACE_SCALE = 1.5
DETECTION_SIDE = 800  # longest side of the copy faces are detected on
_local = threading.local()


def _detector():  # noqa: ANN202 (cv2.CascadeClassifier)
    if not hasattr(_local, "detector"):
        import cv2

        _local.detector = cv2.CascadeClassifier(
            cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
        )
    return _local.detector


def detection_copy(image: Image.Image) -> tuple[Image.Image, float]:
    """The image at most ``DETECTION_SIDE`` pixels long, and the scale it was shrunk by.

    A face that fills a 24 MP photo is found as well at that size, at a fraction
    of the time and memory a detector would spend on the whole frame.
    """
    scale = min(1.0, DETECTION_SIDE / max(image.size))
    if scale == 1.0:
        return image, scale
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR), scale


def cascade_faces(image: Image.Image) -> list[tuple[int, int, int, int]]:
    """(x, y, width, height) of every face the cascade finds."""
    return [box for box, _ in scored_cascade_faces(image)]


def scored_cascade_faces(image: Image.Image) -> list[tuple[tuple[int, int, int, int], float]]:
    """(x, y, width, height) of every face the cascade finds, with its score: how many
    neighbouring windows agreed on it (detectMultiScale2, the same faces as detectMultiScale)."""
    gray = np.ascontiguousarray(np.asarray(image.convert("L")))
    side = min(image.size)
    found, neighbours = _detector().detectMultiScale2(
        gray, scaleFactor=1.1, minNeighbors=5, minSize=(max(24, side // 10),) * 2
    )
    return [
        (tuple(int(v) for v in box), float(count))
        for box, count in zip(found, neighbours, strict=True)
    ]


def largest_face(image: Image.Image) -> tuple[int, int, int, int] | None:
    """(left, top, right, bottom) of the largest face, grown by FACE_SCALE, or None.

    Detected on ``detection_copy``; the box is scaled back to ``image``.
    """
    faces = every_face(image, limit=1)
    return faces[0][0] if faces else None


@step("detect")
def every_face(
    image: Image.Image, limit: int, min_size: float = 0
) -> list[tuple[tuple[int, int, int, int], float]]:
    """Boxes (grown by FACE_SCALE, clipped) and scores of up to ``limit`` faces, largest
    first; the first is ``largest_face``'s, the others at least ``min_size`` pixels wide."""
    small, scale = detection_copy(image)
    found = sorted(scored_cascade_faces(small), key=lambda face: -face[0][2] * face[0][3])
    faces = []
    for number, ((x, y, w, h), score) in enumerate(found):
        if len(faces) >= limit:
            break
        if number and min(w, h) / scale < min_size:
            continue
        faces.append((_grown((x / scale, y / scale, w / scale, h / scale), image.size), score))
    return faces


def _grown(face: tuple[float, float, float, float], frame: tuple[int, int]) -> tuple[int, ...]:
    x, y, w, h = face
    half = min(w, h) * FACE_SCALE / 2
    cx, cy = x + w / 2, y + h / 2
    left, top = max(0, round(cx - half)), max(0, round(cy - half))
    right, bottom = min(frame[0], round(cx + half)), min(frame[1], round(cy + half))
    return left, top, right, bottom

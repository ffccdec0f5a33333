"""Which faces of a photo the model sees: the largest (the default), or every one.

A group photo holds several people, and whoever searches for one of them
wants the photos where that person stands third from the left too. With
``FaceSelection("all")`` a photo becomes one prepared face per detected face
(at most ``limit``, none smaller than ``min_size`` pixels but the first), the
first always the face the default mode takes, so that an every-face index's
first row of a photo is its one-face row. Face detection needs a crop that
detects (``align``: dlib; ``detect``: OpenCV's cascade); the centre and
whole-frame crops have one region per photo.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal, get_args

from PIL import Image

from lookalike.server.vision.imaging import Crop, Prepared, cut, prepare

FaceMode = Literal["largest", "all"]
FACE_MODES: tuple[str, ...] = get_args(FaceMode)
DEFAULT_MAX_FACES = 10  # faces of one photo embedded at most
# Smaller faces (shorter side, photo pixels) are left out, except the largest: a
# 150 px chip from a face of fewer than 24 pixels is mostly blur.
DEFAULT_MIN_FACE = 24
DETECTING_CROPS = ("align", "detect")


@dataclass(frozen=True)
class FaceSelection:
    """How many faces of each photo are embedded; recorded with every index."""

    mode: FaceMode = "largest"
    limit: int = DEFAULT_MAX_FACES
    min_size: int = DEFAULT_MIN_FACE

    def __post_init__(self) -> None:
        if self.mode not in FACE_MODES:
            raise ValueError(f"faces must be one of {', '.join(FACE_MODES)}, not {self.mode!r}")
        if self.limit < 1:
            raise ValueError(f"the most faces per photo must be at least 1, not {self.limit}")
        if self.min_size < 0:
            raise ValueError(f"the smallest face size cannot be negative ({self.min_size})")

    def check_crop(self, crop: Crop) -> None:
        """Every face needs a face detector: refuse the crops that have none."""
        if self.mode == "all" and crop.mode not in DETECTING_CROPS:
            raise ValueError(
                f"every face (--faces all) needs a crop that detects faces "
                f"({' or '.join(DETECTING_CROPS)}), not crop {crop.mode}"
            )

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object] | None) -> FaceSelection:
        """None (a manifest from before every-face indexing): the largest face."""
        if not data:
            return LARGEST
        return cls(
            mode=data["mode"],  # type: ignore[arg-type]
            limit=int(data.get("limit", DEFAULT_MAX_FACES)),  # type: ignore[arg-type]
            min_size=int(data.get("min_size", DEFAULT_MIN_FACE)),  # type: ignore[arg-type]
        )


LARGEST = FaceSelection()


def prepare_faces(
    image: Image.Image, crop: Crop, size: int, faces: FaceSelection = LARGEST
) -> list[Prepared]:
    """One model-ready face per selected face, largest first; never empty (a photo
    without a face gives the crop's fallback, with its note)."""
    if faces.mode == "largest":
        return [_scored_largest(image, crop, size)]
    faces.check_crop(crop)
    if crop.aligned:
        from lookalike.server.vision.align import align_detection, detect_faces

        found = []
        for face in detect_faces(image, faces.limit, faces.min_size):
            aligned = align_detection(image, face, size)
            found.append(
                Prepared(
                    aligned.pixels,
                    aligned.box,
                    image.size,
                    aligned.note,
                    face_box=_int_box(face.box, image.size),
                    score=face.score,
                )
            )
        return found
    from lookalike.server.vision.faces import every_face

    detected = every_face(image, faces.limit, faces.min_size)
    if not detected:
        return [prepare(image, crop, size)]
    return [cut(image, box, size, score=score) for box, score in detected]


def _scored_largest(image: Image.Image, crop: Crop, size: int) -> Prepared:
    """``prepare``'s face, with the detector's box and score where the crop detects."""
    if not crop.aligned:
        return prepare(image, crop, size)
    from lookalike.server.vision.align import align_detection, detect_faces

    face = detect_faces(image, limit=1)[0]
    aligned = align_detection(image, face, size)
    box = _int_box(face.box, image.size)
    return Prepared(
        aligned.pixels, aligned.box, image.size, aligned.note, face_box=box, score=face.score
    )


def _int_box(
    box: tuple[float, float, float, float], frame: tuple[int, int]
) -> tuple[int, int, int, int]:
    """A detector's box in whole pixels, inside the frame, at least one pixel wide."""
    width, height = frame
    left, top = min(max(0, round(box[0])), width - 1), min(max(0, round(box[1])), height - 1)
    right, bottom = min(width, round(box[2])), min(height, round(box[3]))
    return left, top, max(left + 1, right), max(top + 1, bottom)


def face_at_point(faces: list[Prepared], x: float, y: float) -> int | None:
    """The face whose box holds the point (the smallest such, for nested boxes), or None."""
    holding = [
        (n, face.face)
        for n, face in enumerate(faces)
        if face.face[0] <= x < face.face[2] and face.face[1] <= y < face.face[3]
    ]
    if not holding:
        return None
    return min(holding, key=lambda pair: (pair[1][2] - pair[1][0]) * (pair[1][3] - pair[1][1]))[0]


def face_in_box(faces: list[Prepared], box: tuple[float, float, float, float]) -> int | None:
    """The face that overlaps ``box`` most (intersection over union), or None if none does."""
    best, best_overlap = None, 0.0
    for n, face in enumerate(faces):
        overlap = _iou(face.face, box)
        if overlap > best_overlap:
            best, best_overlap = n, overlap
    return best


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inner = width * height
    return inner / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inner)

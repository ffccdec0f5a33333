"""Turn encoded image bytes into the pixels the embedder takes.

Every image that enters lookalike (gallery files at index time, query photos at
search time, evaluation queries) goes through this one module, so a gallery
and the queries against it are always cropped and resized the same way.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError


class CropMode(StrEnum):
    """What the model sees of a photo. The values are the ``--crop`` choices and what
    manifests and model metadata record, so they never change."""

    NONE = "none"  # the whole frame
    CENTER = "center"  # the centre square, ``fraction`` of the shorter side
    DETECT = "detect"  # the largest face found, else the centre square
    ALIGN = "align"  # five landmarks warped onto one template (server/vision/align.py)


CROP_MODES: tuple[str, ...] = tuple(mode.value for mode in CropMode)
# Largest image (width x height) decoded; larger is refused before decoding.
DEFAULT_MAX_PIXELS = 40_000_000
# Pixels converted at once when a 16-bit frame is brought to 8 bits (1 MB of float32).
BAND_PIXELS = 1 << 18
NO_FACE_NOTE = "no face found; the centre crop was used"

# An LFW frame holds the face in roughly its middle 45%; half the shorter
# side keeps the whole face with a small margin.
DEFAULT_CENTER_FRACTION = 0.5


class ImageError(ValueError):
    """The bytes are not an image lookalike can use; the message says why."""


@dataclass(frozen=True)
class Crop:
    """Which part of the photo the model sees; recorded with every index."""

    mode: CropMode = CropMode.NONE  # its value (a string) is accepted too
    fraction: float = DEFAULT_CENTER_FRACTION

    def __post_init__(self) -> None:
        if self.mode not in CROP_MODES:
            raise ValueError(f"crop mode must be one of {', '.join(CROP_MODES)}, not {self.mode!r}")
        object.__setattr__(self, "mode", CropMode(self.mode))
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"crop fraction must be in (0, 1], not {self.fraction}")

    @property
    def aligned(self) -> bool:
        """Faces warped by their landmarks (dlib's models needed), not a box cut out."""
        return self.mode is CropMode.ALIGN

    def locate(self, image: Image.Image) -> tuple[tuple[int, int, int, int], str]:
        """The region the model sees, and a note when detection fell back to the centre."""
        if self.mode is CropMode.DETECT:
            from lookalike.server.vision.faces import largest_face

            face = largest_face(image)
            if face is not None:
                return face, ""
            return self.box(*image.size), NO_FACE_NOTE
        return self.box(*image.size), ""

    def box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) of the whole frame or its centre square."""
        if self.mode is CropMode.NONE:
            return (0, 0, width, height)
        side = max(1, round(min(width, height) * self.fraction))
        left, top = (width - side) // 2, (height - side) // 2
        return (left, top, left + side, top + side)

    def to_dict(self) -> dict[str, object]:
        """What manifests and model metadata hold: {"mode": "align", "fraction": 0.5}."""
        return {"mode": self.mode.value, "fraction": self.fraction}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Crop:
        return cls(mode=data["mode"], fraction=float(data["fraction"]))  # type: ignore[arg-type]


WHOLE_FRAME = Crop(CropMode.NONE)
ALIGNED = Crop(CropMode.ALIGN)


def decode(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode to an upright RGB image, refusing bombs before they are decompressed."""
    if not data:
        raise ImageError("the image is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError(
            "the bytes are not an image in a supported format (JPEG, PNG, GIF, WebP, BMP, TIFF)"
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageError(f"the image is too large to decode: {error}") from None
    except OSError as error:
        raise ImageError(f"the image data is truncated or corrupt: {error}") from None
    width, height = image.size
    if width * height > max_pixels:
        raise ImageError(
            f"the image declares {width}x{height} pixels, more than the limit of {max_pixels:,}"
        )
    if width == 0 or height == 0:
        raise ImageError(f"the image has no pixels ({width}x{height})")
    try:
        image.seek(0)  # animated formats: the first frame
        image.load()
        ImageOps.exif_transpose(image, in_place=True)  # not in place: a copy, always
    except (OSError, ValueError, SyntaxError) as error:
        raise ImageError(f"the image data is truncated or corrupt: {error}") from None
    try:
        return to_rgb(image)
    except ValueError as error:  # a mode Pillow reads but cannot convert
        raise ImageError(f"images of mode {image.mode} cannot be read: {error}") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB; transparency is flattened onto white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        image = _deep_gray_to_l(image)
    if image.mode == "La":  # premultiplied alpha: Pillow converts it only to LA
        image = image.convert("LA")
    if image.mode == "RGBa":
        image = image.convert("RGBA")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        # pasted through its alpha onto white: one RGB frame and one alpha plane,
        # where alpha_composite would hold three RGBA frames at once
        rgba = image if image.mode == "RGBA" else image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return image if image.mode == "RGB" else image.convert("RGB")  # convert always copies


def _deep_gray_to_l(image: Image.Image) -> Image.Image:
    """16- or 32-bit grey to 8 bits, scaled by its peak, a band of rows at a time.

    Only the 8-bit result is whole-frame; each band is read out of Pillow and
    scaled as float32 on its own. (Whole-frame float64 copies of a 40 MP frame
    would take 320 MB each.)
    """
    rows = max(1, BAND_PIXELS // image.width)
    tops = range(0, image.height, rows)

    def band_at(top: int) -> np.ndarray:
        bottom = min(image.height, top + rows)
        return np.asarray(image.crop((0, top, image.width, bottom)), dtype=np.float32)

    # by bands, not getextrema: Pillow has no extrema for big-endian 16 bits (I;16B)
    peak = max(1, max(int(band_at(top).max()) for top in tops))
    scale = np.float32(255.0 / peak)
    gray = np.empty((image.height, image.width), np.uint8)
    for top in tops:
        bottom = min(image.height, top + rows)
        band = band_at(top)
        np.clip(band, 0, peak, out=band)
        band *= scale
        band += 0.5  # round to nearest: the peak becomes 255
        gray[top:bottom] = band
    return Image.fromarray(gray, mode="L")


@dataclass(frozen=True)
class Prepared:
    """Model-ready pixels plus where they came from in the original photo."""

    pixels: np.ndarray  # (size, size, 3) float32, RGB 0..255
    box: tuple[int, int, int, int]
    original_size: tuple[int, int]
    note: str = ""  # e.g. that face detection fell back to the centre crop
    face_box: tuple[int, int, int, int] | None = None  # the detector's box; None: ``box``
    score: float = 0.0  # the detector's score for that face; 0 without one

    @property
    def face(self) -> tuple[int, int, int, int]:
        """The face's own box (an aligned chip shows more of the photo around it)."""
        return self.face_box or self.box


def prepare(image: Image.Image, crop: Crop, size: int) -> Prepared:
    if crop.aligned:
        from lookalike.server.vision.align import align

        aligned = align(image, size)
        return Prepared(aligned.pixels, aligned.box, image.size, aligned.note)
    box, note = crop.locate(image)
    return cut(image, box, size, note, whole=crop.mode is CropMode.NONE)


def cut(
    image: Image.Image,
    box: tuple[int, int, int, int],
    size: int,
    note: str = "",
    score: float = 0.0,
    whole: bool = False,
) -> Prepared:
    """``box`` of ``image`` resized to the model's input (``whole``: the frame as it is)."""
    region = image if whole else image.crop(box)
    resized = region.resize((size, size), Image.Resampling.BILINEAR)
    pixels = np.asarray(resized, dtype=np.float32)
    return Prepared(pixels, box, image.size, note, face_box=box, score=score)


def load(data: bytes, crop: Crop, size: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> Prepared:
    """Bytes to model-ready pixels: decode, crop, resize."""
    return prepare(decode(data, max_pixels), crop, size)

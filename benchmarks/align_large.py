"""Aligning the faces of large photos: from the pixels around each face, against the whole.

    python benchmarks/align_large.py --faces $LFW/images [--photos 12] [--repeats 3] \
        [--save big12/p]

Makes 4000 x 3000 photos (12 MP, a phone's) from LFW photos enlarged into them:
one face per photo, and group photos of four. Times ``prepare_faces`` with the
aligned crop (detection on the 800 px copy, landmarks, warp), the largest face and
every face, two ways in one run: landmarks and warp reading the photo within
``align.REGION_MARGIN`` face sides of each face (the server's way), and reading a
copy of the whole photo (``REGION_MARGIN`` set past the frame, as before).
Prints ms per photo, its split by step, and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from PIL import Image

from lookalike.server.vision import align
from lookalike.server.vision.imaging import Crop
from lookalike.server.vision.selection import LARGEST, FaceSelection, prepare_faces
from lookalike.server.vision.steps import CROP_STEPS, tallied

FRAME = (4000, 3000)
SIZE = 150  # the face network's chip


def large_photo(faces: list[Image.Image], side: int) -> Image.Image:
    """``faces`` enlarged to ``side`` pixels, side by side along the middle of FRAME."""
    photo = Image.new("RGB", FRAME, (90, 110, 130))
    step = FRAME[0] // len(faces)
    for number, face in enumerate(faces):
        x = number * step + (step - side) // 2
        photo.paste(face.resize((side, side), Image.Resampling.BICUBIC), (x, 600))
    return photo


def timed(photos: list[Image.Image], faces: FaceSelection, repeats: int) -> tuple[float, dict]:
    """Median ms a photo over ``repeats`` passes, and each step's mean ms."""
    passes, steps = [], dict.fromkeys(CROP_STEPS, 0.0)
    for _ in range(repeats):
        started = time.perf_counter()
        for photo in photos:
            with tallied() as tally:
                prepare_faces(photo, Crop("align"), SIZE, faces)
            for name, seconds in tally.items():
                steps[name] += seconds
        passes.append((time.perf_counter() - started) / len(photos))
    done = repeats * len(photos)
    return statistics.median(passes) * 1e3, {k: v * 1e3 / done for k, v in steps.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faces", type=Path, required=True, help="a folder of face photos")
    parser.add_argument("--photos", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--save", type=Path, help="also write the one-face photos here as JPEG (quality 90)"
    )
    args = parser.parse_args()
    paths = sorted(args.faces.rglob("*.jpg"))
    paths = paths[:: max(1, len(paths) // (4 * args.photos))][: 4 * args.photos]
    sources = [Image.open(path).convert("RGB") for path in paths]
    singles = [large_photo([face], 1500) for face in sources[: args.photos]]
    groups = [large_photo(sources[n : n + 4], 900) for n in range(0, len(sources), 4)]
    if args.save:  # queries for a Search end to end (search_load.py --images)
        args.save.mkdir(parents=True, exist_ok=True)
        for number, photo in enumerate(singles):
            photo.save(args.save / f"photo_{number:02d}.jpg", quality=90)
    align.load_models()
    near = align.REGION_MARGIN
    print(f"{len(singles)} photos of one face, {len(groups)} of four, {FRAME[0]}x{FRAME[1]}")
    print(f"{'photos':<10} {'way':<8} {'ms/photo':>9} " + " ".join(f"{s:>10}" for s in CROP_STEPS))
    for name, photos, faces in (
        ("one face", singles, LARGEST),
        ("group", groups, FaceSelection("all", limit=4)),
    ):
        figures = {}
        for way, margin in (("whole", 1e9), ("near", near), ("whole", 1e9), ("near", near)):
            align.REGION_MARGIN = margin
            ms, steps = timed(photos, faces, args.repeats)
            figures.setdefault(way, []).append(ms)
            split = " ".join(f"{steps[s]:>10.1f}" for s in CROP_STEPS)
            print(f"{name:<10} {way:<8} {ms:>9.1f} {split}", flush=True)
        align.REGION_MARGIN = near
        ratio = min(figures["whole"]) / min(figures["near"])
        print(f"{name}: the whole photo's way takes {ratio:.2f}x the near way's time")


if __name__ == "__main__":
    main()

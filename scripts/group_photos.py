"""Find the group photos of a gallery: the images where dlib finds two or more faces.

    python scripts/group_photos.py $LFW/images --split test --out group-photos.tsv

Runs the detector every-face indexing runs (``server/vision/align.py``:
``detect_faces``, the same limit and smallest face), prints how many images
hold 1, 2, 3... faces, and writes one line per image with two or more:
path, face count, then each face's box (left,top,right,bottom) and score,
largest first. Tests and the eval rows of docs/RESULTS.md pick their group
photos from this list.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

from PIL import Image

from lookalike.server.index.gallery import SPLITS, list_gallery
from lookalike.server.vision.align import detect_faces
from lookalike.server.vision.selection import DEFAULT_MAX_FACES, DEFAULT_MIN_FACE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("gallery", type=Path, help="GALLERY_DIR/<person>/<image>")
    parser.add_argument("--split", choices=SPLITS, default="all")
    parser.add_argument("--limit", type=int, default=DEFAULT_MAX_FACES)
    parser.add_argument("--min-size", type=int, default=DEFAULT_MIN_FACE)
    parser.add_argument("--out", type=Path, help="the group photos, one per line (TSV)")
    args = parser.parse_args()
    images = list_gallery(args.gallery, args.split)
    counts: Counter[int] = Counter()
    lines = []
    started = time.perf_counter()
    for image in images:
        with Image.open(args.gallery / image.path) as photo:
            faces = detect_faces(photo.convert("RGB"), args.limit, args.min_size)
        found = 0 if faces[0].note else len(faces)
        counts[found] += 1
        if found >= 2:
            boxes = [
                ",".join(str(round(v)) for v in face.box) + f" {face.score:.3f}" for face in faces
            ]
            lines.append("\t".join([image.path, str(found), *boxes]))
    seconds = time.perf_counter() - started
    print(f"{len(images)} images in {seconds:.1f} s ({len(images) / seconds:.1f} images/s)")
    print("faces found per image (0: dlib found none):")
    for found in sorted(counts):
        print(f"  {found}: {counts[found]} ({counts[found] / len(images):.1%})")
    print(f"group photos (2 or more faces): {len(lines)}")
    if args.out:
        args.out.write_text("".join(line + "\n" for line in lines))


if __name__ == "__main__":
    main()

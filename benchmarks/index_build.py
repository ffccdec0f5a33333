"""Index build throughput against the embedder alone, in one run.

    python benchmarks/index_build.py --model model.onnx --gallery DIR [--limit 600]

Decoding and cropping run on a thread pool while the embedder works, so a
build should run at nearly the embedder's own speed.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from lookalike.server.index.build import build_index
from lookalike.server.vision.embedder import Embedder
from lookalike.server.vision.imaging import Crop, CropMode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--gallery", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=600, help="people folders to index")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    embedder = Embedder(args.model, device="auto")
    size = embedder.info.input_size
    with tempfile.TemporaryDirectory() as scratch:
        gallery = Path(scratch) / "gallery"
        gallery.mkdir()
        for person in sorted(p for p in args.gallery.iterdir() if p.is_dir())[: args.limit]:
            (gallery / person.name).symlink_to(person.resolve())
        pixels = np.zeros((args.batch_size, size, size, 3), np.float32)
        embedder.embed(pixels)
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < 15:
            embedder.embed(pixels)
            done += args.batch_size
        raw = done / (time.perf_counter() - started)
        report = build_index(
            gallery,
            embedder,
            Path(scratch) / "index",
            Crop(CropMode.CENTER),
            args.batch_size,
            progress=False,
        )
    print(f"embedder alone, batch {args.batch_size}: {raw:.1f} images/s")
    print(
        f"index build of {report.rows} images: {report.images_per_second:.1f} images/s "
        f"({report.seconds:.1f} s), {report.images_per_second / raw:.2f} of the embedder"
    )


if __name__ == "__main__":
    main()

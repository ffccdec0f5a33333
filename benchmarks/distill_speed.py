"""Training speed of `lookalike train --teacher` on this CPU, in images per second.

    python benchmarks/distill_speed.py [--image-size 64] [--batch-size 32] [--steps 6]

Each recipe trains the same student (ResNet101, 128-d head) on synthetic chips
and descriptors; what differs is how much of it each step runs: the whole
network, or only the layers after ``--trainable-from`` on cached outputs of the
frozen ones (computed once per image, timed apart as "frozen pass"). Printed:
images/s of training steps after two warm-up steps, and each recipe's rate as a
ratio of the whole network's, all from one run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from lookalike.export.distill import DistillConfig, Distiller

RECIPES = {
    "whole network": None,
    "conv4_block7 on (cached)": "conv4_block7_1_conv",
    "conv5 on (cached)": "conv5_block1_0_conv",
    "head only (cached)": "head",
}


def measure(
    first_trained: str | None, args: argparse.Namespace, folder: Path
) -> tuple[float, float]:
    """(training images/s, frozen pass images/s or nan)."""
    rng = np.random.default_rng(0)
    n = 4 * args.batch_size
    chips = rng.integers(0, 256, (n, args.image_size, args.image_size, 3), dtype=np.uint8)
    descriptors = rng.normal(size=(n, 128)).astype(np.float32)
    config = DistillConfig(
        data=folder,
        out=folder / "student.keras",
        weights="none",
        image_size=args.image_size,
        batch_size=args.batch_size,
        trainable_from=first_trained,
        steps=args.steps,
        progress=False,
    )
    started = time.perf_counter()
    distiller = Distiller(config, chips, descriptors, None)
    frozen_rate = 2 * n / (time.perf_counter() - started) if first_trained else float("nan")
    rows = np.arange(args.batch_size)
    for _ in range(2):
        distiller.train_step(rows)
    started = time.perf_counter()
    for _ in range(args.steps):
        distiller.train_step(rows)
    return args.steps * args.batch_size / (time.perf_counter() - started), frozen_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    rates = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, first_trained in RECIPES.items():
            rates[name] = measure(first_trained, args, Path(folder))
            print(f"measured {name}", flush=True)
    whole = rates["whole network"][0]
    print(f"\n{args.image_size}px, batch {args.batch_size}, {args.steps} timed steps each")
    print(f"{'recipe':28s} {'train img/s':>12s} {'vs whole':>9s} {'frozen pass img/s':>18s}")
    for name, (rate, frozen) in rates.items():
        print(f"{name:28s} {rate:12.1f} {rate / whole:9.2f} {frozen:18.1f}")


if __name__ == "__main__":
    main()

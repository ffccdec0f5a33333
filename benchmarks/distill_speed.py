"""Training speed of `lookalike train --teacher` on this CPU, in images per second.

    python benchmarks/distill_speed.py [--image-size 64] [--batch-size 32] [--steps 6]

Each gradient recipe trains the same student (ResNet101, 128-d head on the average
of its last map) on synthetic chips and descriptors; what differs is how much of it
each step runs: the whole network, or only the layers after ``--trainable-from`` on
cached outputs of the frozen ones (computed once per image, timed apart as "frozen
pass"). Printed: images/s of training steps after two warm-up steps, and each
recipe's rate as a ratio of the whole network's, all from one run. Then the default
recipe, ``--fit ridge`` on the flattened conv2 map: its frozen pass, and the seconds
of one closed-form solve for ``--ridge-rows`` rows (the real runs' 12,614: 6,307
images and their mirrors), as images/s.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from lookalike.export.training.distill import DistillConfig, Distiller
from lookalike.export.training.ridge import ridge_head

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
        features_from=None,
        pooling="avg",
        fit="gradient",
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


def measure_ridge(args: argparse.Namespace, folder: Path) -> tuple[float, float, float]:
    """(frozen pass img/s to the flattened conv2 map, solve seconds, solve img/s)."""
    rng = np.random.default_rng(0)
    n = 4 * args.batch_size
    chips = rng.integers(0, 256, (n, args.image_size, args.image_size, 3), dtype=np.uint8)
    descriptors = rng.normal(size=(n, 128)).astype(np.float32)
    config = DistillConfig(data=folder, weights="none", image_size=args.image_size, progress=False)
    started = time.perf_counter()
    Distiller(config, chips, descriptors, None)
    frozen_rate = 2 * n / (time.perf_counter() - started)
    width = (args.image_size // 4) ** 2 * 256  # conv2_block3_out, flattened
    features = rng.normal(size=(args.ridge_rows, width)).astype(np.float32)
    targets = rng.normal(size=(args.ridge_rows, 128)).astype(np.float32)
    started = time.perf_counter()
    ridge_head(features, targets, config.ridge_penalty)
    seconds = time.perf_counter() - started
    return frozen_rate, seconds, args.ridge_rows / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--ridge-rows", type=int, default=12614)
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
    with tempfile.TemporaryDirectory() as folder:
        frozen, seconds, rate = measure_ridge(args, Path(folder))
    print(
        f"\nridge head on conv2 (the default): frozen pass {frozen:.1f} img/s; one solve for "
        f"{args.ridge_rows} rows {seconds:.1f} s ({rate:.1f} img/s, {rate / whole:.2f}x the "
        "whole network's training step)"
    )


if __name__ == "__main__":
    main()

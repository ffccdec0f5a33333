"""The embedder alone: onnxruntime (fp32) against Keras, images per second by batch size.

    python benchmarks/embedder.py --model model.onnx [--keras]

--keras also builds the same ResNet101 in Keras (random weights) and times
`predict` on the same batches. Ratios are taken within this one run.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from lookalike.server.embedder import Embedder


def images_per_second(run, size: int, batch: int, seconds: float) -> float:  # noqa: ANN001
    pixels = np.random.default_rng(0).uniform(0, 255, (batch, size, size, 3)).astype(np.float32)
    run(pixels)  # warm-up
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        run(pixels)
        done += batch
    return done / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8, 16, 32])
    parser.add_argument("--seconds", type=float, default=8.0, help="per measurement")
    parser.add_argument("--keras", action="store_true")
    args = parser.parse_args()
    embedder = Embedder(args.model, device="auto")
    size = embedder.info.input_size
    keras_model = None
    if args.keras:
        from lookalike.export.model import build_embedder

        keras_model = build_embedder(size, "none")
    print(f"model {embedder.info.fingerprint} ({size}px) on {embedder.provider}")
    print(f"{'batch':>5} {'onnxruntime img/s':>18} {'keras img/s':>12} {'ratio':>6}")
    for batch in args.batches:
        ort_rate = images_per_second(embedder.embed, size, batch, args.seconds)
        keras_rate = (
            images_per_second(
                lambda x: keras_model.predict(x, verbose=0), size, batch, args.seconds
            )
            if keras_model
            else float("nan")
        )
        print(
            f"{batch:>5} {ort_rate:>18.1f} {keras_rate:>12.1f} {ort_rate / keras_rate:>6.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()

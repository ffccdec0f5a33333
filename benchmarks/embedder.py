"""The embedder alone: onnxruntime (fp32) against Keras, images per second by batch size.

    python benchmarks/embedder.py --model model.onnx [--keras]

--keras also builds the same ResNet101 in Keras (random weights) and times
`predict` on the same batches; --int8 quantises the model dynamically with
onnxruntime's quantization tools (int8 weights, ConvInteger/MatMulInteger)
and times it too; --int8-model times a static int8 copy made by
`lookalike quantize` instead. Ratios are taken within this one run.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from lookalike.server.vision.embedder import Embedder


def images_per_second(run, size: int, batch: int, seconds: float) -> float:  # noqa: ANN001
    pixels = np.random.default_rng(0).uniform(0, 255, (batch, size, size, 3)).astype(np.float32)
    run(pixels)  # warm-up
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        run(pixels)
        done += batch
    return done / (time.perf_counter() - started)


def quantized(model: Path) -> Embedder:
    """A dynamically int8-quantised copy of the model, in a temporary folder."""
    import tempfile

    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    folder = Path(tempfile.mkdtemp(prefix="lookalike-int8-"))
    quant_pre_process(str(model), str(folder / "pre.onnx"))
    quantize_dynamic(folder / "pre.onnx", folder / "int8.onnx", weight_type=QuantType.QInt8)
    return Embedder(folder / "int8.onnx", device="auto")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8, 16, 32])
    parser.add_argument("--seconds", type=float, default=8.0, help="per measurement")
    parser.add_argument("--keras", action="store_true")
    int8_choice = parser.add_mutually_exclusive_group()
    int8_choice.add_argument("--int8", action="store_true", help="dynamic int8, made here")
    int8_choice.add_argument("--int8-model", type=Path, help="a `lookalike quantize` output")
    args = parser.parse_args()
    embedder = Embedder(args.model, device="auto")
    int8 = quantized(args.model) if args.int8 else None
    if args.int8_model:
        int8 = Embedder(args.int8_model, device="auto")
    size = embedder.info.input_size
    keras_model = None
    if args.keras:
        from lookalike.export.model import build_embedder

        keras_model = build_embedder(size, "none")
    print(f"model {embedder.info.fingerprint} ({size}px) on {embedder.provider}")
    print(
        f"{'batch':>5} {'fp32 img/s':>11} {'keras img/s':>12} {'fp32/keras':>10} "
        f"{'int8 img/s':>11} {'int8/fp32':>9}"
    )
    nan = float("nan")
    for batch in args.batches:
        ort_rate = images_per_second(embedder.embed, size, batch, args.seconds)
        keras_rate = (
            images_per_second(
                lambda x: keras_model.predict(x, verbose=0), size, batch, args.seconds
            )
            if keras_model
            else nan
        )
        int8_rate = images_per_second(int8.embed, size, batch, args.seconds) if int8 else nan
        print(
            f"{batch:>5} {ort_rate:>11.1f} {keras_rate:>12.1f} {ort_rate / keras_rate:>10.2f} "
            f"{int8_rate:>11.1f} {int8_rate / ort_rate:>9.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()

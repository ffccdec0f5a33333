"""Static int8 quantisation of an exported embedder, calibrated on gallery images.

Dynamic quantisation (int8 weights, activations quantised at run time) runs
convolutions as ConvInteger, which onnxruntime's CPU kernels execute several
times slower than fp32 (docs/BENCHMARKS.md). Static QDQ quantisation fixes the
activation ranges beforehand from real images, so onnxruntime fuses each
QuantizeLinear/Conv/DequantizeLinear group into an int8 convolution kernel.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process
from tqdm import tqdm

from lookalike.common.files import atomic_path
from lookalike.common.output import bar_disable
from lookalike.server.index.gallery import Split, list_gallery
from lookalike.server.vision.embedder import Embedder, file_fingerprint
from lookalike.server.vision.imaging import WHOLE_FRAME, Crop, ImageError, load


class QuantizeError(RuntimeError):
    pass


@dataclass(frozen=True)
class QuantizeConfig:
    model: Path
    calibration: Path  # a gallery folder, <label>/<image>
    out: Path
    crop: Crop | None = None  # default: the model's own crop, else the whole frame
    split: Split = "all"
    images: int = 64
    batch_size: int = 8
    progress: bool = True

    def __post_init__(self) -> None:
        if self.images < 1 or self.batch_size < 1:
            raise QuantizeError("--images and the batch size must be at least 1")


@dataclass(frozen=True)
class QuantizeReport:
    path: Path
    fingerprint: str
    images: int
    min_cosine: float  # between fp32 and int8 embeddings of the calibration images
    seconds: float


def calibration_pixels(config: QuantizeConfig, crop: Crop, size: int) -> np.ndarray:
    """Up to ``config.images`` images, spread evenly over the gallery's people."""
    gallery = list_gallery(config.calibration, config.split)
    chosen = gallery[:: max(1, len(gallery) // config.images)][: config.images]
    pixels = []
    for image in chosen:
        try:
            data = (config.calibration / image.path).read_bytes()
            pixels.append(load(data, crop, size).pixels)
        except (OSError, ImageError):
            continue
    if not pixels:
        raise QuantizeError(f"none of the images chosen under {config.calibration} could be read")
    return np.stack(pixels)


class Batches(CalibrationDataReader):
    """Feeds the calibration images to onnxruntime's range collector, batch by batch."""

    def __init__(self, input_name: str, pixels: np.ndarray, batch_size: int, progress: bool):
        starts = range(0, len(pixels), batch_size)
        bar = tqdm(starts, desc="calibrating", unit="batch", disable=bar_disable(progress))
        self._batches: Iterator[dict] = (
            {input_name: pixels[start : start + batch_size]} for start in bar
        )

    def get_next(self) -> dict | None:
        return next(self._batches, None)


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(((a * b).sum(axis=1) / np.maximum(norms, 1e-12)).min())


def quantize(config: QuantizeConfig) -> QuantizeReport:
    started = time.perf_counter()
    fp32 = Embedder(config.model, device="cpu")
    crop = config.crop or fp32.info.crop or WHOLE_FRAME
    pixels = calibration_pixels(config, crop, fp32.info.input_size)
    source = onnx.load(str(config.model), load_external_data=False)
    with tempfile.TemporaryDirectory(prefix="lookalike-quantize-") as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(config.model), str(prepared))
        with atomic_path(config.out, tidy=True) as staging:
            quantize_static(
                prepared,
                staging,
                Batches(fp32.input_name, pixels, config.batch_size, config.progress),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
            )
            quantized = onnx.load(str(staging))
            described = {prop.key: prop.value for prop in source.metadata_props}
            described["lookalike.weights"] = f"{described.get('lookalike.weights', '?')}, int8"
            described["lookalike.quantization"] = (
                f"int8 static QDQ (onnxruntime), per-channel weights, MinMax ranges from "
                f"{len(pixels)} images of {config.calibration.name}, crop {crop.mode}"
            )
            onnx.helper.set_model_props(quantized, described)
            onnx.save(quantized, staging)
            int8 = Embedder(staging, device="cpu")
            agreement = min_cosine(fp32.embed(pixels), int8.embed(pixels))
    return QuantizeReport(
        path=config.out,
        fingerprint=file_fingerprint(config.out),
        images=len(pixels),
        min_cosine=agreement,
        seconds=time.perf_counter() - started,
    )

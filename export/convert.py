"""Keras embedder to ONNX with tf2onnx, self-describing and checked against Keras."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np
import onnx
import tensorflow as tf
import tf2onnx

from lookalike.export.model import EMBEDDING_SIZE, build_embedder
from lookalike.server.embedder import file_fingerprint
from lookalike.server.files import atomic_path

INPUT_NAME = "pixels"
OUTPUT_NAME = "embedding"


@dataclass(frozen=True)
class ExportConfig:
    out: Path = Path("model.onnx")
    weights: str = "imagenet"
    image_size: int = 224
    opset: int = 17
    seed: int = 0
    verify_batch: int = 2

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ExportConfig:
        return cls(
            out=args.out,
            weights=args.weights,
            image_size=args.image_size,
            opset=args.opset,
            seed=args.seed,
        )


@dataclass(frozen=True)
class ExportReport:
    path: Path
    fingerprint: str
    max_abs_diff: float
    max_rel_diff: float
    seconds: float


def weights_label(weights: str) -> str:
    return weights if weights in ("imagenet", "none") else Path(weights).name


def metadata(config: ExportConfig) -> dict[str, str]:
    """What the server reads back: it never has to guess how the model was made."""
    return {
        "lookalike.model_name": "resnet101",
        "lookalike.input_size": str(config.image_size),
        "lookalike.embedding_size": str(EMBEDDING_SIZE),
        "lookalike.input_format": "NHWC float32 RGB 0-255",
        "lookalike.preprocessing": "keras.applications.resnet.preprocess_input "
        "(caffe: RGB->BGR, minus ImageNet channel means), in graph",
        "lookalike.weights": weights_label(config.weights),
        "lookalike.exported_by": f"lookalike {version('lookalike')} "
        f"tf2onnx {tf2onnx.__version__} opset {config.opset}",
    }


def to_onnx(model, config: ExportConfig) -> onnx.ModelProto:
    size = config.image_size
    signature = (tf.TensorSpec((None, size, size, 3), tf.float32, name=INPUT_NAME),)
    proto, _ = tf2onnx.convert.from_keras(
        model, input_signature=signature, opset=config.opset, output_path=None
    )
    (output,) = proto.graph.output
    if output.name != OUTPUT_NAME:
        for node in proto.graph.node:
            node.output[:] = [OUTPUT_NAME if name == output.name else name for name in node.output]
        output.name = OUTPUT_NAME
    for value_info in (*proto.graph.input, output):
        value_info.type.tensor_type.shape.dim[0].dim_param = "batch"
    for key, value in metadata(config).items():
        proto.metadata_props.add(key=key, value=value)
    return proto


def compare(model, path: Path, config: ExportConfig) -> tuple[float, float]:
    """Largest absolute and relative difference between Keras and onnxruntime outputs."""
    import onnxruntime as ort

    rng = np.random.default_rng(config.seed)
    size = config.image_size
    batch = rng.uniform(0, 255, (config.verify_batch, size, size, 3)).astype(np.float32)
    expected = np.asarray(model(batch, training=False))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (actual,) = session.run([OUTPUT_NAME], {INPUT_NAME: batch})
    abs_diff = float(np.abs(actual - expected).max())
    return abs_diff, abs_diff / max(float(np.abs(expected).max()), 1e-12)


def export_onnx(config: ExportConfig) -> ExportReport:
    started = time.perf_counter()
    say = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    say(f"building ResNet101 embedder ({config.image_size}px, weights {config.weights})...")
    model = build_embedder(config.image_size, config.weights, config.seed)
    say(f"converting with tf2onnx (opset {config.opset})...")
    with atomic_path(config.out) as staging:
        onnx.save(to_onnx(model, config), staging)
    say("comparing Keras and onnxruntime outputs...")
    abs_diff, rel_diff = compare(model, config.out, config)
    return ExportReport(
        path=config.out,
        fingerprint=file_fingerprint(config.out),
        max_abs_diff=abs_diff,
        max_rel_diff=rel_diff,
        seconds=time.perf_counter() - started,
    )

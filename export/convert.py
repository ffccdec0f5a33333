"""Keras embedder to ONNX with tf2onnx, self-describing and checked against Keras."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import keras
import numpy as np
import onnx
import tensorflow as tf
import tf2onnx

from lookalike.common.files import atomic_path
from lookalike.export.checkpoint import EMBEDDER_LAYER, training_record
from lookalike.export.model import (
    EMBEDDING_SIZE,
    ExportError,
    L2Normalize,
    build_embedder,
    build_pixels_embedder,
    build_student,
    mirrored,
)
from lookalike.server.vision.embedder import file_fingerprint

INPUT_NAME = "pixels"
OUTPUT_NAME = "embedding"


@dataclass(frozen=True)
class ExportConfig:
    out: Path = Path("model.onnx")
    weights: str | None = None  # imagenet for resnet101, dlib for dlib-resnet (the defaults)
    image_size: int | None = None  # 224, or the checkpoint's
    architecture: str = "resnet101"  # or "dlib-resnet": the face network; "pixels": none
    mirror: bool = False  # the mean embedding of each image and of its mirror image
    checkpoint: Path | None = None
    opset: int = 17
    seed: int = 0
    verify_batch: int = 2


@dataclass(frozen=True)
class ExportReport:
    path: Path
    fingerprint: str
    max_abs_diff: float
    max_rel_diff: float
    seconds: float


def weights_label(weights: str | None) -> str:
    weights = weights or "imagenet"
    return weights if weights in ("imagenet", "none") else Path(weights).name


def metadata(
    config: ExportConfig, size: int, embedding_size: int, extra: dict[str, str]
) -> dict[str, str]:
    """What the server reads back: it never has to guess how the model was made."""
    return {
        "lookalike.model_name": "resnet101",
        "lookalike.input_size": str(size),
        "lookalike.embedding_size": str(embedding_size),
        "lookalike.input_format": "NHWC float32 RGB 0-255",
        "lookalike.preprocessing": "keras.applications.resnet.preprocess_input "
        "(caffe: RGB->BGR, minus ImageNet channel means), in graph",
        "lookalike.exported_by": f"lookalike {version('lookalike')} "
        f"tf2onnx {tf2onnx.__version__} opset {config.opset}",
        **extra,
    }


def embedder_to_export(config: ExportConfig) -> tuple[keras.Model, int, dict[str, str]]:
    """The Keras embedder, its input size, and what the metadata must add about it."""
    if config.architecture == "pixels":
        size = config.image_size or 64
        return (
            build_pixels_embedder(size),
            size,
            {
                "lookalike.model_name": "pixels",
                "lookalike.weights": "none (no network)",
                "lookalike.preprocessing": "flattened, each image's mean removed, L2-normalised",
            },
        )
    if config.architecture == "dlib-resnet":
        return dlib_embedder(config)
    if config.checkpoint is None:
        size = config.image_size or 224
        model = build_embedder(size, config.weights or "imagenet", config.seed)
        return model, size, {"lookalike.weights": weights_label(config.weights)}
    import lookalike.export.dlib_resnet  # noqa: F401  (registers its layers for loading)

    if not config.checkpoint.is_file():
        raise ExportError(f"checkpoint not found: {config.checkpoint}")
    embedder = keras.saving.load_model(config.checkpoint).get_layer(EMBEDDER_LAYER)
    record_file = training_record(config.checkpoint)
    record = json.loads(record_file.read_text()) if record_file.is_file() else {}
    trained_size = embedder.input_shape[1]
    size = config.image_size or trained_size
    if size != trained_size and record.get("architecture") == "dlib-resnet":
        raise ExportError(f"dlib's face network takes {trained_size} px chips only")
    if size != trained_size:  # convolution weights do not depend on the input size
        embedder = at_size(embedder, size, config.seed)
    how = f"distilled from {record['teacher']}" if record.get("teacher") else "fine-tuned"
    extra = {
        **(face_network_metadata() if record.get("architecture") == "dlib-resnet" else {}),
        "lookalike.model_name": str(record.get("architecture", "resnet101")),
        "lookalike.weights": f"{how} {config.checkpoint.name} "
        f"(from {weights_label(str(record.get('weights', 'unknown')))})",
        "lookalike.normalization": "l2",
    }
    if record.get("teacher"):
        extra["lookalike.teacher"] = str(record["teacher"])
    if "crop" in record:
        extra["lookalike.crop"] = json.dumps(record["crop"])
    return embedder, size, extra


def dlib_embedder(config: ExportConfig) -> tuple[keras.Model, int, dict[str, str]]:
    """dlib's face network from its .dat file: 150 px aligned chips, 128-d descriptors."""
    from lookalike.export.dlib_format import DlibFormatError
    from lookalike.export.dlib_resnet import (
        INPUT_SIZE,
        build_dlib_resnet,
        dlib_weights_path,
        read_dlib_resnet,
    )

    if config.checkpoint is not None:
        raise ExportError("--checkpoint and --architecture dlib-resnet: give one")
    if config.image_size not in (None, INPUT_SIZE):
        raise ExportError(f"dlib's face network takes {INPUT_SIZE} px chips only")
    try:
        path = dlib_weights_path(config.weights)
        model = build_dlib_resnet(read_dlib_resnet(path))
    except (DlibFormatError, FileNotFoundError, ModuleNotFoundError) as error:
        raise ExportError(str(error)) from None
    return (
        model,
        INPUT_SIZE,
        {
            **face_network_metadata(),
            "lookalike.weights": f"dlib {path.name} ({file_fingerprint(path)}), "
            "ported by lookalike's reader",
            "lookalike.normalization": "none (dlib's descriptors: same person below about 0.6)",
        },
    )


def face_network_metadata() -> dict[str, str]:
    """What every model made from dlib's face network says, fine-tuned or not."""
    from lookalike.export.dlib_resnet import WEIGHTS_LICENCE
    from lookalike.server.vision.imaging import ALIGNED

    return {
        "lookalike.model_name": "dlib-resnet",
        "lookalike.weights_licence": WEIGHTS_LICENCE,
        "lookalike.preprocessing": "dlib's input_rgb_image: (RGB - (122.782, 117.001, "
        "104.298)) / 256, in graph",
        "lookalike.crop": json.dumps(ALIGNED.to_dict()),
    }


def at_size(embedder: keras.Model, size: int, seed: int) -> keras.Model:
    """The same trained embedder taking ``size`` px inputs (with or without a dense head)."""
    embedding_size = embedder.output_shape[-1]
    if embedding_size == EMBEDDING_SIZE:
        base = build_embedder(size, "none", seed)
        resized = keras.Model(base.input, L2Normalize(name="l2")(base.output))
    else:
        resized = build_student(size, embedding_size, "none", seed)
    resized.set_weights(embedder.get_weights())
    return resized


def to_onnx(model, config: ExportConfig, size: int, extra: dict[str, str]) -> onnx.ModelProto:
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
    for key, value in metadata(config, size, model.output_shape[-1], extra).items():
        proto.metadata_props.add(key=key, value=value)
    return proto


def compare(model, path: Path, config: ExportConfig, size: int) -> tuple[float, float]:
    """Largest absolute and relative difference between Keras and onnxruntime outputs."""
    import onnxruntime as ort

    rng = np.random.default_rng(config.seed)
    batch = rng.uniform(0, 255, (config.verify_batch, size, size, 3)).astype(np.float32)
    expected = np.asarray(model(batch, training=False))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (actual,) = session.run([OUTPUT_NAME], {INPUT_NAME: batch})
    abs_diff = float(np.abs(actual - expected).max())
    return abs_diff, abs_diff / max(float(np.abs(expected).max()), 1e-12)


def export_onnx(config: ExportConfig) -> ExportReport:
    started = time.perf_counter()
    say = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    source = config.checkpoint or f"weights {config.weights or 'default'}"
    what = "the" if config.checkpoint else f"the {config.architecture}"
    say(f"building {what} embedder from {source}...")
    model, size, extra = embedder_to_export(config)
    if config.mirror:
        model = mirrored(model)
        extra = {
            **extra,
            "lookalike.model_name": f"{extra.get('lookalike.model_name', 'resnet101')}-mirror",
            "lookalike.mirror": "the mean embedding of the image and of its mirror image",
        }
    say(f"converting with tf2onnx ({size}px, opset {config.opset})...")
    with atomic_path(config.out, tidy=True) as staging:
        onnx.save(to_onnx(model, config, size, extra), staging)
    say("comparing Keras and onnxruntime outputs...")
    abs_diff, rel_diff = compare(model, config.out, config, size)
    return ExportReport(
        path=config.out,
        fingerprint=file_fingerprint(config.out),
        max_abs_diff=abs_diff,
        max_rel_diff=rel_diff,
        seconds=time.perf_counter() - started,
    )

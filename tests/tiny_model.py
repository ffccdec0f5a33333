"""A tiny ONNX embedder with lookalike's metadata, for every test not about the ResNet.

It is the graph `lookalike export --architecture pixels` makes (the pixels
flattened, each image's mean removed, L2-normalised), written with onnx's
helpers in milliseconds instead of through TensorFlow and tf2onnx. It is a real
ONNX file that onnxruntime runs; each image gets its own unit vector, so an
image finds itself first, and a server loads it in milliseconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

TINY_IMAGE_SIZE = 32


def write_tiny_model(out: Path, image_size: int = TINY_IMAGE_SIZE) -> Path:
    """Write the pixels embedder for ``image_size`` px squares to ``out``; returns it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    features = image_size * image_size * 3
    nodes = [
        helper.make_node("Reshape", ["pixels", "flat_shape"], ["flat"]),
        helper.make_node("ReduceMean", ["flat"], ["mean"], axes=[1], keepdims=1),
        helper.make_node("Sub", ["flat", "mean"], ["centred"]),
        helper.make_node("Mul", ["centred", "centred"], ["squares"]),
        helper.make_node("ReduceSum", ["squares", "last_axis"], ["sum"], keepdims=1),
        helper.make_node("Sqrt", ["sum"], ["norm"]),
        helper.make_node("Max", ["norm", "epsilon"], ["safe_norm"]),
        helper.make_node("Div", ["centred", "safe_norm"], ["embedding"]),
    ]
    constants = [
        numpy_helper.from_array(np.array([-1, features], np.int64), "flat_shape"),
        numpy_helper.from_array(np.array([1], np.int64), "last_axis"),
        numpy_helper.from_array(np.array(1e-12, np.float32), "epsilon"),
    ]
    graph = helper.make_graph(
        nodes,
        "pixels",
        [
            helper.make_tensor_value_info(
                "pixels", TensorProto.FLOAT, ["batch", image_size, image_size, 3]
            )
        ],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", features])],
        constants,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what onnxruntime of the oldest supported release reads
    for key, value in {
        "lookalike.model_name": "pixels",
        "lookalike.input_size": str(image_size),
        "lookalike.embedding_size": str(features),
        "lookalike.input_format": "NHWC float32 RGB 0-255",
        "lookalike.preprocessing": "flattened, each image's mean removed, L2-normalised",
        "lookalike.weights": "none (no network)",
    }.items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    onnx.save(model, out)
    return out

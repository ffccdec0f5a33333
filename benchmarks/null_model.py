"""Write an embedder that costs next to nothing: what Search costs without its model.

    python benchmarks/null_model.py --image-size 112 --embedding-size 2048 --out null.onnx
    lookalike index GALLERY --out idx-null --model null.onnx --crop center
    python benchmarks/search_load.py --model null.onnx --index idx-null --images GALLERY

Served in place of the ResNet101, with the same input size and embedding size, every
other stage of a Search stays as it is (decode, crop, gRPC, the batcher, a k-NN over
rows of the same width, the response), so ``search_load.py``'s "server CPU ms/req"
is the serving path's own cost. Against the model's CPU per image it bounds what
Search can reach: model / (model + serving path) of raw onnxruntime, on cores that
are never idle.

The graph takes the first ``embedding-size`` values of the flattened pixels, removes
their mean and L2-normalises them; each image gets a vector of its own.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def write_null_model(out: Path, image_size: int, embedding_size: int) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if embedding_size > image_size * image_size * 3:
        raise SystemExit(f"--embedding-size is at most {image_size * image_size * 3}")
    nodes = [
        helper.make_node("Reshape", ["pixels", "flat_shape"], ["flat"]),
        helper.make_node("Slice", ["flat", "starts", "ends", "axes"], ["first"]),
        helper.make_node("ReduceMean", ["first"], ["mean"], axes=[1], keepdims=1),
        helper.make_node("Sub", ["first", "mean"], ["centred"]),
        helper.make_node("LpNormalization", ["centred"], ["embedding"], axis=1, p=2),
    ]
    constants = [
        numpy_helper.from_array(np.array([0, -1], np.int64), "flat_shape"),
        numpy_helper.from_array(np.array([0], np.int64), "starts"),
        numpy_helper.from_array(np.array([embedding_size], np.int64), "ends"),
        numpy_helper.from_array(np.array([1], np.int64), "axes"),
    ]
    shape = ["batch", image_size, image_size, 3]
    graph = helper.make_graph(
        nodes,
        "null",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", embedding_size])],
        constants,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in {
        "lookalike.model_name": "null",
        "lookalike.input_size": str(image_size),
        "lookalike.embedding_size": str(embedding_size),
        "lookalike.input_format": "NHWC float32 RGB 0-255",
        "lookalike.preprocessing": "the first pixel values, centred, L2-normalised",
        "lookalike.weights": "none (a benchmark's stand-in for a model)",
    }.items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    onnx.save(model, out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--embedding-size", type=int, default=2048)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    print(write_null_model(args.out, args.image_size, args.embedding_size))


if __name__ == "__main__":
    main()

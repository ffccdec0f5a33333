"""`lookalike quantize`: an int8 copy of the exported embedder that says what it is."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest

from lookalike.export.quantize import QuantizeConfig, min_cosine, quantize
from lookalike.server.index.store import GalleryIndex, InvalidIndexError
from lookalike.server.vision.embedder import Embedder
from lookalike.server.vision.imaging import WHOLE_FRAME, prepare
from tests.conftest import TEST_IMAGE_SIZE
from tests.imagegen import person_image


@pytest.fixture(scope="module")
def int8_model(resnet_model, gallery_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("int8") / "model-int8.onnx"
    return quantize(QuantizeConfig(resnet_model, gallery_dir, out, images=12, progress=False))


def test_the_copy_runs_int8_convolutions_and_describes_itself(int8_model):
    graph = onnx.load(str(int8_model.path)).graph
    operators = {node.op_type for node in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= operators
    int8_weights = [t for t in graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert len(int8_weights) >= 100  # ResNet101 has 104 convolutions
    info = Embedder(int8_model.path, device="cpu").info
    assert (info.name, info.input_size) == ("resnet101", TEST_IMAGE_SIZE)
    assert info.weights == "none, int8"
    meta = {prop.key: prop.value for prop in onnx.load(str(int8_model.path)).metadata_props}
    assert "from 12 images of gallery" in meta["lookalike.quantization"]
    assert int8_model.images == 12


def test_int8_embeddings_follow_fp32_on_images_it_was_not_calibrated_on(
    resnet_embedder, int8_model
):
    unseen = [person_image(person, photo) for person in (40, 41, 42) for photo in (0, 1)]
    pixels = np.stack([prepare(image, WHOLE_FRAME, TEST_IMAGE_SIZE).pixels for image in unseen])
    fp32 = resnet_embedder.embed(pixels)
    int8 = Embedder(int8_model.path, device="cpu").embed(pixels)
    assert int8.shape == fp32.shape == (6, 2048)
    assert min_cosine(fp32, int8) > 0.98
    assert int8_model.min_cosine > 0.98
    assert not np.array_equal(fp32, int8)


def test_an_index_of_the_fp32_model_refuses_the_int8_model(index_dir, int8_model):
    int8 = Embedder(int8_model.path, device="cpu")
    with pytest.raises(InvalidIndexError, match="rebuild the index with this model"):
        GalleryIndex.open(index_dir).check_model(int8.info)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"calibration": "empty"}, "no images of split 'all'"),
        ({"extra": ["--images", "0"]}, "--images and the batch size must be at least 1"),
        ({"model": "missing.onnx"}, "model file not found"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(onnx_model, gallery_dir, tmp_path, change, message):
    (tmp_path / "empty" / "somebody").mkdir(parents=True)
    model = tmp_path / change["model"] if "model" in change else onnx_model
    calibration = tmp_path / change["calibration"] if "calibration" in change else gallery_dir
    out = tmp_path / "int8.onnx"
    run = subprocess.run(
        [sys.executable, "-m", "lookalike.client.cli", "quantize", str(model)]
        + ["--calibration", str(calibration), "--out", str(out), *change.get("extra", [])],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 2, run.stderr
    assert message in run.stderr
    assert list(tmp_path.glob("*.onnx*")) == []

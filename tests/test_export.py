"""The exported ONNX embedder: its contract with the server, and the Keras model behind it."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from tests.conftest import TEST_IMAGE_SIZE


@pytest.fixture(scope="module")
def session(onnx_model):
    return ort.InferenceSession(str(onnx_model), providers=["CPUExecutionProvider"])


def test_graph_takes_pixels_with_a_dynamic_batch_and_gives_2048_d(session):
    (pixels,) = session.get_inputs()
    (embedding,) = session.get_outputs()
    assert pixels.name == "pixels" and pixels.type == "tensor(float)"
    assert pixels.shape == ["batch", TEST_IMAGE_SIZE, TEST_IMAGE_SIZE, 3]
    assert embedding.name == "embedding" and embedding.shape == ["batch", 2048]


def test_metadata_describes_the_model(session):
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["lookalike.model_name"] == "resnet101"
    assert meta["lookalike.input_size"] == str(TEST_IMAGE_SIZE)
    assert meta["lookalike.embedding_size"] == "2048"
    assert meta["lookalike.weights"] == "none"
    assert meta["lookalike.input_format"] == "NHWC float32 RGB 0-255"
    assert "preprocess_input" in meta["lookalike.preprocessing"]


def test_a_batch_gives_the_same_rows_as_single_images(session):
    rng = np.random.default_rng(3)
    batch = rng.uniform(0, 255, (3, TEST_IMAGE_SIZE, TEST_IMAGE_SIZE, 3)).astype(np.float32)
    (together,) = session.run(None, {"pixels": batch})
    alone = np.concatenate([session.run(None, {"pixels": batch[i : i + 1]})[0] for i in range(3)])
    assert together.shape == (3, 2048)
    np.testing.assert_allclose(together, alone, rtol=1e-4, atol=1e-4 * np.abs(alone).max())
    assert not np.allclose(together[0], together[1])


def test_in_graph_preprocessing_is_keras_resnet_preprocess_input():
    import keras

    from lookalike.export.model import ResNetPreprocess

    rng = np.random.default_rng(0)
    rgb = rng.uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
    expected = keras.applications.resnet.preprocess_input(rgb.copy())
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(ResNetPreprocess()(rgb)), expected, atol=1e-4
    )


def test_imagenet_without_network_names_the_weights_option():
    from lookalike.export.model import ExportError, build_embedder

    with pytest.raises(ExportError, match="--weights none"):
        build_embedder(32, "imagenet")


def test_local_weights_file_is_loaded(tmp_path):
    import keras

    from lookalike.export.model import build_embedder

    keras.utils.set_random_seed(7)
    source = keras.applications.ResNet101(
        include_top=False, pooling="avg", weights=None, input_shape=(32, 32, 3)
    )
    path = tmp_path / "resnet101_notop.weights.h5"
    source.save_weights(path)
    model = build_embedder(32, str(path), seed=0)
    backbone = model.get_layer(source.name)
    for mine, theirs in zip(backbone.weights, source.weights, strict=True):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())

"""The exported ONNX embedder: its contract with the server, and the Keras model behind it."""

from __future__ import annotations

import argparse

import numpy as np
import onnxruntime as ort
import pytest

from tests.conftest import TEST_IMAGE_SIZE


@pytest.fixture(scope="module")
def session(resnet_model):
    return ort.InferenceSession(str(resnet_model), providers=["CPUExecutionProvider"])


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
    assert meta["lookalike.exported_by"].startswith("lookalike ")
    assert " tf2onnx " in meta["lookalike.exported_by"]
    assert meta["lookalike.exported_by"].endswith(" opset 17")


def test_a_batch_gives_the_same_rows_as_single_images(session):
    rng = np.random.default_rng(3)
    batch = rng.uniform(0, 255, (3, TEST_IMAGE_SIZE, TEST_IMAGE_SIZE, 3)).astype(np.float32)
    (together,) = session.run(None, {"pixels": batch})
    alone = np.concatenate([session.run(None, {"pixels": batch[i : i + 1]})[0] for i in range(3)])
    assert together.shape == (3, 2048)
    np.testing.assert_allclose(together, alone, rtol=1e-4, atol=1e-4 * np.abs(alone).max())
    assert not np.allclose(together[0], together[1])


@pytest.fixture(scope="module")
def keras_model():
    """The Keras model the session fixture exported: same size, random weights, seed 0."""
    from lookalike.export.model import build_embedder

    return build_embedder(TEST_IMAGE_SIZE, "none", seed=0)


@pytest.fixture
def random_pixels():
    rng = np.random.default_rng(5)
    return rng.uniform(0, 255, (2, TEST_IMAGE_SIZE, TEST_IMAGE_SIZE, 3)).astype(np.float32)


def test_onnx_gives_what_keras_gives(session, keras_model, random_pixels):
    if session.get_modelmeta().custom_metadata_map["lookalike.weights"] != "none":
        pytest.skip("LOOKALIKE_TEST_MODEL is not a random-weight export")
    expected = np.asarray(keras_model(random_pixels, training=False))
    (actual,) = session.run(["embedding"], {"pixels": random_pixels})
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


def test_in_graph_preprocessing_is_keras_resnet_preprocess_input(keras_model, random_pixels):
    import keras

    expected = keras.applications.resnet.preprocess_input(random_pixels.copy())
    in_graph = keras.ops.convert_to_numpy(keras_model.get_layer("preprocess")(random_pixels))
    np.testing.assert_allclose(in_graph, expected, atol=1e-4)
    # ...and it is what the backbone is fed: nothing before it, nothing between.
    backbone = keras_model.get_layer("resnet101")
    embedding = np.asarray(keras_model(random_pixels, training=False))
    np.testing.assert_allclose(
        embedding, backbone(expected, training=False), atol=1e-6 * np.abs(embedding).max()
    )


@pytest.fixture
def empty_keras_cache(monkeypatch, tmp_path):
    """Weights a developer once downloaded must not let the download tests pass by."""
    from keras.src.backend import config

    monkeypatch.setattr(config, "_KERAS_DIR", str(tmp_path / "keras"))


@pytest.mark.usefixtures("empty_keras_cache")
def test_imagenet_without_network_names_the_weights_option():
    """This workplace has no network: the download fails at once (name resolution)."""
    from lookalike.export.model import ExportError, build_embedder

    with pytest.raises(ExportError, match="--weights none"):
        build_embedder(32, "imagenet")


@pytest.mark.usefixtures("empty_keras_cache")
def test_cli_export_without_the_imagenet_weights_exits_2_and_writes_nothing(tmp_path, capsys):
    from lookalike.export.cli import add_export_parser

    parser = argparse.ArgumentParser()
    add_export_parser(parser.add_subparsers())
    args = parser.parse_args(["export", "--image-size", "32", "--out", str(tmp_path / "m.onnx")])
    assert args.weights is None  # the architecture's own default: ImageNet for ResNet101
    assert args.func(args) == 2
    assert "error: cannot download" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


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


def test_the_pixels_floor_exports_centred_unit_pixels(tmp_path):
    """`export --architecture pixels`: no network, each image's pixels minus their mean,
    L2-normalised; the metadata names it and gives its real embedding size."""
    from lookalike.export.convert import ExportConfig, export_onnx
    from lookalike.server.vision.embedder import Embedder

    report = export_onnx(
        ExportConfig(out=tmp_path / "pixels.onnx", architecture="pixels", image_size=8)
    )
    embedder = Embedder(report.path, "cpu")
    assert (embedder.info.embedding_size, embedder.info.name) == (8 * 8 * 3, "pixels")
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
    session = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    (embedding,) = session.run(None, {"pixels": pixels})
    flat = pixels.reshape(2, -1) - pixels.reshape(2, -1).mean(axis=1, keepdims=True)
    expected = flat / np.linalg.norm(flat, axis=1, keepdims=True)
    np.testing.assert_allclose(embedding, expected, atol=1e-6)


def test_saved_layers_keep_their_registered_names():
    """.keras checkpoints name their layers lookalike>Class; the modules may move, not that."""
    import keras

    from lookalike.export.checkpoint import CosineHead
    from lookalike.export.model import L2Normalize

    names = {keras.saving.get_registered_name(layer) for layer in (CosineHead, L2Normalize)}
    assert names == {"lookalike>CosineHead", "lookalike>L2Normalize"}

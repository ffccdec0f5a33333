"""Fine-tuning on a tiny generated dataset, resuming, and exporting the checkpoint."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

from lookalike.server.vision.imaging import Crop
from tests.imagegen import write_gallery
from tests.sharing import held, run_folder

SIZE = 32


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    return write_gallery(tmp_path_factory.mktemp("faces"), people=5, photos=4, size=80)


def config_for(faces, out, **changes):
    from lookalike.export.training.train import TrainConfig

    settings = dict(
        data=faces,
        out=out,
        weights="none",
        image_size=SIZE,
        epochs=1,
        trainable_from="conv5_block3_1_conv",
        split="all",
        batch_size=8,
    )
    return TrainConfig(**{**settings, **changes})


@pytest.fixture(scope="module")
def trained(faces, tmp_path_factory):
    """One epoch, then a second one resumed from the first's checkpoint: trained once per
    test run (about 40 s) by the first pytest-xdist worker that needs it; another waits
    for it and reads the same files."""
    from lookalike.export.training.train import train

    out = run_folder(tmp_path_factory) / "trained" / "model.keras"
    out.parent.mkdir(exist_ok=True)
    with held(out.parent / "training.lock"):
        if not out.is_file():
            train(config_for(faces, out))
            train(config_for(faces, out, epochs=2, resume=True))
    return out


def test_training_checkpoints_every_epoch_and_resumes(trained):
    checkpoints = trained.with_name("model.keras.checkpoints")
    assert sorted(p.name for p in checkpoints.glob("epoch-*.keras")) == [
        "epoch-001.keras",
        "epoch-002.keras",
    ]
    history = [
        json.loads(line) for line in (checkpoints / "history.jsonl").read_text().splitlines()
    ]
    epochs = [entry for entry in history if entry.get("stage") != "start"]
    assert [entry["epoch"] for entry in epochs] == [1, 2]  # the resume ran epoch 2 only
    assert all(0.0 <= entry["val_hit_at_1"] <= 1.0 and entry["loss"] > 0 for entry in epochs)
    # each run logs where it started, so a curve has its first point
    assert [entry.get("stage") for entry in history].count("start") == 2
    record = json.loads(trained.with_name("model.keras.json").read_text())
    assert record["crop"] == {"mode": "center", "fraction": 0.5} and record["epochs"] == 2


@pytest.mark.usefixtures("tf2onnx_alone")
def test_checkpoint_exports_with_its_crop_and_normalisation(trained, tmp_path, faces):
    from lookalike.export.convert import ExportConfig, export_onnx
    from lookalike.server.index.build import build_index
    from lookalike.server.index.store import InvalidIndexError
    from lookalike.server.vision.embedder import Embedder

    report = export_onnx(ExportConfig(out=tmp_path / "tuned.onnx", checkpoint=trained))
    assert report.max_rel_diff < 1e-3
    session = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["lookalike.input_size"] == str(SIZE)
    assert json.loads(meta["lookalike.crop"]) == {"mode": "center", "fraction": 0.5}
    assert meta["lookalike.weights"] == "fine-tuned model.keras (from none)"
    batch = np.random.default_rng(0).uniform(0, 255, (3, SIZE, SIZE, 3)).astype(np.float32)
    (embedding,) = session.run(None, {"pixels": batch})
    assert embedding.shape == (3, 2048)
    np.testing.assert_allclose(np.linalg.norm(embedding, axis=1), 1.0, rtol=1e-4)

    embedder = Embedder(report.path, device="cpu")
    assert embedder.info.crop == Crop("center")
    index = build_index(faces, embedder, tmp_path / "index", progress=False)
    from lookalike.server.index.store import GalleryIndex

    assert GalleryIndex.open(tmp_path / "index").manifest.crop == Crop("center")
    assert index.rows == 20
    with pytest.raises(InvalidIndexError, match="trained on crop center"):
        build_index(faces, embedder, tmp_path / "other", crop=Crop("none"), progress=False)


def test_training_crop_is_the_index_and_server_crop(faces, tmp_path):
    """Same file, same crop, same pixels (rounded to the uint8 chips training keeps):
    training sees what search will see."""
    from lookalike.export.training.train import pixels_of
    from lookalike.server.index.gallery import list_gallery
    from lookalike.server.vision.imaging import load

    image = list_gallery(faces)[3]
    config = config_for(faces, tmp_path / "unused.keras")
    trained_on = pixels_of(faces, [image], config)[0]
    served = load((faces / image.path).read_bytes(), config.crop, SIZE).pixels
    np.testing.assert_array_equal(trained_on, np.clip(served.round(), 0, 255))
    whole = load((faces / image.path).read_bytes(), Crop("none"), SIZE).pixels
    assert not np.array_equal(trained_on, whole)


def test_one_identity_is_refused(tmp_path):
    from lookalike.export.training.train import TrainingError, train

    data = write_gallery(tmp_path / "one", people=1, photos=4)
    with pytest.raises(TrainingError, match="at least two people"):
        train(config_for(data, tmp_path / "m.keras"))


def test_unreadable_images_are_refused_before_training(tmp_path):
    from lookalike.export.training.train import TrainingError, train

    data = write_gallery(tmp_path / "faces", people=3, photos=2)
    (data / "person_01" / "person_01_0009.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(TrainingError, match="(?s)1 images cannot be read.*person_01_0009.jpg"):
        train(config_for(data, tmp_path / "m.keras"))

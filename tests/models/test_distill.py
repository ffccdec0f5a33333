"""`lookalike train --teacher dlib` end to end on real faces: teacher descriptors, aligned
chips, a closed-form head that learns, a few steps, a resumable checkpoint, and an exported
128-d ONNX model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest

from lookalike.export.convert import ExportConfig, export_onnx
from lookalike.export.training.distill import DistillConfig, distill
from lookalike.server.index.store import GalleryIndex
from lookalike.server.vision.embedder import Embedder
from tests.imagegen import small_gallery


def small_run(lfw_dir, tmp_path, **settings) -> DistillConfig:
    """Three gradient steps on 36 faces at 32 px, random weights: seconds, not minutes."""
    return DistillConfig(
        data=small_gallery(lfw_dir, tmp_path / "gallery"),
        out=tmp_path / "student.keras",
        weights="none",
        image_size=32,
        batch_size=8,
        progress=False,
        **{"fit": "gradient", "steps": 3, "eval_every_minutes": 100, **settings},
    )


def test_the_closed_form_head_learns_the_teacher_on_real_faces(lfw_dir, tmp_path):
    """The default recipe (ridge head on ResNet101's conv2 map) lowers the whitened loss and
    raises hit@1 over the same network with a random head, on the faces it was fitted to;
    the exported ONNX model computes what Keras does."""
    import keras

    from lookalike.export.model import build_student
    from lookalike.export.training.distill import student_chips, teacher_descriptors
    from lookalike.export.training.losses import Whitening
    from lookalike.export.training.train import training_people
    from lookalike.server.evaluation.evaluate import leave_one_out_hit_at_1

    config = small_run(lfw_dir, tmp_path, fit="ridge", steps=None)
    distill(config)
    images, validation = training_people(config.data, "train", None, config.seed, True)
    chips = student_chips(config, images + validation)[: len(images)].astype(np.float32)
    descriptors = teacher_descriptors(config, images)
    targets = Whitening.fit(descriptors).whitened(descriptors)
    labels = np.array([image.label for image in images])
    fitted = keras.saving.load_model(config.out).get_layer("embedder")
    untrained = build_student(32, 128, "none", config.seed, "flatten", "conv2_block3_out")
    scores = {}
    for name, model in (("fitted", fitted), ("untrained", untrained)):
        embedding = np.asarray(model.predict_on_batch(chips))
        loss = float(np.mean(1 - np.sum(embedding * targets, axis=1)))
        scores[name] = (loss, leave_one_out_hit_at_1(embedding, labels))
    assert scores["fitted"][0] < scores["untrained"][0] - 0.3, scores
    assert scores["fitted"][1] > scores["untrained"][1] + 0.2, scores
    history = [json.loads(line) for line in (config.checkpoints / "history.jsonl").open()]
    assert [line["stage"] for line in history] == ["start", "ridge"]

    report = export_onnx(ExportConfig(out=tmp_path / "student.onnx", checkpoint=config.out))
    assert report.max_abs_diff < 1e-4
    assert Embedder(report.path, "cpu").info.embedding_size == 128


def test_ridge_head_primal_and_dual_agree_and_recover_a_linear_map():
    """Both forms of the solve give one answer; with a small penalty and noiseless targets
    they recover the map (bias included) that made the targets."""
    from lookalike.export.training.ridge import ridge_head

    rng = np.random.default_rng(0)
    weights, bias = rng.normal(size=(20, 3)), rng.normal(size=3)
    tall = rng.normal(size=(200, 20)) + 5.0  # more rows than features: the primal form
    fit_w, fit_b = ridge_head(tall.copy(), tall @ weights + bias, 1e-9)
    assert np.allclose(fit_w, weights, atol=1e-3) and np.allclose(fit_b, bias, atol=1e-2)
    wide = rng.normal(size=(15, 40))  # fewer rows than features: the dual form
    targets = rng.normal(size=(15, 3))
    dual = ridge_head(wide.copy(), targets, 0.5)
    primal = ridge_head(np.vstack([wide, wide]), np.vstack([targets, targets]), 0.5)
    # the same problem twice over: rows doubled, the mean squared norm (so lam) unchanged
    scale = np.linalg.norm(wide - wide.mean(0)) ** 2 / 15
    centred = wide - wide.mean(0)
    expected = np.linalg.solve(
        2 * centred.T @ centred + 0.5 * scale * np.eye(40), 2 * centred.T @ targets
    )
    assert np.allclose(primal[0], expected, atol=1e-4)
    single = np.linalg.solve(centred.T @ centred + 0.5 * scale * np.eye(40), centred.T @ targets)
    assert np.allclose(dual[0], single, atol=1e-4)


def test_a_killed_descriptor_cache_build_resumes(lfw_dir, tmp_path):
    """SIGKILL while the teacher's descriptors are being computed; the next run goes on from
    the journal instead of starting over, and ends with a descriptor for every face."""
    gallery = small_gallery(lfw_dir, tmp_path / "gallery", people=20)
    out = tmp_path / "student.keras"
    command = [sys.executable, "-m", "lookalike.client.cli", "train", str(gallery)]
    command += ["--teacher", "dlib"]
    command += ["--weights", "none", "--image-size", "32", "--out", str(out)]
    journal = tmp_path / "student.keras.checkpoints" / ".teacher-dlib.building" / "journal.jsonl"
    first = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (journal.is_file() and len(journal.read_text().splitlines()) > 10):
        assert first.poll() is None and time.monotonic() < deadline, "never got to the teacher"
        time.sleep(0.05)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    done_before = len(journal.read_text().splitlines()) - 1  # the header line
    assert 10 <= done_before < 60
    second = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-2000:]
    resumed = [line for line in second.stderr.splitlines() if "resuming:" in line]
    assert resumed and int(resumed[0].split("resuming: ")[1].split()[0]) >= done_before
    index = GalleryIndex.open(out.parent / "student.keras.checkpoints" / "teacher-dlib")
    assert sum(1 + len(item.also) for item in index.manifest.items) == 60


def test_distillation_trains_resumes_and_exports(lfw_dir, tmp_path):
    config = small_run(lfw_dir, tmp_path)
    distill(config)
    resumed = DistillConfig(**{**config.__dict__, "steps": 5, "resume": True})
    distill(resumed)
    history = [json.loads(line) for line in (config.checkpoints / "history.jsonl").open()]
    assert [line["step"] for line in history] == [0, 3, 5]  # the second run went on from 3
    assert (config.checkpoints / "teacher-dlib" / "manifest.json").is_file()

    report = export_onnx(ExportConfig(out=tmp_path / "student.onnx", checkpoint=config.out))
    meta = {p.key: p.value for p in onnx.load(report.path).metadata_props}
    assert meta["lookalike.embedding_size"] == "128"
    assert meta["lookalike.teacher"] == "dlib"
    assert json.loads(meta["lookalike.crop"])["mode"] == "align"
    info = Embedder(report.path, "cpu").info
    assert (info.embedding_size, info.input_size, info.crop.mode) == (128, 32, "align")


def test_frozen_layers_run_once_and_only_the_rest_trains(lfw_dir, tmp_path):
    """With --trainable-from the frozen prefix's outputs are cached and its weights (and
    every frozen BatchNorm statistic) stay as they were; the exported model is the whole
    network, prefix included."""
    import keras
    import numpy as np

    from lookalike.export.model import build_student
    from lookalike.export.training.distill import backbone_of

    config = small_run(
        lfw_dir,
        tmp_path,
        trainable_from="conv5_block1_0_conv",
        features_from=None,  # the head reads the last layer
        pooling="flatten",  # all of its feature map
    )
    distill(config)
    assert len(list(config.checkpoints.glob("frozen-conv5_block1_0_conv-*.npy"))) == 1

    before = backbone_of(build_student(32, 128, "none", config.seed, "flatten"))
    after = backbone_of(keras.saving.load_model(config.out).get_layer("embedder"))
    changed = {
        layer.name
        for old, layer in zip(before.layers, after.layers, strict=True)
        for w_old, w_new in zip(old.get_weights(), layer.get_weights(), strict=True)
        if not np.array_equal(w_old, w_new)
    }
    assert changed, "nothing trained"
    assert all(name.startswith("conv5_") for name in changed), sorted(changed)[:5]
    assert not any(name.endswith("_bn") for name in changed)  # frozen BatchNorm by default


def test_fresh_steps_learn_from_the_teacher_in_the_graph(lfw_dir, tmp_path):
    """--fresh: every step the teacher describes newly augmented chips inside the graph; the
    head learns from them (its loss falls below that of the same head not learning, on the
    same seeded batches and augmentations), nothing of the augmented faces is cached, and
    the checkpoint exports as any student does."""

    def losses(learning_rate: float, folder: Path) -> tuple[DistillConfig, np.ndarray]:
        config = small_run(
            lfw_dir, folder, fresh=True, steps=16, learning_rate=learning_rate, eval_every_minutes=0
        )
        distill(config)
        history = [json.loads(line) for line in (config.checkpoints / "history.jsonl").open()]
        return config, np.array([line["loss"] for line in history if line["stage"] == "gradient"])

    _, frozen = losses(0.0, tmp_path / "frozen")
    config, learning = losses(3e-3, tmp_path / "learning")
    assert len(learning) == len(frozen) == 16
    assert learning[0] == pytest.approx(frozen[0])  # the same first batch, before any step
    # one batch's loss moves by more than 0.1 from the next; the same batches' do not
    assert np.mean(frozen[-8:] - learning[-8:]) > 0.02, (frozen, learning)
    assert not list(config.checkpoints.glob("augmented-*"))
    assert (config.checkpoints / "chips-150.npy").is_file()  # the teacher's aligned chips
    report = export_onnx(ExportConfig(out=tmp_path / "fresh.onnx", checkpoint=config.out))
    assert Embedder(report.path, "cpu").info.embedding_size == 128


def test_augmented_rows_are_the_same_faces_the_teacher_described(lfw_dir, tmp_path):
    """--augment: each jittered copy is cut twice from the photo by one transform, so the
    student's chip is the teacher's chip at the student's size (not another crop)."""
    from PIL import Image

    from lookalike.export.training.augment import augmented_pairs
    from lookalike.server.index.gallery import list_gallery

    gallery = small_gallery(lfw_dir, tmp_path / "gallery", people=2, photos=2)
    images = list_gallery(gallery)
    teacher, student = augmented_pairs(gallery, images, 3, 32, 0, tmp_path / "cache", False)
    assert teacher.shape == (12, 150, 150, 3) and student.shape == (12, 32, 32, 3)
    shrunk = np.stack(
        [
            np.asarray(Image.fromarray(chip).resize((32, 32), Image.Resampling.BOX))
            for chip in teacher
        ]
    ).astype(np.float32)
    same = np.abs(shrunk - student).mean(axis=(1, 2, 3))
    other = np.abs(shrunk - np.roll(student, 1, axis=0)).mean(axis=(1, 2, 3))
    assert same.max() < 6 and other.min() > 2 * same.max(), (same, other)
    copies = teacher.reshape(4, 3, 150, 150, 3).astype(np.float32)
    assert np.abs(copies[:, 0] - copies[:, 1]).mean() > 5  # the copies differ
    again, _ = augmented_pairs(gallery, images, 3, 32, 0, tmp_path / "cache", False)
    np.testing.assert_array_equal(again, teacher)  # cached, and drawn from the seed

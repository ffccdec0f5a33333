"""`lookalike train --teacher dlib` end to end on real faces: teacher descriptors, aligned
chips, a few steps, a resumable checkpoint, and an exported 128-d ONNX model."""

from __future__ import annotations

import json

import onnx

from lookalike.export.convert import ExportConfig, export_onnx
from lookalike.export.distill import DistillConfig, distill
from lookalike.server.index.gallery import person_split
from lookalike.server.vision.embedder import Embedder


def small_gallery(lfw_dir, root, people: int = 12, photos: int = 3):
    chosen = [
        p
        for p in sorted((lfw_dir / "images").iterdir())
        if len(list(p.iterdir())) >= photos and person_split(p.name) == "train"
    ][:people]
    for person in chosen:
        (root / person.name).mkdir(parents=True)
        for photo in sorted(person.iterdir())[:photos]:
            (root / person.name / photo.name).write_bytes(photo.read_bytes())
    return root


def small_run(lfw_dir, tmp_path, **settings) -> DistillConfig:
    """Three steps on 36 faces at 32 px, random weights: seconds, not minutes."""
    return DistillConfig(
        data=small_gallery(lfw_dir, tmp_path / "gallery"),
        out=tmp_path / "student.keras",
        weights="none",
        image_size=32,
        batch_size=8,
        steps=3,
        eval_every_minutes=100,
        progress=False,
        **settings,
    )


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

    from lookalike.export.distill import backbone_of, build_student

    config = small_run(
        lfw_dir,
        tmp_path,
        trainable_from="conv5_block1_0_conv",
        pooling="flatten",  # the head sees the whole last feature map
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

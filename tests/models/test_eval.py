"""`lookalike eval` end to end on a generated gallery."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image

from lookalike.server.index.gallery import list_gallery, person_split
from tests.conftest import TEST_IMAGE_SIZE

EVAL = [sys.executable, "-m", "lookalike.client.cli", "eval"]


def write_pairs(path, lines, count):
    path.write_text(f"{count}\n" + "\n".join(lines) + "\n")
    return path


def test_eval_reports_every_metric_and_draws_plots(onnx_model, gallery_dir, index_dir, tmp_path):
    pairs = write_pairs(
        tmp_path / "pairs.txt",
        [f"person_0{i} 1 2" for i in range(6)]
        + [f"person_0{i} 1 person_0{i + 1} 3" for i in range(5)]
        + ["person_05 2 person_00 2"],
        6,
    )
    out = tmp_path / "report"
    result = subprocess.run(
        [
            *EVAL,
            str(gallery_dir),
            "--model",
            str(onnx_model),
            "--index",
            str(index_dir),
            "--pairs",
            str(pairs),
            "--out",
            str(out),
            "--json",
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report == json.loads((out / "report.json").read_text())
    for key in ("hit_at_1", "hit_at_5", "hit_at_20", "map", "verification_accuracy", "roc_auc"):
        assert 0.0 <= report[key] <= 1.0, key
    assert 0.0 <= report["mean_same_in_top20"] <= 2.0  # two other photos per person
    # 17 other images ranked: every query finds its two same-person images by rank 17
    assert report["hit_curve"][16] == 1.0
    assert report["hit_at_20"] == 1.0
    assert report["gallery_size"] == 18 and report["queries"] == 18
    assert report["verification"]["pairs"] == 12 and report["verification"]["matched"] == 6
    assert report["model_weights"] == "none (no network)"
    assert report["input_size"] == TEST_IMAGE_SIZE
    for picture in ("hit_at_k.png", "roc.png"):
        with Image.open(out / picture) as image:
            assert image.format == "PNG" and image.width > 300


def test_eval_builds_its_own_index_with_the_split(onnx_model, gallery_dir):
    result = subprocess.run(
        [
            *EVAL,
            str(gallery_dir),
            "--model",
            str(onnx_model),
            "--split",
            "train",
            "--json",
            "--device",
            "cpu",
            "--crop",
            "center",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    train_people = {i.label for i in list_gallery(gallery_dir) if person_split(i.label) == "train"}
    assert report["people"] == len(train_people) > 0
    assert report["split"] == "train" and report["crop"]["mode"] == "center"


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (
            ["person_01 1 2", "person_01 1 person_02 9"],
            "line 3: image person_02/person_02_0009.jpg is not in the gallery",
        ),
        (["person_01 1 2", "person_01 x"], "line 3: expected 'Name i j'"),
    ],
    ids=["missing-image", "malformed-line"],
)
def test_bad_pairs_file_names_the_line(
    onnx_model, gallery_dir, index_dir, tmp_path, lines, message
):
    pairs = write_pairs(tmp_path / "pairs.txt", lines, 1)
    result = subprocess.run(
        [
            *EVAL,
            str(gallery_dir),
            "--model",
            str(onnx_model),
            "--index",
            str(index_dir),
            "--pairs",
            str(pairs),
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert message in result.stderr

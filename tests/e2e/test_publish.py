"""Publishing is durable and gapless: a process killed at any step leaves a whole index
(or model file) behind, and the next publish tidies what it left (#15 item 7); a killed
build resumes to the same features."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from lookalike.common import versions
from lookalike.common.files import CRASH_AT, CRASH_EXIT_CODE
from lookalike.server.index.build import build_index
from lookalike.server.index.publish import STEPS
from lookalike.server.index.store import MANIFEST, GalleryIndex
from tests.imagegen import gallery_of
from tests.serving import engine_over, search_once


def index_command(model, gallery, out):
    return [
        sys.executable,
        "-m",
        "lookalike.client.cli",
        "index",
        str(gallery),
        "--model",
        str(model),
        "--out",
        str(out),
        "--device",
        "cpu",
    ]


def served_rows(embedder, out, query) -> int:
    """Open ``out`` as the server does (checksum verified) and search it once."""
    engine = engine_over(embedder, out)
    assert search_once(engine, query, 1).matches
    return len(engine.backend)


def leftovers(folder):
    """What lies beside the index other than the link, its versions and its changes folder
    (made by the first backend that opens it, for the gallery's writer lock)."""
    kept = ("index", ".index.versions", "index.changes")
    return sorted(p.name for p in folder.iterdir() if p.name not in kept)


@pytest.mark.parametrize("step", STEPS)
def test_a_build_killed_at_any_publish_step_leaves_a_whole_index(
    step, onnx_model, embedder, gallery_dir, tmp_path
):
    """Killed by LOOKALIKE_CRASH_AT in a real subprocess; what is left opens and searches."""
    out = tmp_path / "indexes" / "index"
    build_index(
        gallery_of(gallery_dir, ["person_00"], tmp_path / "old"), embedder, out, progress=False
    )
    new = gallery_of(gallery_dir, ["person_01", "person_02"], tmp_path / "new")
    crashed = subprocess.run(
        index_command(onnx_model, new, out),
        env={**os.environ, CRASH_AT: step},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert crashed.returncode == CRASH_EXIT_CODE, crashed.stderr
    query = (gallery_dir / "person_01" / "person_01_0001.jpg").read_bytes()
    switched = STEPS.index(step) >= STEPS.index("index-switched")
    assert served_rows(embedder, out, query) == (6 if switched else 3)

    build_index(new, embedder, out, progress=False)  # the next build tidies up
    assert served_rows(embedder, out, query) == 6
    assert leftovers(out.parent) == []
    assert len(list((out.parent / ".index.versions").iterdir())) == 1


def test_a_plain_folder_where_the_link_goes_is_refused_before_anything_moves(tmp_path):
    """A copy of an index (cp -r follows the link) cannot be swapped for a link in one step."""
    out = tmp_path / "index"
    out.mkdir()
    (out / MANIFEST).write_text("{}")
    staging = tmp_path / ".index.building"
    staging.mkdir()
    (staging / MANIFEST).write_text("{}")
    with pytest.raises(IsADirectoryError, match="plain folder"):
        versions.publish_version(staging, out, "v1", "index")
    assert (out / MANIFEST).is_file() and (staging / MANIFEST).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".index.building", "index"]


WRITE = """
import sys
from pathlib import Path
from lookalike.common.files import atomic_path
with atomic_path(Path(sys.argv[1]), tidy=True) as staging:
    staging.write_bytes(b"new" * 100_000)
"""


@pytest.mark.parametrize("step", ["file-staged", "file-placed"])
def test_a_model_file_write_killed_at_any_step_leaves_a_whole_file(step, tmp_path):
    """convert and quantize write .onnx files through atomic_path(tidy=True)."""
    model = tmp_path / "model.onnx"
    model.write_bytes(b"old" * 100_000)
    crashed = subprocess.run(
        [sys.executable, "-c", WRITE, str(model)], env={**os.environ, CRASH_AT: step}
    )
    assert crashed.returncode == CRASH_EXIT_CODE
    assert model.read_bytes() == (b"new" if step == "file-placed" else b"old") * 100_000
    subprocess.run([sys.executable, "-c", WRITE, str(model)], check=True)
    assert model.read_bytes() == b"new" * 100_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_an_open_index_survives_a_rebuild_and_the_removal_of_its_version(
    embedder, gallery_dir, tmp_path
):
    """A server keeps searching the matrix it mapped while newer builds remove it."""
    out = tmp_path / "index"
    first = gallery_of(gallery_dir, ["person_00"], tmp_path / "first")
    build_index(first, embedder, out, progress=False)
    opened, version = GalleryIndex.open(out), out.resolve()
    rows = np.array(opened.features)
    for people in (["person_01"], ["person_02"], ["person_03"]):
        gallery = gallery_of(gallery_dir, people, tmp_path / people[0])
        build_index(gallery, embedder, out, progress=False)
    assert not version.exists() and len(GalleryIndex.open(out)) == 3
    np.testing.assert_array_equal(opened.features, rows)


# A publish in a process of its own, killed where CRASH_AT says. It copies a model saved
# here once per run, so the process imports no TensorFlow (about 6 s each otherwise).
PUBLISH_MODEL = """
import shutil, sys
from pathlib import Path
from lookalike.export.records import publish_with_record
saved, out, run = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
publish_with_record(out, {"run": run}, lambda path: shutil.copyfile(saved / f"{run}.keras", path))
"""


def published_run(out) -> str:
    """The run whose model ``out`` serves, checked to be the run its training record names."""
    import keras

    from lookalike.export.checkpoint import training_record

    record = json.loads(training_record(out).read_text())
    (layer,) = keras.saving.load_model(out).layers
    assert layer.name == f"run{record['run']}", "the model and its record come from two runs"
    return record["run"]


def test_a_model_publish_killed_at_any_step_leaves_a_whole_model_and_its_record(tmp_path):
    """train and distill publish .keras checkpoints through export/records.py."""
    import keras

    from lookalike.export.training.train import publish_model

    saved = tmp_path / "saved"
    saved.mkdir()
    runs = ["old", *(f"model-{step}" for step in versions.STEPS)]
    for run in runs:  # one model per run, told apart by its layer's name
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name=f"run{run}")])
        keras.saving.save_model(model, saved / f"{run}.keras")
    out = tmp_path / "models" / "model.keras"
    publish = [sys.executable, "-c", PUBLISH_MODEL, str(saved), str(out)]
    subprocess.run([*publish, "old"], check=True, capture_output=True)
    served = "old"
    for step in (f"model-{step}" for step in versions.STEPS):  # each tidies the last one up
        crashed = subprocess.run(
            [*publish, step], env={**os.environ, CRASH_AT: step}, capture_output=True, text=True
        )
        assert crashed.returncode == CRASH_EXIT_CODE, crashed.stderr[-2000:]
        if step in ("model-switched", "model-cleaned"):
            served = step
        assert published_run(out) == served
    publish_model(keras.saving.load_model(saved / "old.keras"), out, {"run": "old"})  # train's
    assert published_run(out) == "old"
    assert json.loads(out.with_name("model.keras.json").read_text())["run"] == "old"
    assert sorted(p.name for p in out.parent.iterdir()) == [
        ".model.keras.versions",
        "model.keras",
        "model.keras.json",
    ]
    assert len(list((out.parent / ".model.keras.versions").iterdir())) == 1


def test_killed_build_leaves_the_old_index_and_resumes_to_the_same_features(
    onnx_model, embedder, gallery_dir, tmp_path
):
    from tests.imagegen import write_gallery

    big = write_gallery(tmp_path / "big", people=60, photos=5, size=64)
    out = tmp_path / "index"
    build_index(
        gallery_of(gallery_dir, ["person_00"], tmp_path / "old"), embedder, out, progress=False
    )
    old_version = GalleryIndex.open(out).manifest.version
    command = [
        sys.executable,
        "-m",
        "lookalike.client.cli",
        "index",
        str(big),
        "--model",
        str(onnx_model),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--batch-size",
        "2",
    ]
    build = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    journal = tmp_path / ".index.building" / "journal.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and build.poll() is None:
        if journal.exists() and journal.read_text().count("\n") >= 31:
            build.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    build.communicate(timeout=60)
    assert build.returncode == -signal.SIGKILL, "the build ended before it could be killed"
    assert GalleryIndex.open(out).manifest.version == old_version  # untouched and valid
    done = journal.read_text().count("\n") - 1  # the first line is the header
    assert 30 <= done < 300

    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f": {300 - done} embedded" in resumed.stdout  # only what the kill left undone
    fresh = build_index(big, embedder, tmp_path / "fresh", batch_size=2, progress=False)
    a, b = GalleryIndex.open(out), GalleryIndex.open(tmp_path / "fresh")
    assert len(a) == len(b) == fresh.rows == 300
    assert [i.path for i in a.manifest.items] == [i.path for i in b.manifest.items]
    np.testing.assert_allclose(a.features, b.features, rtol=1e-4, atol=1e-4)
    assert not (tmp_path / ".index.building").exists()

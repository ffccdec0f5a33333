"""dlib's face network ported to Keras and ONNX: the same descriptors as dlib on real faces,
damaged or foreign weight files refused whole, and metadata the server can act on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from lookalike.export.dlib_format import DlibFormatError
from lookalike.export.dlib_resnet import WEIGHTS_NAME, dlib_weights_path, read_dlib_resnet
from lookalike.server.vision.embedder import Embedder

# float32 round-off: the port folds each affine layer into its convolution and onnxruntime
# sums in another order than dlib, so descriptors differ in the last bits. Measured on LFW
# chips: at most 4e-7 per component (descriptor components reach 0.53, float32's spacing
# there is 6e-8). 1e-5 leaves 25x room for other CPUs' kernels; one mis-wired layer (the
# residual sum aligned bottom-right instead of top-left, tried once) gives 0.52.
TOLERANCE = 1e-5


def aligned_lfw_chips(lfw_dir: Path, count: int) -> np.ndarray:
    """``count`` aligned 150 px chips of as many different people, as uint8 values."""
    from PIL import Image

    from lookalike.server.vision.align import align

    people = sorted((lfw_dir / "images").iterdir())
    step = max(1, len(people) // count)
    files = [sorted(person.iterdir())[0] for person in people[::step][:count]]
    chips = [align(Image.open(file).convert("RGB"), 150).pixels for file in files]
    return np.clip(np.round(np.stack(chips)), 0, 255).astype(np.float32)


@pytest.mark.lfw
def test_ported_network_gives_dlibs_descriptors_on_real_faces(face_model, lfw_dir):
    from lookalike.server.vision.teacher import DlibTeacher

    chips = aligned_lfw_chips(lfw_dir, 120)
    assert len(chips) >= 100
    expected = DlibTeacher().embed(chips)
    embedder = Embedder(face_model, device="cpu")
    actual = np.concatenate([embedder.embed(chips[i : i + 32]) for i in range(0, len(chips), 32)])
    difference = np.abs(actual - expected)
    assert difference.max() < TOLERANCE, f"max |onnx - dlib| {difference.max():.2e}"
    # Not a trivially small output: real descriptors, people apart.
    assert np.linalg.norm(expected, axis=1).min() > 0.5
    distances = np.linalg.norm(expected[:, None] - expected[None], axis=2)
    assert np.median(distances[np.triu_indices(len(chips), 1)]) > 0.6


def test_export_metadata_says_what_the_server_needs(face_model):
    meta = {p.key: p.value for p in onnx.load(str(face_model)).metadata_props}
    assert meta["lookalike.model_name"] == "dlib-resnet"
    assert meta["lookalike.input_size"] == "150"
    assert meta["lookalike.embedding_size"] == "128"
    assert json.loads(meta["lookalike.crop"])["mode"] == "align"
    assert WEIGHTS_NAME in meta["lookalike.weights"]
    assert "public domain" in meta["lookalike.weights_licence"]
    info = Embedder(face_model, device="cpu").info
    assert (info.input_size, info.embedding_size, info.crop.mode) == (150, 128, "align")


def test_mirror_model_averages_each_chip_and_its_mirror(face_model, tmp_path):
    from lookalike.export.convert import ExportConfig, export_onnx

    mirrored = tmp_path / "mirror.onnx"
    export_onnx(ExportConfig(out=mirrored, architecture="dlib-resnet", mirror=True))
    chips = np.random.default_rng(0).uniform(0, 255, (3, 150, 150, 3)).astype(np.float32)
    plain = Embedder(face_model, device="cpu")
    expected = (plain.embed(chips) + plain.embed(chips[:, :, ::-1])) / 2
    actual = Embedder(mirrored, device="cpu").embed(chips)
    assert np.abs(actual - expected).max() < TOLERANCE
    assert np.abs(actual - plain.embed(chips)).max() > 100 * TOLERANCE


@pytest.mark.lfw
def test_int8_copy_calibrates_on_aligned_chips_and_stays_near_the_network(
    face_model, lfw_dir, tmp_path
):
    """`lookalike quantize` with no --crop takes the model's own crop (align), so the
    activation ranges come from face chips; on test-split faces it was not calibrated on
    the int8 descriptors stay far inside dlib's 0.6 same-person distance of the fp32 ones
    (measured: min cosine 0.999, largest distance 0.067 with 32 calibration images)."""
    from PIL import Image

    from lookalike.export.quantize import QuantizeConfig, min_cosine, quantize
    from lookalike.server.index.gallery import person_split
    from lookalike.server.vision.align import align

    out = tmp_path / "face-int8.onnx"
    quantize(
        QuantizeConfig(
            face_model, lfw_dir / "images", out, split="train", images=32, progress=False
        )
    )
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert "from 32 images of images, crop align" in meta["lookalike.quantization"]
    assert Embedder(out, device="cpu").info.crop.mode == "align"
    people = [p for p in sorted((lfw_dir / "images").iterdir()) if person_split(p.name) == "test"]
    files = [sorted(person.iterdir())[0] for person in people[:: len(people) // 40][:40]]
    chips = np.stack([align(Image.open(file).convert("RGB"), 150).pixels for file in files])
    fp32 = Embedder(face_model, device="cpu").embed(chips)
    int8 = Embedder(out, device="cpu").embed(chips)
    assert min_cosine(fp32, int8) > 0.99
    assert np.linalg.norm(fp32 - int8, axis=1).max() < 0.2
    assert not np.array_equal(fp32, int8)


def damaged_copies(tmp_path: Path) -> dict[str, Path]:
    data = dlib_weights_path(None).read_bytes()
    copies = {
        "truncated": data[: len(data) // 2],
        "trailing bytes": data + b"\x01\x00",
        "a layer's version string altered": data.replace(b"con_4", b"con_9", 1),
        "empty": b"",
        "bzip2": b"BZh91AY&SY" + data[:100],
    }
    paths = {}
    for name, content in copies.items():
        path = tmp_path / f"{name.replace(' ', '-')}.dat"
        path.write_bytes(content)
        paths[name] = path
    from lookalike.server.vision.align import FIVE_POINT_MODEL, model_file

    paths["another dlib model"] = model_file(FIVE_POINT_MODEL)
    return paths


def test_damaged_or_foreign_weight_files_are_refused_with_a_reason(tmp_path):
    assert len(read_dlib_resnet(dlib_weights_path(None))) == 131  # the real file reads whole
    for name, path in damaged_copies(tmp_path).items():
        with pytest.raises(DlibFormatError) as error:
            read_dlib_resnet(path)
        message = str(error.value)
        assert str(path) in message, name
        assert "damaged" in message or "bzip2" in message, (name, message)


def test_export_refuses_a_damaged_file_and_writes_nothing(tmp_path):
    damaged = tmp_path / "half.dat"
    damaged.write_bytes(dlib_weights_path(None).read_bytes()[:1_000_000])
    out = tmp_path / "face.onnx"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "lookalike.client.cli",
            "export",
            "--architecture",
            "dlib-resnet",
            "--weights",
            str(damaged),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2, done.stderr
    assert "error:" in done.stderr and "ends early" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert not out.exists() and not list(tmp_path.glob("*.onnx*"))


@pytest.mark.lfw
def test_fine_tuning_starts_from_the_ported_network_and_exports_as_a_face_model(lfw_dir, tmp_path):
    """One short epoch on real faces: the imprinted head starts near what the network
    knows (low loss), the checkpoint exports as a 150 px align model whose descriptors
    are the ported network's, normalised, moved by the training but not lost. (One epoch
    at 1e-4 on 24 faces moved them to cosine 0.86-0.91 of where they were.)"""
    from lookalike.export.convert import ExportConfig, export_onnx
    from lookalike.export.training.train import TrainConfig, train
    from tests.imagegen import small_gallery

    data = small_gallery(lfw_dir, tmp_path / "gallery", people=8, photos=3)
    out = tmp_path / "tuned.keras"
    config = TrainConfig(
        data=data,
        out=out,
        architecture="dlib-resnet",
        epochs=1,
        learning_rate=1e-4,
        split="all",
        trainable_from="conv20",
        progress=False,
    )
    train(config)
    history = [json.loads(line) for line in (config.checkpoints / "history.jsonl").open()]
    assert history[0]["stage"] == "start" and history[1]["epoch"] == 1
    # imprinted class directions: the first epoch's loss is well under a random head's
    # (log of 7 classes = 1.95)
    assert history[1]["loss"] < 1.0
    from lookalike.export.model import ExportError

    with pytest.raises(ExportError, match="150 px chips only"):  # not resized as a ResNet
        export_onnx(ExportConfig(out=tmp_path / "small.onnx", checkpoint=out, image_size=112))
    report = export_onnx(ExportConfig(out=tmp_path / "tuned.onnx", checkpoint=out))
    tuned = Embedder(report.path, device="cpu")
    assert (tuned.info.name, tuned.info.input_size, tuned.info.crop.mode) == (
        "dlib-resnet",
        150,
        "align",
    )
    chips = aligned_lfw_chips(lfw_dir, 6)
    ported = Embedder(
        export_onnx(ExportConfig(out=tmp_path / "face.onnx", architecture="dlib-resnet")).path,
        device="cpu",
    ).embed(chips)
    before = ported / np.linalg.norm(ported, axis=1, keepdims=True)
    after = tuned.embed(chips)
    np.testing.assert_allclose(np.linalg.norm(after, axis=1), 1.0, rtol=1e-5)
    cosines = (before * after).sum(axis=1)
    assert cosines.max() < 1 - 1e-6, cosines  # it trained
    # ... from where the ported network was, not from scratch: each face stays nearest its
    # old self, and the faces keep their arrangement (pairwise similarities correlate)
    assert cosines.min() > 0.7, cosines
    pairs = np.triu_indices(len(chips), 1)
    kept = np.corrcoef((before @ before.T)[pairs], (after @ after.T)[pairs])[0, 1]
    assert kept > 0.8, kept


@pytest.mark.lfw
def test_the_face_network_serves_search_and_finds_people_it_never_indexed(
    face_model, lfw_dir, tmp_path
):
    """Index 6 people's photos with the exported face network (its crop, align, from its
    metadata), serve them on a real gRPC server, and search a photo of each that is not in
    the gallery: the same person comes first, from a face dlib found."""
    from lookalike.client.client import SearchClient
    from lookalike.server.index.build import build_index
    from tests.imagegen import small_gallery
    from tests.serving import in_process_server

    gallery = small_gallery(lfw_dir, tmp_path / "gallery", people=6, photos=4)
    queries = {}
    for person in sorted(gallery.iterdir()):
        held_out = sorted(person.iterdir())[-1]
        queries[person.name] = held_out.read_bytes()
        held_out.unlink()
    embedder = Embedder(face_model, device="cpu")
    build_index(gallery, embedder, tmp_path / "index", progress=False)
    with (
        in_process_server(embedder, tmp_path / "index", max_in_flight=4) as target,
        SearchClient(target) as client,
    ):
        assert client.info().model_name == "dlib-resnet"
        for person, photo in queries.items():
            result = client.search(photo, k=3)
            assert result.crop_note == "", (person, result.crop_note)
            assert result.matches[0].label == person, (person, result.matches)
            assert result.matches[0].distance < 0.6  # dlib's same-person threshold


def test_one_read_builds_the_same_network_twice():
    """Folding the affine layers into the convolutions copies them: the layers read stay
    as the file has them (a second build once folded the scale in twice)."""
    from lookalike.export.dlib_resnet import build_dlib_resnet

    layers = read_dlib_resnet(dlib_weights_path(None))
    chips = np.random.default_rng(1).uniform(0, 255, (2, 150, 150, 3)).astype(np.float32)
    first = np.asarray(build_dlib_resnet(layers)(chips))
    np.testing.assert_array_equal(np.asarray(build_dlib_resnet(layers)(chips)), first)

"""Building and opening the memory-mapped index, and its integrity at load."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from lookalike.server.backends.knn import KnnSearcher
from lookalike.server.backends.memmap import MemmapBackend
from lookalike.server.index.build import build_index
from lookalike.server.index.store import FEATURES, MANIFEST, GalleryIndex, InvalidIndexError
from lookalike.server.vision.imaging import Crop
from tests.conftest import TEST_IMAGE_SIZE
from tests.serving import engine_over


def test_index_holds_one_float32_row_per_image(index_dir, gallery_dir, embedder):
    index = GalleryIndex.open(index_dir)
    assert isinstance(index.features, np.memmap)
    assert index.features.dtype == np.float32
    assert index.features.shape == (18, embedder.info.embedding_size)
    manifest = index.manifest
    assert manifest.model_fingerprint == embedder.info.fingerprint
    assert [item.path for item in manifest.items] == sorted(
        p.relative_to(gallery_dir).as_posix() for p in gallery_dir.glob("*/*.jpg")
    )
    assert {item.label for item in manifest.items} == {f"person_{i:02d}" for i in range(6)}
    assert len({item.id for item in manifest.items}) == 18
    assert index_dir.stat().st_mode & 0o777 == 0o755  # servers may run as another user
    row = 7
    data = (gallery_dir / manifest.items[row].path).read_bytes()
    engine = engine_over(embedder, index_dir)
    direct = embedder.embed(engine.prepare(data).pixels[np.newaxis])[0]
    np.testing.assert_allclose(index.features[row], direct, rtol=1e-5, atol=1e-4)


def test_brute_force_searches_the_memmap_itself(index_dir):
    index = GalleryIndex.open(index_dir)
    searcher = KnnSearcher(index.features, "brute")
    assert np.shares_memory(searcher.matrix, index.features)
    tree = KnnSearcher(index.features, "ball_tree")
    assert not np.shares_memory(tree.matrix, index.features)


def test_ball_tree_and_brute_agree(index_dir):
    index = GalleryIndex.open(index_dir)
    queries = np.asarray(index.features[:5])
    brute = KnnSearcher(index.features, "brute").search(queries, 4)
    tree = KnnSearcher(index.features, "ball_tree").search(queries, 4)
    np.testing.assert_array_equal(brute[1], tree[1])
    np.testing.assert_allclose(brute[0], tree[0], rtol=1e-4, atol=1e-3)


def test_unreadable_files_are_skipped_and_listed(tmp_path, gallery_dir, embedder):
    gallery = tmp_path / "gallery"
    shutil.copytree(gallery_dir / "person_00", gallery / "person_00")
    (gallery / "person_00" / "broken.jpg").write_bytes(b"not a jpeg")
    report = build_index(
        gallery, embedder, tmp_path / "index", progress=False, max_failure_share=0.5
    )
    assert report.rows == 3
    assert [s["path"] for s in report.skipped] == ["person_00/broken.jpg"]
    index = GalleryIndex.open(tmp_path / "index")
    assert index.features.shape == (3, embedder.info.embedding_size)
    assert "person_00/broken.jpg" not in {item.path for item in index.manifest.items}


def test_rebuild_replaces_the_old_index_whole(tmp_path, gallery_dir, embedder):
    out = tmp_path / "index"
    gallery = tmp_path / "gallery"
    shutil.copytree(gallery_dir / "person_01", gallery / "person_01")
    build_index(gallery, embedder, out, progress=False)
    shutil.copytree(gallery_dir / "person_02", gallery / "person_02")
    build_index(gallery, embedder, out, crop=Crop("center"), progress=False)
    index = GalleryIndex.open(out)
    assert len(index) == 6 and index.manifest.crop == Crop("center")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".index.versions", "gallery", "index"]
    assert len(list((tmp_path / ".index.versions").iterdir())) == 1  # the old one is gone


def test_failed_build_leaves_no_trace(tmp_path, embedder):
    empty = tmp_path / "gallery" / "nobody"
    empty.mkdir(parents=True)
    (empty / "junk.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(InvalidIndexError, match="none of the 1 images"):
        build_index(tmp_path / "gallery", embedder, tmp_path / "index", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gallery"]


def test_missing_gallery_folder_is_a_clear_error(tmp_path, embedder):
    with pytest.raises(FileNotFoundError, match="gallery folder not found"):
        build_index(tmp_path / "nowhere", embedder, tmp_path / "index", progress=False)


def copy_index(index_dir, tmp_path):
    copy = tmp_path / "index"
    shutil.copytree(index_dir, copy)
    return copy


def test_index_of_another_model_is_refused(index_dir, tmp_path, embedder):
    copy = copy_index(index_dir, tmp_path)
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest["model"]["fingerprint"] = "0123456789abcdef"
    (copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(InvalidIndexError, match="built by model 0123456789abcdef"):
        MemmapBackend(GalleryIndex.open(copy)).check_model(embedder.info)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / FEATURES).unlink(), "features.npy is missing"),
        (lambda d: (d / MANIFEST).write_text("{"), "not a valid manifest"),
        (lambda d: np.save(d / FEATURES, np.zeros((18, 2048), np.float64)), "holds float64"),
        (lambda d: np.save(d / FEATURES, np.zeros((17, 2048), np.float32)), r"\(17, 2048\)"),
        (
            lambda d: (d / FEATURES).write_bytes((d / FEATURES).read_bytes()[:1000]),
            "not a readable",
        ),
    ],
    ids=["no-features", "bad-manifest", "float64", "wrong-rows", "truncated"],
)
def test_damaged_index_is_refused_with_a_clear_message(index_dir, tmp_path, damage, message):
    copy = copy_index(index_dir, tmp_path)
    damage(copy)
    with pytest.raises(InvalidIndexError, match=message):
        GalleryIndex.open(copy)


def test_too_many_unreadable_files_fail_the_build_and_keep_it_for_resume(
    tmp_path, gallery_dir, embedder
):
    gallery = tmp_path / "gallery"
    shutil.copytree(gallery_dir / "person_00", gallery / "person_00")
    broken = gallery / "person_00" / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(InvalidIndexError, match="1 of 4 images could not be read"):
        build_index(gallery, embedder, tmp_path / "index", progress=False)
    assert not (tmp_path / "index").exists()
    broken.unlink()
    report = build_index(gallery, embedder, tmp_path / "index", progress=False, resume=True)
    assert (report.rows, report.embedded, report.skipped) == (3, 0, [])


def test_identical_files_are_indexed_once_with_every_path(tmp_path, gallery_dir, embedder):
    gallery = tmp_path / "gallery"
    shutil.copytree(gallery_dir / "person_00", gallery / "person_00")
    copy = gallery / "person_09" / "person_09_0001.jpg"
    copy.parent.mkdir()
    shutil.copy(gallery / "person_00" / "person_00_0002.jpg", copy)
    report = build_index(gallery, embedder, tmp_path / "index", progress=False)
    assert (report.rows, report.duplicates) == (3, 1)
    items = GalleryIndex.open(tmp_path / "index").manifest.items
    (twin,) = [item for item in items if item.also]
    assert (twin.path, twin.also) == (
        "person_00/person_00_0002.jpg",
        ("person_09/person_09_0001.jpg",),
    )


def test_append_embeds_only_new_files(tmp_path, gallery_dir, embedder):
    gallery = tmp_path / "gallery"
    shutil.copytree(gallery_dir / "person_00", gallery / "person_00")
    out = tmp_path / "index"
    build_index(gallery, embedder, out, progress=False)
    before = GalleryIndex.open(out)
    old_rows, old_version = np.array(before.features), before.manifest.version
    del before
    shutil.copytree(gallery_dir / "person_01", gallery / "person_01")
    report = build_index(gallery, embedder, out, progress=False, append_to=out)
    assert (report.rows, report.embedded) == (6, 3)
    after = GalleryIndex.open(out)
    assert after.manifest.version != old_version
    np.testing.assert_array_equal(after.features[:3], old_rows)
    assert [i.label for i in after.manifest.items] == ["person_00"] * 3 + ["person_01"] * 3
    again = build_index(gallery, embedder, out, progress=False, append_to=out)
    assert (again.rows, again.embedded) == (6, 0)


@pytest.mark.parametrize("algorithm", ["ball_tree", "faiss"])
def test_every_backend_returns_the_brute_force_neighbours(index_dir, algorithm):
    index = GalleryIndex.open(index_dir)
    queries = np.asarray(index.features[[0, 5, 11]]) + 0.01
    brute = KnnSearcher(index.features, "brute")
    other = KnnSearcher(index.features, algorithm)
    for k in (1, 7, 18):
        expected, got = brute.search(queries, k), other.search(queries, k)
        np.testing.assert_array_equal(got[1], expected[1])
        np.testing.assert_allclose(got[0], expected[0], rtol=1e-4, atol=1e-3)
    if algorithm == "faiss":
        assert np.shares_memory(other.matrix, index.features)


def test_precomputed_norms_give_scikit_learns_own_answer(index_dir):
    from sklearn.neighbors import NearestNeighbors

    index = GalleryIndex.open(index_dir)
    queries = np.asarray(index.features[2:6]) * 1.01
    plain = NearestNeighbors(algorithm="brute").fit(index.features).kneighbors(queries, 9)
    searcher = KnnSearcher(index.features, "brute")
    for _ in range(2):  # the norms must survive the first call
        distances, rows = searcher.search(queries, 9)
        np.testing.assert_array_equal(rows, plain[1])
        np.testing.assert_allclose(distances, plain[0], rtol=1e-5)


def rewrite_manifest(copy, change):
    manifest = json.loads((copy / MANIFEST).read_text())
    change(manifest)
    (copy / MANIFEST).write_text(json.dumps(manifest))


def test_manifest_input_size_must_match_the_model(index_dir, tmp_path, embedder):
    """A manifest may not make every Search allocate 60000² × 3 floats (#15 item 5)."""
    copy = copy_index(index_dir, tmp_path)
    rewrite_manifest(copy, lambda m: m["model"].update(input_size=60000))
    with pytest.raises(InvalidIndexError, match=f"input size 60000.*model takes {TEST_IMAGE_SIZE}"):
        MemmapBackend(GalleryIndex.open(copy)).check_model(embedder.info)


def test_manifest_embedding_size_must_match_the_model(index_dir, tmp_path, embedder):
    from lookalike.server.vision.embedder import file_sha256

    copy = copy_index(index_dir, tmp_path)
    np.save(copy / FEATURES, np.zeros((18, 16), np.float32))
    rewrite_manifest(
        copy,
        lambda m: (
            m["model"].update(embedding_size=16),
            m["features"].update(shape=[18, 16], sha256=file_sha256(copy / FEATURES)),
        ),
    )
    with pytest.raises(InvalidIndexError, match="16-d embeddings.*model makes 3072"):
        MemmapBackend(GalleryIndex.open(copy)).check_model(embedder.info)


def test_manifest_dtype_other_than_float32_or_float16_is_refused(index_dir, tmp_path):
    copy = copy_index(index_dir, tmp_path)
    rewrite_manifest(copy, lambda m: m["features"].update(dtype="float64"))
    with pytest.raises(InvalidIndexError, match="float64.*only .*float32.*float16"):
        GalleryIndex.open(copy)


def test_manifest_dtype_unlike_the_files_is_refused(index_dir, tmp_path):
    copy = copy_index(index_dir, tmp_path)
    rewrite_manifest(copy, lambda m: m["features"].update(dtype="float16"))
    with pytest.raises(InvalidIndexError, match="holds float32 .* manifest says float16"):
        GalleryIndex.open(copy)


def test_oversized_manifest_is_refused_before_it_is_read(index_dir, tmp_path, monkeypatch):
    from lookalike.server.index import store

    copy = copy_index(index_dir, tmp_path)
    monkeypatch.setattr(store, "MAX_MANIFEST_BYTES", 1000)
    with pytest.raises(InvalidIndexError, match="manifest.json is .* bytes, more than the 1,000"):
        GalleryIndex.open(copy)


def test_features_as_a_zip_is_a_clear_error(index_dir, tmp_path):
    """An .npz saved as features.npy loads as a zip archive: say so (AttributeError on main)."""
    copy = copy_index(index_dir, tmp_path)
    with (copy / FEATURES).open("wb") as stream:
        np.savez(stream, features=np.zeros((18, 2048), np.float32))
    with pytest.raises(InvalidIndexError, match="zip archive.*not a plain .npy"):
        GalleryIndex.open(copy)


def failed_build(tmp_path, gallery_dir, embedder, **settings):
    """A build that fails on an unreadable file and keeps its staging for --resume."""
    gallery = tmp_path / "gallery"
    shutil.copytree(gallery_dir / "person_00", gallery / "person_00")
    (gallery / "person_00" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(InvalidIndexError, match="could not be read"):
        build_index(gallery, embedder, tmp_path / "index", progress=False, **settings)
    return gallery


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"crop": Crop("center")}, "crop was"),
        ({"split": "train"}, "split was 'all', now 'train'"),
        ({"gallery": "moved"}, "gallery_root was"),
    ],
    ids=["crop", "split", "gallery-root"],
)
def test_resume_continues_only_the_same_build(tmp_path, gallery_dir, embedder, change, message):
    """#15 item 6: on main a resume with other settings mixed two builds in one index."""
    gallery = failed_build(tmp_path, gallery_dir, embedder)
    if change.pop("gallery", None):
        gallery = shutil.copytree(gallery, tmp_path / "moved")
    with pytest.raises(
        InvalidIndexError, match=f"--resume continues only the same build.*{message}"
    ):
        build_index(gallery, embedder, tmp_path / "index", progress=False, resume=True, **change)
    assert (tmp_path / ".index.building").is_dir()  # kept: the same build can still resume


def test_a_torn_last_journal_line_is_cut_before_appending(tmp_path, gallery_dir, embedder):
    gallery = failed_build(tmp_path, gallery_dir, embedder)
    journal = tmp_path / ".index.building" / "journal.jsonl"
    whole = journal.read_text()
    torn = whole.splitlines()[1]
    journal.write_text(whole + torn[: len(torn) // 2])  # a kill in the middle of a write
    with pytest.raises(InvalidIndexError, match="could not be read"):
        build_index(gallery, embedder, tmp_path / "index", progress=False, resume=True)
    lines = journal.read_text().splitlines()
    assert [json.loads(line) for line in lines]  # every line whole: nothing appended to the tear
    assert journal.read_text().startswith(whole)
    (gallery / "person_00" / "broken.jpg").unlink()
    report = build_index(gallery, embedder, tmp_path / "index", progress=False, resume=True)
    assert (report.rows, report.embedded) == (3, 0)


def test_resume_with_another_model_is_refused(tmp_path, gallery_dir, embedder):
    """The header names the model by fingerprint; one other model stands in for a rebuild."""
    gallery = failed_build(tmp_path, gallery_dir, embedder)
    journal = tmp_path / ".index.building" / "journal.jsonl"
    header, *records = journal.read_text().splitlines(keepends=True)
    built = json.loads(header)
    built["build"]["model"] = "0123456789abcdef"
    journal.write_text(json.dumps(built) + "\n" + "".join(records))
    with pytest.raises(InvalidIndexError, match="model was '0123456789abcdef'"):
        build_index(gallery, embedder, tmp_path / "index", progress=False, resume=True)


def test_changed_feature_bytes_are_refused_at_load(index_dir, tmp_path):
    copy = tmp_path / "index"
    shutil.copytree(index_dir, copy)
    data = bytearray((copy / FEATURES).read_bytes())
    data[-100] ^= 0xFF  # same size, same header: only the checksum can tell
    (copy / FEATURES).write_bytes(bytes(data))
    with pytest.raises(InvalidIndexError, match="does not match the checksum"):
        GalleryIndex.open(copy)

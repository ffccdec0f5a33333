"""The LFW pairs reader, on files written here and on the real one when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lookalike.server.evaluation.pairs import Pair, PairsFormatError, pair_image_path, read_pairs


def write(tmp_path, text):
    path = tmp_path / "pairs.txt"
    path.write_text(text)
    return path


def test_matched_and_mismatched_pairs(tmp_path):
    pairs = read_pairs(write(tmp_path, "1\nAnn\t1\t2\nAnn 1   Bob 3\n"))
    assert pairs == [
        Pair(("Ann", 1), ("Ann", 2), True, 2),
        Pair(("Ann", 1), ("Bob", 3), False, 3),
    ]
    assert pair_image_path("Bob", 3) == "Bob/Bob_0003.jpg"


def test_view_two_header(tmp_path):
    assert len(read_pairs(write(tmp_path, "2 1\nA 1 2\nB 1 2\nA 1 B 1\nA 2 B 2\n"))) == 4


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "line 1: the file is empty"),
        ("x\n", "line 1: expected a pair count"),
        ("1\nAnn 1 2\nAnn 1 Bob 2 3\n", "line 3: expected 'Name i j'"),
        ("1\nAnn 1 two\nAnn 1 Bob 2\n", "line 2: image number 'two' is not an integer"),
        ("1\nAnn 1 2\nAnn 0 Bob 2\n", "line 3: image numbers start at 1"),
        ("2\nAnn 1 2\nAnn 1 Bob 2\n", "line 1: the header promises 4 pairs, the file has 2"),
    ],
)
def test_malformed_files_name_the_line(tmp_path, text, message):
    with pytest.raises(PairsFormatError, match=message):
        read_pairs(write(tmp_path, text))


def test_lfw_dev_train_pairs_name_images_that_exist(lfw_dir):
    pairs = read_pairs(lfw_dir / "pairsDevTrain.txt")
    assert sum(p.same for p in pairs) == 1100
    assert sum(not p.same for p in pairs) == 1100
    for pair in pairs[:20] + pairs[-20:]:
        for name, number in (pair.left, pair.right):
            assert (lfw_dir / "images" / pair_image_path(name, number)).is_file()


ROOT = Path(__file__).resolve().parents[2]


T, F = True, False


def write_pairs(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pairs.txt"
    path.write_text(text)
    return path


def test_pairs_of_both_kinds_with_any_whitespace(tmp_path):
    pairs = read_pairs(
        write_pairs(tmp_path, "2\nAnn\t1\t2\nBob 3  4\n\nAnn 1\tBob 12\nCy 2 Ann 3\n\n")
    )
    assert pairs == [
        Pair(("Ann", 1), ("Ann", 2), True, 2),
        Pair(("Bob", 3), ("Bob", 4), True, 3),
        Pair(("Ann", 1), ("Bob", 12), False, 5),
        Pair(("Cy", 2), ("Ann", 3), False, 6),
    ]


def test_view_two_header_counts_folds_times_pairs(tmp_path):
    text = "2 1\nA 1 2\nA 1 B 1\nB 1 2\nA 2 B 2\n"
    assert [p.same for p in read_pairs(write_pairs(tmp_path, text))] == [T, F, T, F]


def test_pair_image_path_is_lfw_layout():
    assert pair_image_path("Bob", 3) == "Bob/Bob_0003.jpg"
    assert pair_image_path("Aaron_Peirsol", 12) == "Aaron_Peirsol/Aaron_Peirsol_0012.jpg"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "line 1: the file is empty"),
        ("x\n", "line 1: expected a pair count"),
        ("1 2 3\n", "line 1: expected 'N' or 'folds N'"),
        ("0\n", "line 1: expected 'N' or 'folds N'"),
        ("1\nAnn 1 2\nAnn 1 Bob 2 3\n", "line 3: expected 'Name i j' .* got 5 fields"),
        ("1\nAnn 1\nAnn 1 Bob 2\n", "line 2: expected 'Name i j' .* got 2 fields"),
        ("1\nAnn 1 two\nAnn 1 Bob 2\n", "line 2: image number 'two' is not an integer"),
        ("1\nAnn 1 2\n\nAnn 0 Bob 2\n", "line 4: image numbers start at 1, got 0"),
        ("2\nAnn 1 2\nAnn 1 Bob 2\n", "line 1: the header promises 4 pairs, the file has 2"),
        (
            "1\nAnn 1 2\nBob 1 2\n",
            r"line 1: .* has 2 \(2 matched and 0 mismatched; expected 1 each\)",
        ),
    ],
)
def test_malformed_pairs_files_name_the_file_and_line(tmp_path, text, message):
    path = write_pairs(tmp_path, text)
    with pytest.raises(PairsFormatError, match=message) as error:
        read_pairs(path)
    assert str(error.value).startswith(f"{path}: line ")


def test_lfw_dev_train_pairs_parse():
    lfw = Path(os.environ.get("LOOKALIKE_LFW_DIR", ROOT.parent / "shared" / "lfw"))
    if not (lfw / "pairsDevTrain.txt").is_file():
        pytest.skip(f"no pairsDevTrain.txt in {lfw} (set LOOKALIKE_LFW_DIR)")
    pairs = read_pairs(lfw / "pairsDevTrain.txt")
    assert sum(p.same for p in pairs) == 1100
    assert sum(not p.same for p in pairs) == 1100
    assert pairs[0].line == 2 and pairs[-1].line == 2201

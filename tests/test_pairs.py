"""The LFW pairs reader, on files written here and on the real one when present."""

from __future__ import annotations

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


def test_lfw_dev_train_pairs_parse(lfw_dir):
    pairs = read_pairs(lfw_dir / "pairsDevTrain.txt")
    assert sum(p.same for p in pairs) == 1100
    assert sum(not p.same for p in pairs) == 1100
    for pair in pairs[:20] + pairs[-20:]:
        for name, number in (pair.left, pair.right):
            assert (lfw_dir / "images" / pair_image_path(name, number)).is_file()

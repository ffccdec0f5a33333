"""LFW pairs files: ``Name i j`` (same person) and ``NameA i NameB j`` (different)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class PairsFormatError(ValueError):
    """A pairs file line that does not parse; the message names the file and line."""


@dataclass(frozen=True)
class Pair:
    left: tuple[str, int]
    right: tuple[str, int]
    same: bool
    line: int


def pair_image_path(name: str, index: int) -> str:
    """Where LFW keeps image ``index`` of ``name``, relative to its images folder."""
    return f"{name}/{name}_{index:04d}.jpg"


def read_pairs(path: Path) -> list[Pair]:
    """Parse a pairs file; the header is a pair count (View 1) or ``folds count`` (View 2)."""
    lines = path.read_text().splitlines()
    if not lines:
        raise PairsFormatError(f"{path}: line 1: the file is empty, expected a count line")
    header = lines[0].split()
    try:
        counts = [int(field) for field in header]
    except ValueError:
        raise PairsFormatError(f"{path}: line 1: expected a pair count, got {lines[0]!r}") from None
    if len(counts) == 1:
        expected = 2 * counts[0]
    elif len(counts) == 2:
        expected = 2 * counts[0] * counts[1]
    else:
        raise PairsFormatError(f"{path}: line 1: expected one or two counts, got {lines[0]!r}")
    pairs = [
        parse_pair(fields, number, path)
        for number, line in enumerate(lines[1:], start=2)
        if (fields := line.split())
    ]
    if len(pairs) != expected:
        raise PairsFormatError(
            f"{path}: line 1: the header promises {expected} pairs, the file has {len(pairs)}"
        )
    return pairs


def parse_pair(fields: list[str], number: int, path: Path) -> Pair:
    def index(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise PairsFormatError(
                f"{path}: line {number}: image number {text!r} is not an integer"
            ) from None
        if value < 1:
            raise PairsFormatError(f"{path}: line {number}: image numbers start at 1, got {value}")
        return value

    if len(fields) == 3:
        name, i, j = fields
        return Pair((name, index(i)), (name, index(j)), True, number)
    if len(fields) == 4:
        name_a, i, name_b, j = fields
        return Pair((name_a, index(i)), (name_b, index(j)), False, number)
    raise PairsFormatError(
        f"{path}: line {number}: expected 'Name i j' or 'NameA i NameB j', got {len(fields)} fields"
    )

"""LFW pairs files: ``Name i j`` (same person) and ``NameA i NameB j`` (different)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class PairsFormatError(ValueError):
    """A pairs file that does not parse; the message names the file and line."""


@dataclass(frozen=True)
class Pair:
    left: tuple[str, int]
    right: tuple[str, int]
    same: bool
    line: int  # 1-based, so errors found later (a missing image) can point at it


def pair_image_path(name: str, index: int) -> str:
    """Where LFW keeps image ``index`` of ``name``, relative to its images folder."""
    return f"{name}/{name}_{index:04d}.jpg"


def read_pairs(path: Path) -> list[Pair]:
    """Parse a pairs file, checking it holds as many pairs of each kind as its header says.

    The header is ``N`` (View 1: N matched then N mismatched pairs) or
    ``folds N`` (View 2: folds * N of each). Fields may be separated by any
    whitespace, and blank lines are ignored.
    """
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines:
        raise PairsFormatError(f"{path}: line 1: the file is empty, expected a count line")
    per_kind = _header(lines[0], path)
    pairs = [
        _pair(fields, number, path)
        for number, line in enumerate(lines[1:], start=2)
        if (fields := line.split())
    ]
    matched = sum(pair.same for pair in pairs)
    if (matched, len(pairs) - matched) != (per_kind, per_kind):
        raise PairsFormatError(
            f"{path}: line 1: the header promises {2 * per_kind} pairs, the file has {len(pairs)}"
            f" ({matched} matched and {len(pairs) - matched} mismatched; expected {per_kind} each)"
        )
    return pairs


def _header(line: str, path: Path) -> int:
    """How many pairs of each kind the header promises."""
    try:
        counts = [int(field) for field in line.split()]
    except ValueError:
        raise PairsFormatError(f"{path}: line 1: expected a pair count, got {line!r}") from None
    if not 1 <= len(counts) <= 2 or min(counts) < 1:
        raise PairsFormatError(
            f"{path}: line 1: expected 'N' or 'folds N' with positive integers, got {line!r}"
        )
    return counts[0] if len(counts) == 1 else counts[0] * counts[1]


def _pair(fields: list[str], number: int, path: Path) -> Pair:
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

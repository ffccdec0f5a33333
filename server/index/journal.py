"""The build journal: what a staged build has embedded so far, and which build it is.

Not the gallery's change journal (server/index/segment.py), which records adds and
removes to a served index; both files are named ``journal.jsonl``, in different folders.

Its first line is a header naming what makes two builds the same (model,
crop, split, gallery root, the index appended to); ``--resume`` continues only
a build whose header matches. Each later line records one gallery file, written
after its row is flushed to the staged matrix. A kill can cut the last line
short; that line is cut off before anything is appended.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO

from lookalike.server.index.store import InvalidIndexError, Item

# In the build's staging folder (``.<index>.building/``); gone once the build is published.
BUILD_JOURNAL = "journal.jsonl"


@dataclass
class Journal:
    """What a build has done so far, rebuilt from its build journal after a kill."""

    rows: list[Item] = field(default_factory=list)
    done: set[str] = field(default_factory=set)
    ids: dict[str, int] = field(default_factory=dict)  # content id -> row
    skipped: list[dict[str, str]] = field(default_factory=list)
    duplicates: int = 0

    def add(self, record: dict) -> None:
        self.done.add(record["path"])
        if "error" in record:
            self.skipped.append({"path": record["path"], "error": record["error"]})
        elif record["id"] in self.ids:
            row = self.ids[record["id"]]
            item = self.rows[row]
            self.rows[row] = replace(item, also=(*item.also, record["path"]))
            self.duplicates += item.face == 0  # files, not faces
        else:
            self.ids[record["id"]] = len(self.rows)
            box = tuple(record["box"]) if record.get("box") else None
            self.rows.append(Item(record["id"], record["label"], record["path"], box=box))  # type: ignore[arg-type]


def record_of(item: Item, path: str) -> dict:
    """The record of ``item``'s row found at ``path`` (its own or an identical file's)."""
    record: dict = {"path": path, "id": item.id, "label": item.label}
    if item.box:
        record["box"] = list(item.box)
    return record


def start(path: Path, header: dict[str, object]) -> None:
    """A new build journal holding only its header."""
    with path.open("w") as stream:
        stream.write(json.dumps({"build": header}) + "\n")


def resume(path: Path, header: dict[str, object]) -> Journal:
    """The staged build's journal, refused unless it is the build ``header`` describes.

    A torn last line (a kill mid-write) is truncated away, so that what is
    appended next starts on a line of its own.
    """
    data = path.read_bytes() if path.exists() else b""
    lines = data.split(b"\n")[:-1]  # the part after the last newline is torn or empty
    kept = 0
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
        kept += len(line) + 1
    if not records or records[0].get("build") is None:
        raise InvalidIndexError(
            "the staged build has no journal header (an older or damaged build); "
            "start over without --resume"
        )
    built = records[0]["build"]
    different = {  # a setting only one header names (faces: only when not the largest) counts
        name: (built.get(name), header.get(name))
        for name in {**built, **header}
        if built.get(name) != header.get(name)
    }
    if different:
        was = "; ".join(
            f"{name} was {old!r}, now {new!r}" for name, (old, new) in different.items()
        )
        raise InvalidIndexError(
            f"--resume continues only the same build, and this one differs: {was}; "
            "resume with the same settings, or start over without --resume"
        )
    if kept < len(data):
        with path.open("r+b") as stream:
            stream.truncate(kept)
    journal = Journal()
    for record in records[1:]:
        if "error" not in record:  # unreadable files get another try
            journal.add(record)
    return journal


def append(stream: IO[str], journal: Journal, records: list[dict]) -> None:
    """Record ``records`` (their rows already on disk) in the build journal and in memory."""
    for record in records:
        journal.add(record)
        stream.write(json.dumps(record) + "\n")
    stream.flush()

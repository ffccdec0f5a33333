"""One row of an index: the photo it comes from, its person, and in an every-face index
which face of the photo it is."""

from __future__ import annotations

from dataclasses import dataclass

FACE_MARK = "#"  # a face row's id: its file's content id, the mark, the face's number


@dataclass(frozen=True)
class Item:
    """One row of the gallery: a photo, or in an every-face index one face of a photo."""

    id: str
    label: str
    path: str
    also: tuple[str, ...] = ()  # paths of identical files, indexed once
    box: tuple[int, int, int, int] | None = None  # the face in the photo; None: one-face row

    @property
    def file_id(self) -> str:
        """The content id of the photo this row comes from."""
        return self.id.split(FACE_MARK, 1)[0]

    @property
    def face(self) -> int:
        """The face's number in its photo, 0 the largest (a one-face row: 0)."""
        _, mark, number = self.id.partition(FACE_MARK)
        return int(number) if mark else 0

    def to_row(self) -> list[object]:
        """The manifest's list for this item: id, label, path, then the identical files'
        paths when there are any or a box follows, then the box."""
        row: list[object] = [self.id, self.label, self.path]
        if self.also or self.box:
            row.append(list(self.also))
        if self.box:
            row.append(list(self.box))
        return row

    @classmethod
    def from_row(cls, row: list) -> Item:
        also = tuple(row[3]) if len(row) > 3 else ()
        box = tuple(int(v) for v in row[4]) if len(row) > 4 and row[4] else None
        return cls(row[0], row[1], row[2], also, box)  # type: ignore[arg-type]


def face_id(file_id: str, number: int) -> str:
    """The id of face ``number`` of the photo of content id ``file_id``."""
    return f"{file_id}{FACE_MARK}{number}"


def external_id(path: str) -> str:
    """The id a caller gave an image it added (its file name without the suffix);
    for an image indexed from a folder, its file name likewise.

    PurePosixPath(path).stem by string operations: called for every row of a large
    gallery, where making a path object was most of the cost."""
    name = path.rstrip("/").rpartition("/")[2]
    dot = name.rfind(".")
    return name[:dot] if 0 < dot < len(name) - 1 else name


def gallery_order(path: str) -> tuple[str, ...]:
    """The order in which list_gallery meets files: sorted paths, part by part."""
    return tuple(path.split("/"))


def listing_key(item: Item) -> tuple:
    """The order of a gallery's listing (ListImages): gallery order, ties broken by content
    id, then by face number (as a number: face 10 after face 9)."""
    return (*gallery_order(item.path), "\0", item.file_id, item.face)

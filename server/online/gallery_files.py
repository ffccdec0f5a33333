"""The gallery folder as enrolment and erasure change it: names checked, files written
durably, files deleted only inside the gallery root.

An enrolled image is kept as ``<root>/<label>/<external id or content id>.<format>``,
where a later `lookalike index` of the folder finds it, byte for byte, with the
same content id.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

from PIL import Image

from lookalike.common.files import atomic_path, fsync_path
from lookalike.server.index.gallery import IMAGE_SUFFIXES

SUFFIX_OF_FORMAT = {
    "JPEG": ".jpg",
    "PNG": ".png",
    "GIF": ".gif",
    "WEBP": ".webp",
    "BMP": ".bmp",
    "TIFF": ".tif",
}
EXTERNAL_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")
MAX_LABEL_BYTES = 200


class InvalidName(ValueError):
    """A label or external id that cannot name a gallery folder or file."""


class GalleryFileError(Exception):
    """An image that cannot be stored where its label and id say; the message is for
    the caller and names no server path."""


def check_label(label: str) -> str:
    """The label as a folder name: one path part, not hidden (list_gallery skips those)."""
    if not label:
        raise InvalidName("the label is empty")
    if len(label.encode()) > MAX_LABEL_BYTES:
        raise InvalidName(f"the label is longer than {MAX_LABEL_BYTES} bytes")
    if "/" in label or "\\" in label or "\0" in label or label.startswith("."):
        raise InvalidName("the label must be one folder name: no '/', '\\' or NUL, no leading '.'")
    if label != label.strip() or not label.isprintable():
        raise InvalidName("the label has leading or trailing spaces or unprintable characters")
    return label


def check_external_id(external_id: str) -> str:
    if external_id and not EXTERNAL_ID.fullmatch(external_id):
        raise InvalidName(
            "the external id must be 1 to 100 letters, digits, '.', '_' or '-', "
            "not starting with '.'"
        )
    return external_id


def suffix_of(data: bytes) -> str:
    """The file suffix of encoded image bytes (they decoded already)."""
    with Image.open(io.BytesIO(data)) as image:
        suffix = SUFFIX_OF_FORMAT.get(image.format or "", "")
    if suffix not in IMAGE_SUFFIXES:
        raise InvalidName(f"images in format {image.format} cannot be kept in the gallery")
    return suffix


def write_image(root: Path, relative: str, data: bytes) -> None:
    """Put the bytes at ``root/relative`` durably; the same bytes there already are fine.

    Writes stay inside ``root`` as deletes do: a label folder that is a link leading
    out of the gallery is refused, so an erased face's file can always be deleted.
    """
    path = root / relative
    folder = path.parent
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        if not folder.is_dir():
            raise GalleryFileError("the label names a file in the gallery, not a folder")
        if not folder.resolve().is_relative_to(root.resolve()):
            raise GalleryFileError("the label's folder leads outside the gallery")
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise GalleryFileError("this name in the gallery is not a plain image file")
    if path.exists():
        if path.read_bytes() != data:
            raise GalleryFileError("a different image already has this name in the gallery")
        return
    with atomic_path(path) as staging:
        staging.write_bytes(data)
        fsync_path(staging)
    fsync_path(path.parent)
    fsync_path(root)


def delete_image(root: Path, relative: str) -> bool:
    """Delete ``root/relative`` if it is a file inside ``root``; whether it is gone now."""
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()):
        return False
    path.unlink(missing_ok=True)
    fsync_path(path.parent)
    return True

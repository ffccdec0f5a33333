"""The search index on disk: a float32 feature matrix and the manifest that explains it.

Layout of an index folder::

    features.npy    N x D float32 (or float16: ``--storage``), opened with
                    numpy.load(mmap_mode="r"): the source of truth for every search
    manifest.json   model fingerprint, crop, which faces ("faces"; absent: the largest),
                    shape, checksum, and one item per row (per face in an every-face index),
                    listed; past COLUMN_ROWS rows, the items/ folder's checksums instead
    items/          only past COLUMN_ROWS rows: the items in mapped columns
                    (server/index/items.py)
    ann.faiss       only for an approximate ``--index-type``: the faiss structure built
                    from features.npy (server/index/ann.py), rebuilt at open if missing

lookalike.server.index.build writes it; this module reads and checks it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from lookalike.server.index.gallery import Split
from lookalike.server.index.item import Item
from lookalike.server.index.items import (
    COLUMN_ROWS,
    ITEMS_FOLDER,
    ItemColumns,
    ItemList,
    ItemTable,
    column_checksums,
    write_columns,
)
from lookalike.server.vision.embedder import ModelInfo, file_sha256
from lookalike.server.vision.imaging import Crop
from lookalike.server.vision.selection import LARGEST, FaceSelection

log = logging.getLogger(__name__)

FEATURES = "features.npy"
MANIFEST = "manifest.json"
FORMAT = 1
# manifest.json is read whole into memory; a gallery past COLUMN_ROWS keeps its items
# in columns (server/index/items.py), so a manifest past this was not written here.
MAX_MANIFEST_BYTES = 256 * 1024 * 1024
OPEN_ATTEMPTS = 5
ANN_FILE = "ann.faiss"

# flat: exact search of the matrix; the others: faiss structures built from it (server/index/ann.py)
IndexType = Literal["flat", "ivf-flat", "ivf-sq8", "ivf-pq", "hnsw"]
Storage = Literal["float32", "float16"]
INDEX_TYPES: tuple[str, ...] = get_args(IndexType)
STORAGES: tuple[str, ...] = get_args(Storage)


class InvalidIndexError(RuntimeError):
    """The index is missing, damaged, or does not belong to the model."""


@dataclass(frozen=True)
class GalleryInfo:
    """What a server must know of a gallery, wherever its vectors live."""

    version: str
    model_name: str
    model_fingerprint: str
    input_size: int
    embedding_size: int
    crop: Crop
    gallery_root: str
    split: Split
    faces: FaceSelection = LARGEST  # which faces of each photo have rows

    def to_json(self) -> str:
        return json.dumps(
            {**asdict(self), "crop": self.crop.to_dict(), "faces": self.faces.to_dict()}
        )

    @classmethod
    def from_json(cls, text: str) -> GalleryInfo:
        """Info written before every-face indexing has no "faces": the largest face."""
        body = json.loads(text)
        faces = FaceSelection.from_dict(body.get("faces"))
        return cls(**{**body, "crop": Crop.from_dict(body["crop"]), "faces": faces})

    def check_model(self, model: ModelInfo, where: str) -> None:
        """Refuse to search with a model other than the one that embedded the gallery.

        The sizes are compared as well as the fingerprint: queries are resized to
        ``input_size`` before the model sees them, so a manifest must not choose it.
        """
        check_crop(model, self.crop)
        if model.fingerprint != self.model_fingerprint:
            raise InvalidIndexError(
                f"{where} was built by model {self.model_fingerprint}, "
                f"but the server loaded model {model.fingerprint}; "
                "rebuild the index with this model or serve the model that built it"
            )
        if self.input_size != model.input_size:
            raise InvalidIndexError(
                f"{where} says input size {self.input_size}, but the model takes "
                f"{model.input_size} px; the manifest was changed, rebuild the index"
            )
        if self.embedding_size != model.embedding_size:
            raise InvalidIndexError(
                f"{where} holds {self.embedding_size}-d embeddings, but the model makes "
                f"{model.embedding_size}-d ones; rebuild the index with this model"
            )


@dataclass(frozen=True)
class Layout:
    """How the rows are stored and searched. The zeros are chosen from the row count when the
    structure is built (server/index/ann.py), and recorded as built."""

    storage: Storage = "float32"
    index_type: IndexType = "flat"
    lists: int = 0  # IVF: k-means cells
    links: int = 0  # HNSW: M, neighbours per node
    breadth: int = 0  # default nprobe (IVF) or efSearch (HNSW); a server may override it

    @property
    def approximate(self) -> bool:
        return self.index_type != "flat"

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.storage)

    def afresh(self) -> Layout:
        """The same storage and index type, parameters to be chosen for a new row count
        (a compaction or an append may change it much)."""
        return Layout(storage=self.storage, index_type=self.index_type)

    def to_dict(self) -> dict[str, object]:
        return {
            "index_type": self.index_type,
            "file": ANN_FILE if self.approximate else None,
            "lists": self.lists,
            "links": self.links,
            "breadth": self.breadth,
        }

    @classmethod
    def from_json(cls, storage: str, search: dict | None) -> Layout:
        """A manifest without a "search" entry predates approximate indexes: exact."""
        if storage not in STORAGES:
            raise InvalidIndexError(f"features of dtype {storage!r}: only {STORAGES} are served")
        search = search or {}
        index_type = search.get("index_type", "flat")
        if index_type not in INDEX_TYPES:
            raise InvalidIndexError(f"unknown index type {index_type!r}; known: {INDEX_TYPES}")
        return cls(
            storage=storage,  # type: ignore[arg-type]
            index_type=index_type,
            lists=int(search.get("lists", 0)),
            links=int(search.get("links", 0)),
            breadth=int(search.get("breadth", 0)),
        )


def in_columns(rows: int) -> bool:
    """Whether a gallery of ``rows`` keeps its items in columns: past COLUMN_ROWS."""
    return rows > COLUMN_ROWS


@dataclass(frozen=True, kw_only=True)
class Manifest(GalleryInfo):
    """manifest.json: the GalleryInfo of an index folder, and what each row is."""

    rows: int
    features_sha256: str
    items: ItemTable = field(repr=False)  # a list is taken as an ItemList
    skipped: list[dict[str, str]] = field(default_factory=list, repr=False)
    layout: Layout = Layout()

    # the sha256 of each file of the items/ folder; None: the items are in the JSON
    items_sha256: dict[str, str] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.items, list):
            object.__setattr__(self, "items", ItemList(self.items))

    def write(self, folder: Path) -> Manifest:
        """Write manifest.json into ``folder`` (a staged index), the items of a gallery past
        COLUMN_ROWS first into its items/ folder; returns the manifest as written."""
        manifest = self
        if in_columns(len(self.items)) and self.items_sha256 is None:
            sums = write_columns(folder / ITEMS_FOLDER, self.items)
            manifest = replace(self, items=ItemColumns(folder / ITEMS_FOLDER), items_sha256=sums)
        (folder / MANIFEST).write_text(manifest.to_json())
        return manifest

    @property
    def info(self) -> GalleryInfo:
        """The GalleryInfo part alone, without the rows."""
        return GalleryInfo(**{f.name: getattr(self, f.name) for f in fields(GalleryInfo)})

    def to_json(self) -> str:
        body = {
            "format": FORMAT,
            "version": self.version,
            "model": {
                "name": self.model_name,
                "fingerprint": self.model_fingerprint,
                "input_size": self.input_size,
                "embedding_size": self.embedding_size,
            },
            "crop": self.crop.to_dict(),
            "faces": self.faces.to_dict(),
            "gallery_root": self.gallery_root,
            "split": self.split,
            "features": {
                "file": FEATURES,
                "dtype": self.layout.storage,
                "shape": [self.rows, self.embedding_size],
                "sha256": self.features_sha256,
            },
            "search": self.layout.to_dict(),
            "skipped": self.skipped,
            "items": (
                [item.to_row() for item in self.items]
                if self.items_sha256 is None
                else {"folder": ITEMS_FOLDER, "sha256": self.items_sha256}
            ),
        }
        return json.dumps(body, indent=1)

    @classmethod
    def from_json(cls, text: str, folder: Path | None = None) -> Manifest:
        """The manifest read from its text; ``folder``, the index folder, holds the items
        of a manifest that keeps them in columns."""
        body = json.loads(text)
        if body.get("format") != FORMAT:
            raise InvalidIndexError(f"unsupported index format {body.get('format')!r}")
        layout = Layout.from_json(body["features"]["dtype"], body.get("search"))
        shape = body["features"]["shape"]
        return cls(
            version=body["version"],
            model_name=body["model"]["name"],
            model_fingerprint=body["model"]["fingerprint"],
            input_size=body["model"]["input_size"],
            embedding_size=body["model"]["embedding_size"],
            crop=Crop.from_dict(body["crop"]),
            faces=FaceSelection.from_dict(body.get("faces")),  # none: an older, one-face index
            gallery_root=body["gallery_root"],
            split=body["split"],
            rows=shape[0],
            features_sha256=body["features"]["sha256"],
            items=_items_of(body["items"], folder),
            items_sha256=None if isinstance(body["items"], list) else body["items"]["sha256"],
            skipped=body.get("skipped", []),
            layout=layout,
        )


def _items_of(entry: list | dict, folder: Path | None) -> ItemTable:
    """The manifest's items: listed in it, or in columns in the index folder."""
    if isinstance(entry, list):
        return ItemList([Item.from_row(row) for row in entry])
    if folder is None:
        raise InvalidIndexError("the manifest keeps its items in columns: open its folder")
    return ItemColumns(folder / entry["folder"])


@dataclass
class GalleryIndex:
    """An index opened for search: the manifest plus the memory-mapped matrix."""

    path: Path
    manifest: Manifest
    features: np.memmap

    @classmethod
    def open(cls, path: Path, verify: bool = True) -> GalleryIndex:
        """Map the index; ``verify`` also checks the feature file against its checksum.

        ``path`` is resolved once, so both files come from one version even if its
        link is switched meanwhile (server/index/publish.py); a version removed
        while it was read is read again from where the link points now.
        """
        for _ in range(OPEN_ATTEMPTS):
            folder = path.resolve()
            try:
                return cls._open(path, folder, verify)
            except (InvalidIndexError, FileNotFoundError) as error:
                if path.resolve() != folder:
                    continue  # a newer version was published while this one was read
                if isinstance(error, FileNotFoundError):
                    raise InvalidIndexError(f"a file of {path} vanished: {error}") from None
                raise
        raise InvalidIndexError(f"{path} changed {OPEN_ATTEMPTS} times while it was opened")

    @classmethod
    def _open(cls, path: Path, folder: Path, verify: bool) -> GalleryIndex:
        manifest_file, features_file = folder / MANIFEST, folder / FEATURES
        for file in (manifest_file, features_file):
            if not file.is_file():
                raise InvalidIndexError(f"not an index folder, {file.name} is missing: {path}")
        manifest = _read_manifest(manifest_file)
        features = _map_features(features_file)
        expected = (manifest.rows, manifest.embedding_size)
        if features.dtype != manifest.layout.dtype or features.shape != expected:
            raise InvalidIndexError(
                f"{features_file} holds {features.dtype} {features.shape}, "
                f"the manifest says {manifest.layout.storage} {expected}"
            )
        if verify and file_sha256(features_file) != manifest.features_sha256:
            raise InvalidIndexError(
                f"{features_file} does not match the checksum in its manifest: the file was "
                "changed or damaged after the index was built; rebuild it"
            )
        columns, sums = folder / ITEMS_FOLDER, manifest.items_sha256
        if verify and sums is not None and column_checksums(columns) != sums:
            raise InvalidIndexError(
                f"the item columns in {columns} do not match the checksums in its manifest: "
                "changed or damaged after the index was built; rebuild it"
            )
        if len(manifest.items) != manifest.rows:
            raise InvalidIndexError(
                f"{manifest_file} lists {len(manifest.items)} items for {manifest.rows} rows"
            )
        return cls(path=path, manifest=manifest, features=features)

    def check_model(self, model: ModelInfo) -> None:
        self.manifest.info.check_model(model, f"the index {self.path}")

    def __len__(self) -> int:
        return self.manifest.rows


def _read_manifest(file: Path) -> Manifest:
    """The manifest, read only when its size is within the cap."""
    size = file.stat().st_size
    if size > MAX_MANIFEST_BYTES:
        raise InvalidIndexError(
            f"{file} is {size:,} bytes, more than the {MAX_MANIFEST_BYTES:,} a manifest may be"
        )
    try:
        return Manifest.from_json(file.read_text(), file.parent)
    except (ValueError, KeyError, TypeError, IndexError, OSError) as error:
        raise InvalidIndexError(f"{file} is not a valid manifest: {error}") from None


def _map_features(file: Path) -> np.memmap:
    """The plain .npy matrix, mapped; numpy would open a zip (.npz) as an archive instead."""
    try:
        features = np.load(file, mmap_mode="r", allow_pickle=False)
    except ValueError as error:
        raise InvalidIndexError(f"{file} is not a readable .npy file: {error}") from None
    if not isinstance(features, np.memmap):
        raise InvalidIndexError(
            f"{file} is a zip archive (an .npz?), not a plain .npy file; "
            "write it with numpy.save, or rebuild the index"
        )
    return features


def check_crop(model: ModelInfo, crop: Crop) -> None:
    """A model trained on one crop sees only that crop, at index time and at search time."""
    if model.crop is not None and model.crop != crop:
        raise InvalidIndexError(
            f"model {model.fingerprint} was trained on crop {model.crop.mode} "
            f"(fraction {model.crop.fraction}), not {crop.mode} (fraction {crop.fraction}); "
            "index with the model's crop (leave out --crop)"
        )

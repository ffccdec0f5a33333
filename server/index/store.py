"""The search index on disk: a float32 feature matrix and the manifest that explains it.

Layout of an index folder::

    features.npy    N x D float32 (or float16: ``--storage``), opened with
                    numpy.load(mmap_mode="r"): the source of truth for every search
    manifest.json   model fingerprint, crop, which faces ("faces"; absent: the largest),
                    shape, checksum, and one item per row (per face in an every-face index)
    ann.faiss       only for an approximate ``--index-type``: the faiss structure built
                    from features.npy (server/index/ann.py), rebuilt at open if missing

lookalike.server.index.build writes it; this module reads and checks it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from lookalike.server.index.gallery import Split
from lookalike.server.vision.embedder import ModelInfo, file_sha256
from lookalike.server.vision.imaging import Crop
from lookalike.server.vision.selection import LARGEST, FaceSelection

log = logging.getLogger(__name__)

FEATURES = "features.npy"
MANIFEST = "manifest.json"
FORMAT = 1
# manifest.json is read whole into memory: about 100 bytes an item, so this allows
# some 2.5 million items; larger galleries belong in Milvus.
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


@dataclass(frozen=True, kw_only=True)
class Manifest(GalleryInfo):
    """manifest.json: the GalleryInfo of an index folder, and what each row is."""

    rows: int
    features_sha256: str
    items: list[Item] = field(repr=False)
    skipped: list[dict[str, str]] = field(default_factory=list, repr=False)
    layout: Layout = Layout()

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
            "items": [item.to_row() for item in self.items],
        }
        return json.dumps(body, indent=1)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
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
            items=[Item.from_row(row) for row in body["items"]],
            skipped=body.get("skipped", []),
            layout=layout,
        )


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
        if len(manifest.items) != manifest.rows:
            raise InvalidIndexError(
                f"{manifest_file} lists {len(manifest.items)} items for {manifest.rows} rows"
            )
        return cls(path=path, manifest=manifest, features=features)

    def check_model(self, model: ModelInfo) -> None:
        self.manifest.info.check_model(model, f"the index {self.path}")

    def __len__(self) -> int:
        return self.manifest.rows


def check_manifest_fits(paths: list[tuple[str, str]], base_bytes: int = 0) -> None:
    """Refuse, before any embedding, a build whose manifest a server could not read.

    ``paths``: (label, path) of the rows to add; ``base_bytes``: the manifest they are
    added to. Each row is counted at its compact JSON size (id, label, path), which the
    written, indented manifest only exceeds, so a build refused here could never have
    been served, and one let through may still be refused when it is opened.
    """
    empty = Item("0" * 16, "", "").to_row()
    # the id, the brackets, the commas within a row and one between rows; each name's
    # quotes are counted with the name
    row = len(json.dumps(empty, separators=(",", ":"))) - 4 + 1
    names = sum(len(json.dumps(label)) + len(json.dumps(path)) for label, path in paths)
    least = base_bytes + row * len(paths) + names
    if least > MAX_MANIFEST_BYTES:
        raise InvalidIndexError(
            f"{len(paths):,} images make a manifest of at least {least:,} bytes, more than the "
            f"{MAX_MANIFEST_BYTES:,} a server reads (about 3 million rows with names like LFW's): "
            "split the gallery into several indexes, or index it into Milvus (--backend milvus)"
        )


def _read_manifest(file: Path) -> Manifest:
    """The manifest, read only when its size is within the cap."""
    size = file.stat().st_size
    if size > MAX_MANIFEST_BYTES:
        raise InvalidIndexError(
            f"{file} is {size:,} bytes, more than the {MAX_MANIFEST_BYTES:,} a manifest may be"
        )
    try:
        return Manifest.from_json(file.read_text())
    except (ValueError, KeyError, TypeError, IndexError) as error:
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

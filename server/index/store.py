"""The search index on disk: a float32 feature matrix and the manifest that explains it.

Layout of an index folder::

    features.npy    N x D float32, opened with numpy.load(mmap_mode="r")
    manifest.json   model fingerprint, crop, shape, checksum, and one item per row

lookalike.server.index.build writes it; this module reads and checks it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from lookalike.server.index.gallery import Split
from lookalike.server.vision.embedder import ModelInfo, file_sha256
from lookalike.server.vision.imaging import Crop

log = logging.getLogger(__name__)

FEATURES = "features.npy"
MANIFEST = "manifest.json"
FORMAT = 1
# manifest.json is read whole into memory: about 100 bytes an item, so this allows
# some 2.5 million items; larger galleries belong in Milvus.
MAX_MANIFEST_BYTES = 256 * 1024 * 1024
OPEN_ATTEMPTS = 5


class InvalidIndexError(RuntimeError):
    """The index is missing, damaged, or does not belong to the model."""


@dataclass(frozen=True)
class Item:
    id: str
    label: str
    path: str
    also: tuple[str, ...] = ()  # paths of identical files, indexed once


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

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "crop": self.crop.to_dict()})

    @classmethod
    def from_json(cls, text: str) -> GalleryInfo:
        body = json.loads(text)
        return cls(**{**body, "crop": Crop.from_dict(body["crop"])})

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
class Manifest(GalleryInfo):
    """manifest.json: the GalleryInfo of an index folder, and what each row is."""

    rows: int
    features_sha256: str
    items: list[Item] = field(repr=False)
    skipped: list[dict[str, str]] = field(default_factory=list, repr=False)

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
            "gallery_root": self.gallery_root,
            "split": self.split,
            "features": {
                "file": FEATURES,
                "dtype": "float32",
                "shape": [self.rows, self.embedding_size],
                "sha256": self.features_sha256,
            },
            "skipped": self.skipped,
            "items": [
                [item.id, item.label, item.path, *([list(item.also)] if item.also else [])]
                for item in self.items
            ],
        }
        return json.dumps(body, indent=1)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        body = json.loads(text)
        if body.get("format") != FORMAT:
            raise InvalidIndexError(f"unsupported index format {body.get('format')!r}")
        if body["features"]["dtype"] != "float32":
            raise InvalidIndexError(
                f"features of dtype {body['features']['dtype']!r}: only float32 is served"
            )
        shape = body["features"]["shape"]
        return cls(
            version=body["version"],
            model_name=body["model"]["name"],
            model_fingerprint=body["model"]["fingerprint"],
            input_size=body["model"]["input_size"],
            embedding_size=body["model"]["embedding_size"],
            crop=Crop.from_dict(body["crop"]),
            gallery_root=body["gallery_root"],
            split=body["split"],
            rows=shape[0],
            features_sha256=body["features"]["sha256"],
            items=[Item(*row[:3], tuple(row[3]) if len(row) > 3 else ()) for row in body["items"]],
            skipped=body.get("skipped", []),
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
        if features.dtype != np.float32 or features.shape != expected:
            raise InvalidIndexError(
                f"{features_file} holds {features.dtype} {features.shape}, "
                f"the manifest says float32 {expected}"
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

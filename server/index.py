"""The search index on disk: a float32 feature matrix and the manifest that explains it.

Layout of an index folder::

    features.npy    N x D float32, opened with numpy.load(mmap_mode="r")
    manifest.json   model fingerprint, crop, shape, checksum, and one item per row

A build writes into a temporary folder beside the destination and renames it
into place only when complete, so a server never sees a half-written index.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lookalike.server.embedder import Embedder, ModelInfo, file_sha256
from lookalike.server.gallery import GalleryImage, Split, content_id, list_gallery
from lookalike.server.imaging import WHOLE_FRAME, Crop, ImageError, load

log = logging.getLogger(__name__)

FEATURES = "features.npy"
MANIFEST = "manifest.json"
FORMAT = 1


class InvalidIndexError(RuntimeError):
    """The index is missing, damaged, or does not belong to the model."""


@dataclass(frozen=True)
class Item:
    id: str
    label: str
    path: str


@dataclass(frozen=True)
class Manifest:
    version: str
    model_name: str
    model_fingerprint: str
    input_size: int
    embedding_size: int
    crop: Crop
    gallery_root: str
    split: Split
    rows: int
    features_sha256: str
    items: list[Item] = field(repr=False)
    skipped: list[dict[str, str]] = field(default_factory=list, repr=False)

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
            "items": [[item.id, item.label, item.path] for item in self.items],
        }
        return json.dumps(body, indent=1)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        body = json.loads(text)
        if body.get("format") != FORMAT:
            raise InvalidIndexError(f"unsupported index format {body.get('format')!r}")
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
            items=[Item(*row) for row in body["items"]],
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
        """Map the index; ``verify`` also checks the feature file against its checksum."""
        manifest_file, features_file = path / MANIFEST, path / FEATURES
        for file in (manifest_file, features_file):
            if not file.is_file():
                raise InvalidIndexError(f"not an index folder, {file.name} is missing: {path}")
        try:
            manifest = Manifest.from_json(manifest_file.read_text())
        except (ValueError, KeyError, TypeError) as error:
            raise InvalidIndexError(f"{manifest_file} is not a valid manifest: {error}") from None
        try:
            features = np.load(features_file, mmap_mode="r")
        except ValueError as error:
            raise InvalidIndexError(
                f"{features_file} is not a readable .npy file: {error}"
            ) from None
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
        """Refuse to search with a model other than the one that built the index."""
        check_crop(model, self.manifest.crop)
        if model.fingerprint != self.manifest.model_fingerprint:
            raise InvalidIndexError(
                f"the index {self.path} was built by model {self.manifest.model_fingerprint}, "
                f"but the server loaded model {model.fingerprint} ({model.path}); "
                "rebuild the index with this model or serve the model that built it"
            )

    def __len__(self) -> int:
        return self.manifest.rows


def check_crop(model: ModelInfo, crop: Crop) -> None:
    """A model trained on one crop sees only that crop, at index time and at search time."""
    if model.crop is not None and model.crop != crop:
        raise InvalidIndexError(
            f"model {model.fingerprint} was trained on crop {model.crop.mode} "
            f"(fraction {model.crop.fraction}), not {crop.mode} (fraction {crop.fraction}); "
            "index with the model's crop (leave out --crop)"
        )


@dataclass(frozen=True)
class BuildReport:
    path: Path
    rows: int
    skipped: list[dict[str, str]]
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


def build_index(
    gallery_root: Path,
    embedder: Embedder,
    out: Path,
    crop: Crop | None = None,
    batch_size: int = 16,
    progress: bool = True,
    split: Split = "all",
) -> BuildReport:
    """Embed every gallery image into a new index at ``out``, replacing any old one whole.

    ``crop`` defaults to the model's own (for fine-tuned models) or the whole frame.
    """
    started = time.perf_counter()
    crop = crop or embedder.info.crop or WHOLE_FRAME
    check_crop(embedder.info, crop)
    images = list_gallery(gallery_root, split)
    size = embedder.info.input_size
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    staging.chmod(0o755)  # mkdtemp makes folders private to their owner
    try:
        matrix = np.lib.format.open_memmap(
            staging / FEATURES,
            mode="w+",
            dtype=np.float32,
            shape=(len(images), embedder.info.embedding_size),
        )
        items, skipped = _embed_into(
            gallery_root, images, embedder, crop, size, batch_size, matrix, progress
        )
        if not items:
            raise InvalidIndexError(
                f"none of the {len(images)} images under {gallery_root} decoded"
            )
        matrix.flush()
        del matrix
        if len(items) < len(images):
            _truncate_rows(staging / FEATURES, len(items))
        checksum = file_sha256(staging / FEATURES)
        manifest = Manifest(
            # when, and what: two builds in one second still differ
            version=time.strftime("%Y%m%dT%H%M%SZ-", time.gmtime()) + checksum[:8],
            model_name=embedder.info.name,
            model_fingerprint=embedder.info.fingerprint,
            input_size=size,
            embedding_size=embedder.info.embedding_size,
            crop=crop,
            gallery_root=str(gallery_root.resolve()),
            split=split,
            rows=len(items),
            features_sha256=checksum,
            items=items,
            skipped=skipped,
        )
        (staging / MANIFEST).write_text(manifest.to_json())
        _swap_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return BuildReport(out, len(items), skipped, time.perf_counter() - started)


def _embed_into(
    root: Path,
    images: list[GalleryImage],
    embedder: Embedder,
    crop: Crop,
    size: int,
    batch_size: int,
    matrix: np.ndarray,
    progress: bool,
) -> tuple[list[Item], list[dict[str, str]]]:
    """Decode on a thread pool while the embedder runs, writing rows in gallery order."""

    def read(image: GalleryImage) -> tuple[GalleryImage, str, np.ndarray | str]:
        try:
            data = (root / image.path).read_bytes()
            return image, content_id(data), load(data, crop, size).pixels
        except (OSError, ImageError) as error:
            return image, "", str(error)

    items: list[Item] = []
    skipped: list[dict[str, str]] = []
    pending: list[tuple[GalleryImage, str, np.ndarray]] = []

    def flush() -> None:
        features = embedder.embed(np.stack([pixels for _, _, pixels in pending]))
        matrix[len(items) : len(items) + len(pending)] = features
        items.extend(Item(image_id, image.label, image.path) for image, image_id, _ in pending)
        pending.clear()

    with (
        ThreadPoolExecutor(max_workers=max(1, (os.cpu_count() or 2) // 2)) as pool,
        tqdm(total=len(images), unit="img", desc="indexing", disable=not progress) as bar,
    ):
        for image, image_id, result in pool.map(read, images):
            if isinstance(result, str):
                log.warning("skipped %s: %s", image.path, result)
                skipped.append({"path": image.path, "error": result})
            else:
                pending.append((image, image_id, result))
                if len(pending) == batch_size:
                    flush()
            bar.update()
        if pending:
            flush()
    return items, skipped


def _truncate_rows(features_file: Path, rows: int) -> None:
    """Rewrite the matrix without the rows reserved for images that failed to decode."""
    full = np.load(features_file, mmap_mode="r")
    trimmed_file = features_file.with_suffix(".trimmed.npy")
    np.save(trimmed_file, full[:rows])
    del full
    os.replace(trimmed_file, features_file)


def _swap_into_place(staging: Path, out: Path) -> None:
    """Put the finished index at ``out``; an old index there is removed only afterwards."""
    if out.exists():
        retired = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, retired / out.name)
        os.replace(staging, out)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(staging, out)

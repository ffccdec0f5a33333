"""Building an index: staged, resumable, appendable, never half-written where a server looks.

A build works in ``.<name>.building`` beside the destination. Every embedded
batch is flushed to the staged matrix first and then recorded, one JSON line
per gallery file, in its build journal (``journal.jsonl``) there; a killed build resumes
(``resume=True``) from what the journal records. Only a finished build is
published (server/index/publish.py): the old index is served until one atomic
switch serves the new one.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lookalike.common.output import bar_disable
from lookalike.common.versions import check_publishable
from lookalike.server.index import ann
from lookalike.server.index import journal as journals
from lookalike.server.index.gallery import GalleryImage, Split, content_id, list_gallery
from lookalike.server.index.item import face_id
from lookalike.server.index.items import ItemTable
from lookalike.server.index.journal import BUILD_JOURNAL, Journal
from lookalike.server.index.publish import publish, recover
from lookalike.server.index.store import (
    FEATURES,
    GalleryIndex,
    GalleryInfo,
    InvalidIndexError,
    Item,
    Layout,
    Manifest,
    check_crop,
)
from lookalike.server.vision.embedder import Embedder, file_sha256
from lookalike.server.vision.imaging import WHOLE_FRAME, Crop, ImageError, decode
from lookalike.server.vision.selection import LARGEST, FaceSelection, prepare_faces

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildReport:
    path: Path
    rows: int
    embedded: int  # rows embedded by this run (not resumed, not appended from before)
    duplicates: int
    skipped: list[dict[str, str]]
    seconds: float
    faces: str = "largest"  # FaceSelection.mode: which faces of a photo have rows
    files: int = 0  # gallery files read by this run
    faces_per_file: dict[int, int] = field(default_factory=dict)  # faces -> files, this run

    @property
    def row_kind(self) -> str:
        return "images" if self.faces == "largest" else "faces"

    @property
    def images_per_second(self) -> float:
        """Rows embedded a second (faces, in an every-face index)."""
        return self.embedded / self.seconds if self.seconds else 0.0

    @property
    def files_per_second(self) -> float:
        return self.files / self.seconds if self.seconds else 0.0

    @property
    def rows_per_file(self) -> float:
        files = sum(self.faces_per_file.values())
        return sum(n * c for n, c in self.faces_per_file.items()) / files if files else 0.0


def build_index(
    gallery_root: Path,
    embedder: Embedder,
    out: Path,
    crop: Crop | None = None,
    batch_size: int = 16,
    progress: bool = True,
    split: Split = "all",
    resume: bool = False,
    append_to: Path | None = None,
    max_failure_share: float = 0.05,
    layout: Layout | None = None,
    faces: FaceSelection | None = None,
) -> BuildReport:
    """Embed the gallery into a new index at ``out``, replacing any old one whole.

    ``crop`` defaults to the model's own (for fine-tuned models) or the whole
    frame. ``append_to``: start from that index's rows and embed only files whose
    content it does not hold yet. Identical files are embedded once; the
    manifest keeps every path. ``layout``: the storage and index type (default:
    the appended index's, else float32 and exact). ``faces``: one row per photo (its
    largest face, the default) or one per detected face (``FaceSelection("all")``, rows
    ``<content id>#<n>`` with their boxes); an append keeps the appended index's.
    """
    started = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    check_publishable(out)  # before the work, not after it
    recover(out)
    base = GalleryIndex.open(append_to) if append_to else None
    if base:
        base.check_model(embedder.info)
        crop = crop or base.manifest.crop
        layout = layout or base.manifest.layout.afresh()
        if faces is not None and faces != base.manifest.faces:
            raise InvalidIndexError(
                f"{append_to} has {base.manifest.faces.mode} faces of each photo, not "
                f"{faces.mode}: append with its setting, or build a new index"
            )
        faces = base.manifest.faces
    crop = crop or embedder.info.crop or WHOLE_FRAME
    faces = faces or LARGEST
    check_crop(embedder.info, crop)
    try:
        faces.check_crop(crop)
    except ValueError as error:
        raise InvalidIndexError(str(error)) from None
    images = list_gallery(gallery_root, split)
    staging = out.parent / f".{out.name}.building"
    if staging.exists() and not resume:
        shutil.rmtree(staging)
    header = {
        "model": embedder.info.fingerprint,
        "crop": crop.to_dict(),
        "split": split,
        "gallery_root": str(gallery_root.resolve()),
        "append_to": base.manifest.version if base else None,
        **({"faces": faces.to_dict()} if faces != LARGEST else {}),
    }
    if staging.exists():
        journal = journals.resume(staging / BUILD_JOURNAL, header)
        todo = [image for image in images if image.path not in journal.done]
        matrix = _reserve(staging / FEATURES, len(journal.rows) + len(todo))  # grown as needed
        log.info("resuming: %d files already done, %d to go", len(journal.done), len(todo))
    else:
        staging.mkdir(mode=0o755)
        journals.start(staging / BUILD_JOURNAL, header)
        journal = Journal()
        capacity = len(images) + (len(base) if base else 0)
        matrix = np.lib.format.open_memmap(
            staging / FEATURES,
            mode="w+",
            dtype=np.float32,
            shape=(capacity, embedder.info.embedding_size),
        )
        if base:
            _copy_base(base, matrix, staging / BUILD_JOURNAL, journal)
        todo = [image for image in images if image.path not in journal.done]
    before = len(journal.rows)
    with (staging / BUILD_JOURNAL).open("a") as record_file:
        staged = StagedMatrix(staging / FEATURES, matrix)
        del matrix
        per_file = _embed(
            gallery_root,
            todo,
            embedder,
            crop,
            faces,
            batch_size,
            staged,
            journal,
            record_file,
            progress,
        )
    staged.close()
    failures = len(journal.skipped)
    if not journal.rows:
        shutil.rmtree(staging)
        raise InvalidIndexError(f"none of the {len(images)} images under {gallery_root} decoded")
    if images and failures / len(images) > max_failure_share:
        raise InvalidIndexError(
            f"{failures} of {len(images)} images could not be read, more than the "
            f"{max_failure_share:.0%} allowed; first: {journal.skipped[0]}; the partial build "
            f"is kept in {staging}: fix or remove those files, then --resume"
        )
    _finish(staging, out, journal, embedder, crop, faces, gallery_root, split, layout or Layout())
    return BuildReport(
        out,
        len(journal.rows),
        len(journal.rows) - before,
        journal.duplicates,
        journal.skipped,
        time.perf_counter() - started,
        faces.mode,
        len(todo),
        dict(sorted(per_file.items())),
    )


class StagedMatrix:
    """The staged feature matrix, doubled when a batch does not fit: an every-face
    build cannot know before it detects how many rows its photos give."""

    def __init__(self, file: Path, matrix: np.memmap) -> None:
        self.file = file
        self.matrix = matrix

    def write(self, row: int, vectors: np.ndarray) -> None:
        """Put ``vectors`` at ``row`` and flush them (on disk before the journal says so)."""
        if row + len(vectors) > self.matrix.shape[0]:
            self.matrix.flush()
            rows = max(2 * self.matrix.shape[0], row + len(vectors))
            self.matrix = None  # type: ignore[assignment] (unmapped before it is replaced)
            self.matrix = _reserve(self.file, rows)
        self.matrix[row : row + len(vectors)] = vectors
        self.matrix.flush()

    def close(self) -> None:
        self.matrix.flush()
        self.matrix = None  # type: ignore[assignment]


def _reserve(features: Path, rows: int) -> np.memmap:
    """The staged matrix, grown when files were added to the gallery since the kill."""
    matrix = np.load(features, mmap_mode="r+")
    if matrix.shape[0] >= rows:
        return matrix
    grown = np.lib.format.open_memmap(
        features.with_suffix(".grown.npy"),
        mode="w+",
        dtype=np.float32,
        shape=(rows, matrix.shape[1]),
    )
    grown[: matrix.shape[0]] = matrix
    grown.flush()
    del matrix, grown
    os.replace(features.with_suffix(".grown.npy"), features)
    return np.load(features, mmap_mode="r+")


def _copy_base(
    base: GalleryIndex, matrix: np.ndarray, journal_file: Path, journal: Journal
) -> None:
    """An appended index starts as a copy of the old one's rows and journal."""
    matrix[: len(base)] = base.features
    matrix.flush()
    records = [
        journals.record_of(item, path)
        for item in base.manifest.items
        for path in (item.path, *item.also)
    ]
    with journal_file.open("a") as stream:
        journals.append(stream, journal, records)


def _read(root: Path, image: GalleryImage, crop: Crop, faces: FaceSelection, size: int) -> list:
    """The records of one gallery file: one per face with its pixels, or its error."""
    try:
        data = (root / image.path).read_bytes()
        file_id = content_id(data)
        found = prepare_faces(decode(data), crop, size, faces)
    except (OSError, ImageError) as error:
        return [{"path": image.path, "label": image.label, "error": str(error)}]
    if faces == LARGEST:  # one row per file, under the file's own id, as ever
        return [
            {"path": image.path, "label": image.label, "id": file_id, "pixels": found[0].pixels}
        ]
    return [
        {
            "path": image.path,
            "label": image.label,
            "id": face_id(file_id, number),
            "box": list(face.face),
            "pixels": face.pixels,
        }
        for number, face in enumerate(found)
    ]


def _decoded(
    root: Path, images: list[GalleryImage], crop: Crop, faces: FaceSelection, size: int
) -> Iterator[list[dict]]:
    """Decode on a thread pool, in gallery order, while the caller embeds."""
    with ThreadPoolExecutor(max_workers=max(1, (os.cpu_count() or 2) // 2)) as pool:
        yield from pool.map(lambda image: _read(root, image, crop, faces, size), images)


def _embed(
    root: Path,
    images: list[GalleryImage],
    embedder: Embedder,
    crop: Crop,
    faces: FaceSelection,
    batch_size: int,
    matrix: StagedMatrix,
    journal: Journal,
    record_file,  # noqa: ANN001
    progress: bool,
) -> Counter[int]:
    """Embed ``images`` in batches of whole files; returns how many files had n faces."""
    pending: list[dict] = []  # records of one batch, in order; at most one embedding per id
    fresh: dict[str, int] = {}  # ids of this batch -> position among its embeddings
    per_file: Counter[int] = Counter()

    def flush() -> None:
        batch = [r for r in pending if "pixels" in r]
        if batch:
            matrix.write(len(journal.rows), embedder.embed(np.stack([r["pixels"] for r in batch])))
        for record in pending:
            record.pop("pixels", None)
        journals.append(record_file, journal, pending)
        pending.clear()
        fresh.clear()

    with tqdm(total=len(images), unit="img", desc="indexing", disable=bar_disable(progress)) as bar:
        for records in _decoded(root, images, crop, faces, embedder.info.input_size):
            per_file[0 if "error" in records[0] else len(records)] += 1
            for record in records:
                if "error" in record:
                    log.warning("skipped %s: %s", record["path"], record["error"])
                elif record["id"] in journal.ids or record["id"] in fresh:
                    record.pop("pixels")  # a duplicate: recorded, not embedded
                else:
                    fresh[record["id"]] = len(fresh)
                pending.append(record)
            if len(fresh) >= batch_size:  # whole files only: a resume skips done files
                flush()
            bar.update()
        flush()
    return per_file


def _finish(
    staging: Path,
    out: Path,
    journal: Journal,
    embedder: Embedder,
    crop: Crop,
    faces: FaceSelection,
    gallery_root: Path,
    split: Split,
    layout: Layout,
) -> None:
    (staging / BUILD_JOURNAL).unlink()
    info = GalleryInfo(
        version="",
        model_name=embedder.info.name,
        model_fingerprint=embedder.info.fingerprint,
        input_size=embedder.info.input_size,
        embedding_size=embedder.info.embedding_size,
        crop=crop,
        gallery_root=str(gallery_root.resolve()),
        split=split,
        faces=faces,
    )
    publish_staged(staging, out, info, journal.rows, journal.skipped, layout)


def publish_staged(
    staging: Path,
    out: Path,
    info: GalleryInfo,
    items: list[Item] | ItemTable,
    skipped: list[dict[str, str]],
    layout: Layout | None = None,
    items_sha256: dict[str, str] | None = None,
) -> Manifest:
    """Seal a staged folder (its matrix trimmed to ``items`` in the layout's dtype, its
    approximate structure built, checksummed, on disk) and put it at ``out`` in one step:
    the publish of every build and of every compaction. ``items_sha256``: the items are
    in the staged folder's columns already (a compaction's splice), with these sums."""
    rows = len(items)
    layout = layout or Layout()
    full = np.load(staging / FEATURES, mmap_mode="r")
    if full.shape[0] != rows or full.dtype != layout.dtype:  # capacity, or float16 storage
        trimmed = staging / "features.trimmed.npy"
        _save_as(trimmed, full[:rows], layout.dtype)
        del full
        os.replace(trimmed, staging / FEATURES)
    else:
        del full
    checksum = file_sha256(staging / FEATURES)
    if layout.approximate:
        layout = ann.resolved(layout, rows)
        ann.write(ann.build(np.load(staging / FEATURES, mmap_mode="r"), layout), staging)
    manifest = Manifest(
        **{**asdict(info), "crop": info.crop, "faces": info.faces},
        rows=rows,
        features_sha256=checksum,
        items=items,
        skipped=skipped,
        layout=layout,
        items_sha256=items_sha256,
    )
    # when, and what: two builds in one second still differ
    manifest = replace(
        manifest, version=time.strftime("%Y%m%dT%H%M%SZ-", time.gmtime()) + checksum[:8]
    )
    manifest = manifest.write(staging)
    publish(staging, out, manifest.version)
    return manifest


def _save_as(file: Path, rows: np.ndarray, dtype: np.dtype, block: int = 262_144) -> None:
    """``rows`` written as a .npy of ``dtype``, block by block (no copy of the whole matrix)."""
    matrix = np.lib.format.open_memmap(file, mode="w+", dtype=dtype, shape=rows.shape)
    for start in range(0, len(rows), block):
        matrix[start : start + block] = rows[start : start + block]
    matrix.flush()
    del matrix

"""`lookalike eval`: retrieval and verification quality of a model over a gallery.

The gallery is indexed by the same build_index the server's indexes come from,
and searched by the same exact k-NN as the server's memory-mapped backend
(KnnSearcher, or the float16 scan of a float16 index; an approximate index's rows
are ranked exactly too, since every row is ranked); a query is the index row of
a gallery image (the vector the server would compute from that file), searched
against the whole gallery with itself left out. In an every-face index
(``--faces all``) a query is a photo's largest face (its one-face row), and the
gallery is ranked by photo, each at the distance of its nearest face: a photo
where the person is the second face counts as that person's photo, as a user
searching for them would count it.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from lookalike.common.output import bar_disable

if TYPE_CHECKING:
    from lookalike.server.backends.milvus import MilvusTarget

from lookalike.common.files import atomic_path
from lookalike.server.backends.approximate import RowSearcher, exact_searcher
from lookalike.server.backends.base import DEFAULT_ALGORITHM, Algorithm, MilvusIndexType
from lookalike.server.backends.knn import KnnSearcher
from lookalike.server.evaluation.pairs import PairsFormatError, pair_image_path, read_pairs
from lookalike.server.evaluation.scores import (
    RetrievalMetrics,
    VerificationMetrics,
    hit_at_k,
    retrieval_metrics,
    same_label_matrix,
    verification_metrics,
)
from lookalike.server.index.build import build_index
from lookalike.server.index.gallery import Split
from lookalike.server.index.store import GalleryIndex
from lookalike.server.vision.embedder import Device, Embedder
from lookalike.server.vision.imaging import Crop
from lookalike.server.vision.selection import FaceSelection
from lookalike.server.vision.teacher import open_teacher

log = logging.getLogger(__name__)

QUERY_CHUNK = 256
# Milvus Lite's FLAT search costs tens of milliseconds per query, so a chunk of
# 256 can outlast the Milvus timeout; 16 is the server's own largest batch.
MILVUS_QUERY_CHUNK = 16


@dataclass(frozen=True)
class EvalConfig:
    gallery: Path
    model: Path | None = None  # the ONNX embedder; or None with a teacher
    index: Path | None = None
    pairs: Path | None = None
    out: Path | None = None
    crop: Crop | None = None  # None: the model's own crop, else the whole frame
    split: Split = "all"
    knn_algorithm: Algorithm = DEFAULT_ALGORITHM
    device: Device = "auto"
    batch_size: int = 16
    progress: bool = True
    milvus: MilvusTarget | None = None  # also load into this collection and measure its recall
    milvus_index_type: MilvusIndexType = "FLAT"
    teacher: str | None = None  # score this pretrained face model instead (the ceiling)
    faces: FaceSelection | None = None  # None: the index's, else the largest face

    def __post_init__(self) -> None:
        if (self.model is None) == (self.teacher is None):
            raise ValueError("evaluate either a model (--model) or a teacher (--teacher)")


def open_or_build_index(config: EvalConfig, embedder: Embedder, scratch: Path) -> GalleryIndex:
    """Reuse ``--index`` when it exists; otherwise build it (there, or in scratch space)."""
    path = config.index or scratch / "index"
    if not (config.index and (path / "manifest.json").exists()):
        build_index(
            config.gallery,
            embedder,
            path,
            config.crop,
            config.batch_size,
            progress=config.progress,
            split=config.split,
            faces=config.faces,
        )
    return GalleryIndex.open(path)


def leave_one_out_hit_at_1(features: np.ndarray, labels: np.ndarray) -> float:
    """Share of rows whose nearest other row has the same label: a quick check of features
    (training reports it on held-out people)."""
    _, neighbours = KnnSearcher(np.asarray(features, np.float32)).search(features, 2)
    return hit_at_k(same_label_matrix(labels, labels[neighbours[:, 1:]]), 1)


def _query_chunks(queries: int, progress: bool) -> Iterable[int]:
    """The first query of each chunk searched at once, with a progress bar when asked."""
    return tqdm(
        range(0, queries, QUERY_CHUNK),
        desc="searching",
        unit="chunk",
        disable=bar_disable(progress),
    )


def rank_gallery(
    index: GalleryIndex, knn: RowSearcher, rows: np.ndarray, progress: bool
) -> np.ndarray:
    """For each query row, every other gallery row, nearest first."""
    size = len(index)
    ranked = np.empty((len(rows), size - 1), dtype=np.int64)
    for start in _query_chunks(len(rows), progress):
        chunk = rows[start : start + QUERY_CHUNK]
        _, neighbours = knn.search(index.features[chunk], size)
        others = neighbours != chunk[:, np.newaxis]
        ranked[start : start + len(chunk)] = neighbours[others].reshape(len(chunk), size - 1)
    return ranked


@dataclass(frozen=True)
class Photos:
    """The gallery's photos and their rows: one row each, or one per face."""

    of_row: np.ndarray  # the photo of each row, numbered in gallery order
    first_rows: np.ndarray  # each photo's first row: its largest face
    labels: np.ndarray  # each photo's label

    @classmethod
    def of(cls, index: GalleryIndex) -> Photos:
        numbers: dict[str, int] = {}
        of_row = np.array(
            [numbers.setdefault(item.file_id, len(numbers)) for item in index.manifest.items],
            dtype=np.int64,
        )
        _, first_rows = np.unique(of_row, return_index=True)
        labels = np.array([index.manifest.items[row].label for row in first_rows])
        return cls(of_row, first_rows, labels)

    @property
    def faces_per_photo(self) -> dict[int, int]:
        """How many photos have 1, 2, ... rows (faces)."""
        return dict(sorted(Counter(np.bincount(self.of_row).tolist()).items()))


def rank_photos(
    index: GalleryIndex, knn: RowSearcher, photos: Photos, queries: np.ndarray, progress: bool
) -> np.ndarray:
    """For each query photo (by its first row), every other photo, nearest first, each at
    the distance of its nearest row (face)."""
    size, count = len(index), len(photos.labels)
    ranked = np.empty((len(queries), count - 1), dtype=np.int64)
    for start in _query_chunks(len(queries), progress):
        chunk = queries[start : start + QUERY_CHUNK]
        _, neighbours = knn.search(index.features[photos.first_rows[chunk]], size)
        for n, (photo, rows) in enumerate(zip(chunk, neighbours, strict=True)):
            order = photos.of_row[rows]
            _, first = np.unique(order, return_index=True)
            nearest_first = order[np.sort(first)]
            ranked[start + n] = nearest_first[nearest_first != photo]
    return ranked


def pair_distances(index: GalleryIndex, pairs_file: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """Distances and same-person flags of the pairs whose people are all in the gallery.

    Pairs naming someone outside the gallery (another split) are skipped and
    counted; a pair whose person is here but whose image is not is an error.
    """
    rows = {item.path: row for row, item in enumerate(index.manifest.items) if item.face == 0}
    people = {item.label for item in index.manifest.items}
    distances, same, skipped = [], [], 0
    for pair in read_pairs(pairs_file):
        if not {pair.left[0], pair.right[0]} <= people:
            skipped += 1
            continue
        ends = []
        for name, number in (pair.left, pair.right):
            path = pair_image_path(name, number)
            if path not in rows:
                raise PairsFormatError(
                    f"{pairs_file}: line {pair.line}: image {path} is not in the gallery"
                )
            ends.append(np.asarray(index.features[rows[path]]))
        distances.append(float(np.linalg.norm(ends[0] - ends[1])))
        same.append(pair.same)
    if not distances:
        raise PairsFormatError(f"{pairs_file}: no pair has all its people in the gallery")
    return np.asarray(distances), np.asarray(same), skipped


RECALL_AT = (1, 10)


def milvus_recall(
    index: GalleryIndex, ranked: np.ndarray, rows: np.ndarray, config: EvalConfig
) -> dict[str, object]:
    """Load the index into Milvus, ask it the same queries, and compare with exact search.

    recall@k: the share of the exact k nearest other images that Milvus also
    returns among its k nearest (the query itself left out of both).
    """
    from lookalike.server.backends.milvus import MilvusBackend, load_index

    load = load_index(
        index, config.milvus, config.milvus_index_type, replace_collection=True, progress=False
    )
    backend = MilvusBackend.open(config.milvus)
    row_of = {item.id: row for row, item in enumerate(index.manifest.items)}
    depth = max(RECALL_AT)
    found = np.full((len(rows), depth), -1, dtype=np.int64)
    started = time.perf_counter()
    for start in tqdm(
        range(0, len(rows), MILVUS_QUERY_CHUNK),
        desc="milvus",
        unit="chunk",
        disable=bar_disable(config.progress),
    ):
        chunk = rows[start : start + MILVUS_QUERY_CHUNK]
        for n, hits in enumerate(backend.search(index.features[chunk], depth + 1)):
            others = [row_of[hit.item.id] for hit in hits if row_of[hit.item.id] != chunk[n]]
            found[start + n, : len(others[:depth])] = others[:depth]
    seconds = time.perf_counter() - started
    recall = {
        f"recall_at_{k}": float(
            np.mean([len(set(f[:k]) & set(e[:k])) / k for f, e in zip(found, ranked, strict=True)])
        )
        for k in RECALL_AT
    }
    return {
        "uri": config.milvus.uri,
        "collection": config.milvus.collection,
        "index_type": backend.index_type,
        "search_params": backend.search_params,
        **recall,
        "seconds_load": load.seconds,
        "seconds_search": seconds,
    }


@dataclass(frozen=True)
class EvalReport:
    retrieval: RetrievalMetrics
    verification: VerificationMetrics | None
    summary: dict[str, object]

    def to_dict(self) -> dict[str, object]:
        flat: dict[str, object] = {
            "hit_at_1": self.retrieval.hit_at_1,
            "hit_at_5": self.retrieval.hit_at_5,
            "hit_at_20": self.retrieval.hit_at_20,
            "map": self.retrieval.map,
            "mean_same_in_top20": self.retrieval.mean_same_in_top20,
            "verification_accuracy": self.verification.accuracy if self.verification else None,
            "roc_auc": self.verification.roc_auc if self.verification else None,
        }
        flat.update(self.summary)
        flat["hit_curve"] = self.retrieval.hit_curve
        if self.verification:
            verification = asdict(self.verification)
            del verification["fpr"], verification["tpr"]
            flat["verification"] = verification
        return flat


def evaluate(config: EvalConfig) -> EvalReport:
    started = time.perf_counter()
    if config.teacher:
        embedder = open_teacher(config.teacher)
    else:
        embedder = Embedder(config.model, config.device)  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory(prefix="lookalike-eval-") as scratch:
        index = open_or_build_index(config, embedder, Path(scratch))
        index.check_model(embedder.info)
        indexed = time.perf_counter()
        knn = exact_searcher(index, config.knn_algorithm)
        if index.manifest.layout.approximate:
            log.info(
                "the index is %s: eval ranks every row by exact search over its %s rows "
                "(benchmarks/ann.py measures the approximate structure's recall)",
                index.manifest.layout.index_type,
                index.manifest.layout.storage,
            )
        photos = Photos.of(index)
        by_face = len(photos.labels) != len(index)
        if by_face and config.milvus:
            raise ValueError(
                "--milvus-uri measures recall row by row; this index has a row per face: "
                "measure Milvus on a one-face index"
            )
        labels = photos.labels
        counts = Counter(labels.tolist())
        rows = np.flatnonzero([counts[label] >= 2 for label in labels])
        if len(rows) == 0:
            raise ValueError(f"no person in {config.gallery} has two or more images to query")
        if by_face:
            ranked = rank_photos(index, knn, photos, rows, config.progress)
        else:
            ranked = rank_gallery(index, knn, rows, config.progress)
        searched = time.perf_counter()
        same = same_label_matrix(labels[rows], labels[ranked])
        n_relevant = np.array([counts[label] - 1 for label in labels[rows]])
        retrieval = retrieval_metrics(same, n_relevant)
        verification, pairs_skipped = None, 0
        if config.pairs:
            distances, is_same, pairs_skipped = pair_distances(index, config.pairs)
            verification = verification_metrics(distances, is_same)
        manifest = index.manifest
        milvus = milvus_recall(index, ranked, rows, config) if config.milvus else None
    summary = {
        "model_name": embedder.info.name,
        "model_fingerprint": embedder.info.fingerprint,
        "model_weights": embedder.info.weights,
        "input_size": embedder.info.input_size,
        "execution_provider": embedder.provider,
        "crop": manifest.crop.to_dict(),
        "split": manifest.split,
        "gallery": str(config.gallery),
        "gallery_size": len(labels),
        "rows": len(index),
        "faces": manifest.faces.to_dict(),
        "faces_per_image": photos.faces_per_photo,
        "people": len(counts),
        "queries": int(len(rows)),
        "pairs_file": str(config.pairs) if config.pairs else None,
        "pairs_skipped": pairs_skipped,
        "knn_backend": knn.name,
        "seconds_total": time.perf_counter() - started,
        "seconds_index": indexed - started,
        "seconds_search": searched - indexed,
        "milvus": milvus,
    }
    return EvalReport(retrieval, verification, summary)


def write_report(report: EvalReport, out: Path) -> list[Path]:
    """report.json and the plots; returns the files written."""
    from lookalike.server.evaluation.plots import plot_hit_curve, plot_roc

    out.mkdir(parents=True, exist_ok=True)
    summary = report.summary
    title = (
        f"{summary['gallery_size']} images, {summary['model_weights']} weights, "
        f"{summary['input_size']}px, crop {summary['crop']['mode']}"
    )
    written = [out / "report.json", out / "hit_at_k.png"]
    with atomic_path(written[0]) as staging:
        staging.write_text(json.dumps(report.to_dict(), indent=2))
    plot_hit_curve(report.retrieval.hit_curve, written[1], f"hit@k: {title}")
    if report.verification:
        written.append(out / "roc.png")
        v = report.verification
        plot_roc(v.fpr, v.tpr, v.roc_auc, written[-1], f"ROC of {v.pairs} pairs: {title}")
    return written

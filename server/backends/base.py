"""The seam between the server and wherever its gallery's vectors live.

The engine and the service see a SearchBackend and nothing else. There are
two: MemmapBackend (``memmap.py``), the default, the mapped matrix searched
with scikit-learn or faiss; and MilvusBackend (``milvus.py``, the ``milvus``
extra), for galleries that outgrow one machine. The kinds of backend and of
k-NN are declared here, where the command line reads them without importing
scikit-learn or pymilvus.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, get_args

import numpy as np

from lookalike.server.index.store import GalleryInfo, Item
from lookalike.server.vision.embedder import ModelInfo

BackendName = Literal["memmap", "milvus"]
Algorithm = Literal["brute", "ball_tree", "kd_tree", "faiss"]
MilvusIndexType = Literal["FLAT", "IVF_FLAT", "HNSW"]
BACKEND_NAMES: tuple[str, ...] = get_args(BackendName)
ALGORITHMS: tuple[str, ...] = get_args(Algorithm)
MILVUS_INDEX_TYPES: tuple[str, ...] = get_args(MilvusIndexType)
# Defaults every command and the server share, written once.
DEFAULT_ALGORITHM: Algorithm = "brute"
DEFAULT_MILVUS_TIMEOUT_S = 10.0


class BackendUnavailable(RuntimeError):
    """The vector store did not answer in time; the same call may succeed later."""


class BackendFailed(RuntimeError):
    """The vector store answered with a failure retrying cannot fix (collection dropped,
    authentication refused, out of memory): an operator must act."""


class ReadOnlyGallery(RuntimeError):
    """A change asked of a server that follows a gallery another server writes."""


@dataclass(frozen=True)
class Hit:
    item: Item
    distance: float  # Euclidean, as for every backend


class SearchBackend(Protocol):
    info: GalleryInfo

    @property
    def name(self) -> str:
        """What GetInfo reports as the k-NN backend, e.g. ``sklearn-brute``."""
        ...

    def __len__(self) -> int: ...

    def search(self, queries: np.ndarray, k: int, breadth: int = 0) -> list[list[Hit]]:
        """The k nearest items of each query row, nearest first (fewer if the gallery is
        smaller). ``breadth``: how wide an approximate index searches (nprobe, efSearch;
        0: the server's default). Raises BackendUnavailable when the store cannot be reached."""
        ...

    @property
    def max_breadth(self) -> int | None:
        """The largest ``breadth`` a request may ask for; None where it means nothing."""
        ...

    @property
    def default_breadth(self) -> int:
        """The ``breadth`` of a request that gives none; 0 where it means nothing."""
        ...

    def check_model(self, model: ModelInfo) -> None:
        """Raise InvalidIndexError unless ``model`` embedded this gallery."""
        ...

    def reopen(self, location: str | None = None) -> SearchBackend:
        """The gallery now at ``location`` (an index folder, a collection), default the same."""
        ...

    def close(self) -> None:
        """Let go of what this backend holds for the gallery (a writer's lock)."""
        ...

    @property
    def writable(self) -> bool:
        """Whether this server may change the gallery (else it follows another's changes)."""
        ...

    def refresh(self) -> bool:
        """Read changes another server published; whether the gallery searched changed."""
        ...

    # Enrolment and erasure on the live gallery. Every change is durable when the
    # method returns, and seen by the next search.

    @property
    def pending_rows(self) -> int:
        """Rows added or removed since the gallery was last compacted."""
        ...

    def items(self, label: str | None = None) -> list[tuple[Item, bool]]:
        """Every image (of ``label``) in gallery order, with whether it awaits compaction."""
        ...

    def list_page(
        self, label: str | None, after: tuple | None, size: int
    ) -> tuple[list[tuple[Item, bool]], bool]:
        """Up to ``size`` images (of ``label``) that come after ``after`` (a listing_key;
        None: from the first) in listing order, each with whether it awaits compaction;
        and whether more follow."""
        ...

    def find(self, image_id: str) -> list[Item]:
        """The images of this content id, or else of this external id."""
        ...

    def add(self, item: Item, vector: np.ndarray) -> Item | None:
        """Add ``item``; when its content is there already, change nothing and return that."""
        ...

    def remove(self, ids: list[str]) -> list[Item]:
        """Remove the images of these content ids; returns those that were there."""
        ...

    def compact(self) -> tuple[str, str, int]:
        """Fold the changes into the stored gallery: (old version, new version, rows folded)."""
        ...

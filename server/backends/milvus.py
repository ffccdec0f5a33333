"""The gallery in a Milvus collection: loading an index there, and searching it.

A collection holds one row per index row: the content id as primary key (in an
every-face gallery a face's ``<content id>#<n>``), the vector, the label, the path
and the paths of identical files (with a face's box: ``also_json``). Its properties
hold the GalleryInfo of the index it was loaded from (model fingerprint, crop,
version), so a server refuses a collection embedded by another model, as it
refuses such an index folder. The URI is a Milvus Lite folder whose name ends
in ``.db`` (embedded in the process: laptops and tests) or a Milvus server or
cluster (``http://host:19530``). Needs the ``milvus`` extra.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
import numpy as np
from pymilvus import DataType, MilvusClient, MilvusException
from tqdm import tqdm

from lookalike.common.output import bar_disable
from lookalike.common.tokens import read_token
from lookalike.server.backends.base import (
    DEFAULT_MILVUS_TIMEOUT_S,
    BackendFailed,
    BackendUnavailable,
    Hit,
    MilvusIndexType,
)
from lookalike.server.index.item import FACE_MARK, Item, external_id, listing_key
from lookalike.server.index.store import GalleryIndex, GalleryInfo, InvalidIndexError
from lookalike.server.vision.embedder import ModelInfo

log = logging.getLogger(__name__)

INFO_PROPERTY = "lookalike.gallery"
SEARCH_PROPERTY = "lookalike.search_params"
UNFINISHED = ""  # the version a collection has until its first load completes
OUTPUT_FIELDS = ["label", "path", "also"]
# Searches and reads wait for every write this process made to the collection
# (pymilvus tracks the timestamp of its last write), so a change a server
# acknowledged is in its next Search, without Strong's wait for every write
# from anywhere on each call. Servers sharing a collection see each other's
# changes within the collection's own (Bounded) staleness.
CONSISTENCY = "Session"
MAX_PATH = 4096
MAX_ALSO = 65_535


@dataclass(frozen=True)
class MilvusTarget:
    """Which Milvus, which collection, and how long to wait for either."""

    uri: str
    collection: str
    token: str = ""
    timeout_s: float = DEFAULT_MILVUS_TIMEOUT_S

    @classmethod
    def with_token_file(
        cls,
        uri: str,
        collection: str,
        token_file: Path | None,
        timeout_s: float = DEFAULT_MILVUS_TIMEOUT_S,
    ) -> MilvusTarget:
        """The target with its token read from ``token_file`` (none when unset)."""
        token = read_token(token_file, "Milvus token") if token_file else ""
        return cls(uri, collection, token, timeout_s)


# pymilvus pings every 10 s even on an idle connection. Milvus Lite's gRPC server
# keeps gRPC's defaults, which allow no pings while no call is open, so after a
# minute or so idle it closes the connection (GOAWAY "too_many_pings") and the
# next call can fail. That server runs in this process: no network to watch.
LITE_GRPC_OPTIONS = {"grpc.keepalive_time_ms": 2**31 - 1, "grpc.keepalive_permit_without_calls": 0}


# Failures retrying cannot fix: the collection or index is gone, the credentials or
# the request are refused, memory, disk or quota is exhausted. gRPC codes first,
# then Milvus' own (pymilvus ErrorCode and the server's merr codes).
FINAL_GRPC_CODES = frozenset(
    {
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.DATA_LOSS,
    }
)
FINAL_MILVUS_CODES = frozenset(
    {
        3,  # memory limit exceeded
        7,  # disk limit exceeded
        9,  # force deny (quota)
        100,  # collection not found
        101,  # collection not loaded
        700,  # index not found
        1100,  # invalid parameter
        1400,  # not authenticated
        1401,  # not permitted
        1800,  # authentication needed
    }
)


def is_final(error: Exception) -> bool:
    """True when retrying the same call cannot succeed (the caller should not retry)."""
    if isinstance(error, grpc.Call):
        return error.code() in FINAL_GRPC_CODES
    if isinstance(error, MilvusException):
        if error.retriable:
            return False
        return (
            error.is_input_error
            or error.code in FINAL_GRPC_CODES
            or error.code in FINAL_MILVUS_CODES
        )
    return False


@contextmanager
def unavailable_on_failure(target: MilvusTarget, failed: str) -> Iterator[None]:
    """Any failure of Milvus inside as BackendUnavailable (retry later) or, when
    retrying cannot help, BackendFailed; the message starts ``failed``.

    pymilvus raises MilvusException for most failures but lets a missed deadline
    through as the bare grpc.RpcError, so both are caught here, once.
    """
    try:
        yield
    except grpc.RpcError as error:
        code = error.code().name if isinstance(error, grpc.Call) else type(error).__name__
        kind = BackendFailed if is_final(error) else BackendUnavailable
        raise kind(f"{failed} within {target.timeout_s:g} s ({code})") from None
    except (MilvusException, OSError) as error:
        kind = BackendFailed if is_final(error) else BackendUnavailable
        raise kind(f"{failed}: {error}") from None


def connect(target: MilvusTarget) -> MilvusClient:
    """A client, or BackendUnavailable within the timeout (never a hang).

    pymilvus shares one connection per address among clients, with the channel
    options of the first, so every client in this process is made here.
    """
    options = {"grpc_options": LITE_GRPC_OPTIONS} if target.uri.endswith(".db") else {}
    with unavailable_on_failure(target, f"cannot reach Milvus at {target.uri}"):
        return MilvusClient(uri=target.uri, token=target.token, timeout=target.timeout_s, **options)


def index_parameters(index_type: MilvusIndexType, rows: int) -> tuple[dict, dict]:
    """Build and search parameters: exact for FLAT; for the approximate types the
    usual starting points (nlist about 4 sqrt(N); HNSW M 16), which eval's recall judges.
    """
    if index_type == "IVF_FLAT":
        nlist = max(1, min(65_536, round(4 * math.sqrt(rows))))
        return {"nlist": nlist}, {"nprobe": max(1, nlist // 8)}
    if index_type == "HNSW":
        return {"M": 16, "efConstruction": 200}, {"ef": 128}
    return {}, {}


def _schema(dim: int):  # noqa: ANN202 (pymilvus CollectionSchema)
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    schema.add_field("label", DataType.VARCHAR, max_length=MAX_PATH)
    schema.add_field("path", DataType.VARCHAR, max_length=MAX_PATH)
    schema.add_field("also", DataType.VARCHAR, max_length=MAX_ALSO)  # JSON: also_json
    return schema


def read_properties(client: MilvusClient, target: MilvusTarget) -> tuple[GalleryInfo, dict, str]:
    """The collection's GalleryInfo, search parameters and index type, or InvalidIndexError."""
    where = f"collection {target.collection!r} in Milvus at {target.uri}"
    if not client.has_collection(target.collection, timeout=target.timeout_s):
        raise InvalidIndexError(
            f"there is no {where}; load an index into it with `lookalike to-milvus INDEX_DIR "
            f"--milvus-uri {target.uri} --collection {target.collection}`"
        )
    properties = client.describe_collection(target.collection, timeout=target.timeout_s).get(
        "properties", {}
    )
    if INFO_PROPERTY not in properties:
        raise InvalidIndexError(f"the {where} was not made by lookalike (no {INFO_PROPERTY})")
    search = json.loads(properties.get(SEARCH_PROPERTY, "{}"))
    index = client.describe_index(target.collection, "vector", timeout=target.timeout_s)
    return GalleryInfo.from_json(properties[INFO_PROPERTY]), search, index["index_type"]


@dataclass(frozen=True)
class LoadReport:
    collection: str
    rows: int
    deleted: int  # rows of files no longer in the index
    index_type: str
    seconds: float


def load_index(
    index: GalleryIndex,
    target: MilvusTarget,
    index_type: MilvusIndexType = "FLAT",
    batch_size: int = 256,
    replace_collection: bool = False,
    progress: bool = True,
) -> LoadReport:
    """Make the collection hold exactly the index's rows, without re-embedding.

    Rows are upserted by content id, so loading again duplicates nothing and a
    killed load is finished by running it again; rows whose files left the index
    are deleted. A collection of another model is refused unless
    ``replace_collection`` drops it first. The version property is written last:
    until then a new collection is refused by servers as unfinished.
    """
    started = time.perf_counter()
    client = connect(target)
    with unavailable_on_failure(target, f"loading into Milvus at {target.uri} failed"):
        info, name = index.manifest.info, target.collection
        build, search = index_parameters(index_type, len(index))
        existed = client.has_collection(name)
        if existed and replace_collection:
            client.drop_collection(name)
            existed = False
        if existed:
            _check_compatible(client, target, info, index_type)
        else:
            parameters = client.prepare_index_params()
            parameters.add_index("vector", index_type=index_type, metric_type="L2", params=build)
            client.create_collection(
                name,
                schema=_schema(info.embedding_size),
                index_params=parameters,
                properties={INFO_PROPERTY: replace(info, version=UNFINISHED).to_json()},
            )
        _upsert(client, target, index, batch_size, progress)
        kept = {item.id for item in index.manifest.items}
        stale = [row_id for row_id in _ids(client, name) if row_id not in kept] if existed else []
        for start in range(0, len(stale), 1000):
            client.delete(name, ids=stale[start : start + 1000])
        client.flush(name)
        _wait_for_index(client, target)
        client.alter_collection_properties(
            name, properties={INFO_PROPERTY: info.to_json(), SEARCH_PROPERTY: json.dumps(search)}
        )
        client.load_collection(name)
        rows = count_rows(client, name)
    return LoadReport(name, rows, len(stale), index_type, time.perf_counter() - started)


def _upsert(
    client: MilvusClient, target: MilvusTarget, index: GalleryIndex, batch: int, progress: bool
) -> None:
    items, name = index.manifest.items, target.collection
    with tqdm(
        total=len(items), unit="row", desc=f"loading {name}", disable=bar_disable(progress)
    ) as bar:
        for start in range(0, len(items), batch):
            vectors = np.asarray(index.features[start : start + batch], np.float32)
            rows = [
                {
                    "id": item.id,
                    "vector": vector,
                    "label": item.label,
                    "path": item.path,
                    "also": also_json(item),
                }
                for item, vector in zip(items[start : start + batch], vectors, strict=True)
            ]
            client.upsert(name, rows, timeout=target.timeout_s)
            bar.update(len(vectors))


def _check_compatible(
    client: MilvusClient, target: MilvusTarget, info: GalleryInfo, index_type: str
) -> None:
    held, _, held_type = read_properties(client, target)
    if (held.model_fingerprint, held.crop, held.embedding_size, held.faces) != (
        info.model_fingerprint,
        info.crop,
        info.embedding_size,
        info.faces,
    ):
        raise InvalidIndexError(
            f"collection {target.collection!r} holds vectors of model {held.model_fingerprint} "
            f"(crop {held.crop.mode}, {held.faces.mode} faces), not {info.model_fingerprint} "
            f"(crop {info.crop.mode}, {info.faces.mode} faces); "
            "load into another collection, or pass --replace to drop it first"
        )
    if held_type != index_type:
        raise InvalidIndexError(
            f"collection {target.collection!r} has a {held_type} index, not {index_type}; "
            "pass --replace to rebuild it"
        )


def _wait_for_index(client: MilvusClient, target: MilvusTarget, poll_s: float = 0.5) -> None:
    """Milvus builds the vector index in the background; until it is done a search
    scans instead, so a load is finished only when every row is indexed."""
    while True:
        state = client.describe_index(target.collection, "vector", timeout=target.timeout_s)
        if state.get("pending_index_rows", 0) == 0 and state.get("state") != "InProgress":
            return
        time.sleep(poll_s)


def _ids(client: MilvusClient, name: str) -> Iterator[str]:
    # Each page is a filtered scan on Milvus Lite: few large pages, not many small ones.
    iterator = client.query_iterator(name, batch_size=16_384, filter="", output_fields=["id"])
    try:
        while rows := iterator.next():
            yield from (row["id"] for row in rows)
    finally:
        iterator.close()


def count_rows(client: MilvusClient, name: str) -> int:
    (row,) = client.query(name, filter="", output_fields=["count(*)"])
    return int(row["count(*)"])


class MilvusBackend:
    """A lookalike collection in Milvus, searched with L2 like the memmap backend."""

    def __init__(
        self,
        client: MilvusClient,
        target: MilvusTarget,
        info: GalleryInfo,
        size: int,
        search_params: dict,
        index_type: str,
    ) -> None:
        self.client = client
        self.target = target
        self.info = info
        self.size = size
        self.search_params = search_params
        self.index_type = index_type

    @classmethod
    def open(cls, target: MilvusTarget) -> MilvusBackend:
        client = connect(target)
        with unavailable_on_failure(target, f"Milvus at {target.uri} failed"):
            info, search, index_type = read_properties(client, target)
            if info.version == UNFINISHED:
                raise InvalidIndexError(
                    f"the load into collection {target.collection!r} did not finish; "
                    "run `lookalike to-milvus` again"
                )
            client.load_collection(target.collection, timeout=target.timeout_s)
            size = count_rows(client, target.collection)
        log.info(
            "Milvus collection %s at %s: %d rows, %s index",
            target.collection,
            target.uri,
            size,
            index_type,
        )
        return cls(client, target, info, size, search, index_type)

    @property
    def name(self) -> str:
        return f"milvus-{self.index_type.lower()}"

    def __len__(self) -> int:
        return self.size

    @property
    def max_breadth(self) -> int | None:
        """Milvus' own index parameters apply; a request's breadth is not passed on."""
        return None

    @property
    def default_breadth(self) -> int:
        return 0

    def search(self, queries: np.ndarray, k: int, breadth: int = 0) -> list[list[Hit]]:
        k = min(k, self.size)
        params = dict(self.search_params)
        if "ef" in params:  # HNSW explores at least k candidates
            params["ef"] = max(params["ef"], k)
        with unavailable_on_failure(self.target, f"Milvus at {self.target.uri} did not answer"):
            results = self.client.search(
                self.target.collection,
                data=list(np.asarray(queries, dtype=np.float32)),
                limit=k,
                output_fields=OUTPUT_FIELDS,
                search_params={"metric_type": "L2", "params": params},
                timeout=self.target.timeout_s,
                consistency_level=CONSISTENCY,
            )
        return [[_hit(found) for found in hits] for hits in results]

    def check_model(self, model: ModelInfo) -> None:
        self.info.check_model(
            model, f"collection {self.target.collection!r} in Milvus at {self.target.uri}"
        )

    def reopen(self, location: str | None = None) -> MilvusBackend:
        return MilvusBackend.open(
            replace(self.target, collection=location or self.target.collection)
        )

    # Changes: upserted and deleted natively; Milvus makes them durable (its WAL)
    # before it answers, and CONSISTENCY puts them in this server's next search.

    writable = True  # every server of a collection may change it; Milvus orders the writes

    def close(self) -> None:
        """Nothing to let go: the connection is shared by the backends of one target."""

    def refresh(self) -> bool:
        return False  # every search reads the collection as it is now

    @property
    def pending_rows(self) -> int:
        return 0  # Milvus compacts its own segments; compact() asks it to now

    def _query(self, expression: str) -> list[Item]:
        name = self.target.collection
        with unavailable_on_failure(self.target, f"Milvus at {self.target.uri} did not answer"):
            iterator = self.client.query_iterator(
                name,
                batch_size=16_384,
                filter=expression,
                output_fields=OUTPUT_FIELDS,
                consistency_level=CONSISTENCY,
                timeout=self.target.timeout_s,
            )
            found = []
            try:
                while rows := iterator.next():
                    found += [_item(row) for row in rows]
            finally:
                iterator.close()
        return found

    def items(self, label: str | None = None) -> list[tuple[Item, bool]]:
        found = self._query("" if label is None else f"label == {json.dumps(label)}")
        return [(item, False) for item in sorted(found, key=lambda i: tuple(i.path.split("/")))]

    def list_page(
        self, label: str | None, after: tuple | None, size: int
    ) -> tuple[list[tuple[Item, bool]], bool]:
        found = sorted(self.items(label), key=lambda pair: listing_key(pair[0]))
        if after is not None:
            found = [pair for pair in found if listing_key(pair[0]) > after]
        return found[:size], len(found) > size

    def _get(self, ids: list[str]) -> list[Item]:
        """The rows of these primary keys (content ids) that are there."""
        with unavailable_on_failure(self.target, f"Milvus at {self.target.uri} did not answer"):
            rows = self.client.get(
                self.target.collection,
                ids=ids,
                output_fields=OUTPUT_FIELDS,
                timeout=self.target.timeout_s,
                consistency_level=CONSISTENCY,
            )
        return [_item(row) for row in rows]

    def find(self, image_id: str) -> list[Item]:
        if there := self._get([image_id]):
            return there
        by_face = self.info.faces.mode == "all" and FACE_MARK not in image_id
        if by_face and (faces := self._faces_of(image_id)):  # a scan: only where faces are
            return faces
        # an external id: the file name; "like" narrows it down, the stem decides
        suffixed = json.dumps(f"%/{image_id}.%")
        return [i for i in self._query(f"path like {suffixed}") if external_id(i.path) == image_id]

    def _faces_of(self, file_id: str) -> list[Item]:
        """Every face row of the photo of content id ``file_id`` (an every-face gallery)."""
        prefix = json.dumps(f"{file_id}{FACE_MARK}%")
        return sorted(self._query(f"id like {prefix}"), key=lambda item: item.face)

    def add(self, item: Item, vector: np.ndarray) -> Item | None:
        if there := self._get([item.id]):
            return there[0]
        row = {
            "id": item.id,
            "vector": np.asarray(vector, np.float32),
            "label": item.label,
            "path": item.path,
            "also": also_json(item),
        }
        with unavailable_on_failure(self.target, f"adding to Milvus at {self.target.uri} failed"):
            self.client.upsert(self.target.collection, [row], timeout=self.target.timeout_s)
        self.size += 1
        return None

    def remove(self, ids: list[str]) -> list[Item]:
        there = self._get(ids)
        if there:
            with unavailable_on_failure(self.target, f"Milvus at {self.target.uri} failed"):
                self.client.delete(
                    self.target.collection,
                    ids=[item.id for item in there],
                    timeout=self.target.timeout_s,
                )
        self.size -= len(there)
        return there

    def compact(self) -> tuple[str, str, int]:
        """Ask Milvus to compact now: deleted rows leave its segment files."""
        with unavailable_on_failure(self.target, f"Milvus at {self.target.uri} failed"):
            self.client.flush(self.target.collection, timeout=self.target.timeout_s)
            job = self.client.compact(self.target.collection, timeout=self.target.timeout_s)
            deadline = time.monotonic() + 30 * self.target.timeout_s
            while self.client.get_compaction_state(job) == "Executing":
                if time.monotonic() > deadline:
                    raise BackendUnavailable("Milvus did not finish compacting; it goes on there")
                time.sleep(0.2)
            self.size = count_rows(self.client, self.target.collection)
        return self.info.version, self.info.version, 0


def also_json(item: Item) -> str:
    """The "also" column: the identical files' paths as a JSON list, or for a face of an
    every-face gallery {"also": [...], "box": [left, top, right, bottom]}. A column of the
    schema every collection has, so collections loaded before faces had boxes still open."""
    if item.box is None:
        return json.dumps(item.also)
    return json.dumps({"also": item.also, "box": item.box})


def _item(row: dict) -> Item:
    also = json.loads(row["also"])
    if isinstance(also, dict):
        box = tuple(int(v) for v in also["box"])
        return Item(row["id"], row["label"], row["path"], tuple(also["also"]), box)  # type: ignore[arg-type]
    return Item(row["id"], row["label"], row["path"], tuple(also))


def _hit(found: dict) -> Hit:
    item = _item({"id": found["id"], **found["entity"]})
    # Milvus' L2 is the squared distance; the other backends answer the distance itself.
    return Hit(item, math.sqrt(max(found["distance"], 0.0)))

"""The clients' plumbing: requests and results on the wire, retries, readiness, paging.

Private: the sync and async clients (and the ``lookalike`` command) share it; users
import ``lookalike.client`` instead, whose names stay put when this moves.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from types import ModuleType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lookalike.client.values import (
    AddResult,
    Box,
    CropBox,
    FaceResult,
    Faces,
    GalleryEntry,
    GalleryFace,
    ImageInput,
    LookalikeError,
    Match,
    NewImage,
    RemovedImage,
    RemoveResult,
    SearchResult,
    ServerInfo,
    Timings,
)
from lookalike.v1 import search_pb2, search_pb2_grpc

DEFAULT_TIMEOUT = 30.0
DEFAULT_READY_TIMEOUT = 60.0
# The name the server's health service reports the search service under.
SERVICE_NAME = search_pb2.DESCRIPTOR.services_by_name["SearchService"].full_name


def limit_note(result: SearchResult) -> str:
    """What a distance limit left out: "no match within D" when it left nothing."""
    if result.max_distance is None:
        return ""
    if not result.matches:
        return f"no match within {result.max_distance:g}"
    return f"only matches within {result.max_distance:g} are shown"


def retry_policy(retries: int) -> str:
    """gRPC's own retries: only UNAVAILABLE (nothing was done), with exponential backoff."""
    return json.dumps(
        {
            "methodConfig": [
                {
                    "name": [{"service": SERVICE_NAME}],
                    "retryPolicy": {
                        "maxAttempts": retries + 1,
                        "initialBackoff": "0.2s",
                        "maxBackoff": "2s",
                        "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"],
                    },
                }
            ]
        }
    )


def image_bytes(image: ImageInput) -> bytes:
    """The encoded bytes of a path, raw bytes, or a PIL image (sent as PNG, lossless)."""
    if isinstance(image, bytes):
        return image
    if isinstance(image, (str, PathLike)):
        return Path(image).read_bytes()
    if hasattr(image, "save"):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()
    raise TypeError(f"expected a path, bytes or a PIL image, not {type(image).__name__}")


def auth_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),) if token else ()


def search_request(
    image: ImageInput,
    k: int,
    thumbnails: bool,
    max_distance: float | None,
    search_breadth: int = 0,
    faces: Faces = "largest",
    max_faces: int = 0,
    faces_only: bool = False,
) -> search_pb2.SearchRequest:
    """The request; ``faces`` left at "largest" sends no face selection, as clients did
    before faces could be chosen."""
    request = search_pb2.SearchRequest(
        image=image_bytes(image),
        k=k,
        thumbnails=thumbnails,
        max_distance=max_distance or 0.0,
        search_breadth=search_breadth,
        faces_only=faces_only,
    )
    if faces != "largest" or max_faces:
        request.faces.CopyFrom(face_selection(faces, max_faces))
    return request


def face_selection(faces: Faces, max_faces: int) -> search_pb2.FaceSelection:
    """SearchRequest.faces for the clients' ``faces`` argument."""
    if faces == "largest":
        return search_pb2.FaceSelection(mode=search_pb2.FACE_MODE_LARGEST, limit=max_faces)
    if faces == "all":
        return search_pb2.FaceSelection(mode=search_pb2.FACE_MODE_ALL, limit=max_faces)
    if isinstance(faces, Box):
        box = search_pb2.Box(left=faces.left, top=faces.top, right=faces.right, bottom=faces.bottom)
        return search_pb2.FaceSelection(mode=search_pb2.FACE_MODE_BOX, box=box)
    if isinstance(faces, tuple) and len(faces) == 2:
        point = search_pb2.Point(x=int(faces[0]), y=int(faces[1]))
        return search_pb2.FaceSelection(mode=search_pb2.FACE_MODE_POINT, point=point)
    raise ValueError(f'faces is "largest", "all", a Box or a point (x, y), not {faces!r}')


def _box(box: search_pb2.Box) -> Box:
    return Box(box.left, box.top, box.right, box.bottom)


def _crop(crop: search_pb2.CropBox) -> CropBox:
    return CropBox(
        crop.left, crop.top, crop.right, crop.bottom, crop.image_width, crop.image_height
    )


def _matches(found: Sequence[search_pb2.Match]) -> list[Match]:
    return [
        Match(
            m.rank,
            m.id,
            m.label,
            m.path,
            m.distance,
            m.thumbnail_jpeg or None,
            m.note,
            _box(m.face_box) if m.HasField("face_box") else None,
        )
        for m in found
    ]


def search_result(response: search_pb2.SearchResponse) -> SearchResult:
    faces = [
        FaceResult(
            face.number,
            _box(face.box),
            face.score,
            _matches(face.matches),
            _crop(face.query_crop) if face.HasField("query_crop") else None,
            face.crop_note,
        )
        for face in response.faces
    ]
    return SearchResult(
        matches=_matches(response.matches),
        model_fingerprint=response.model_fingerprint,
        index_version=response.index_version,
        timings=Timings(
            response.timings.decode_ms,
            response.timings.embed_ms,
            response.timings.search_ms,
            response.timings.total_ms,
        ),
        query_crop=_crop(response.query_crop) if response.HasField("query_crop") else None,
        crop_note=response.crop_note,
        max_distance=response.max_distance or None,
        faces=faces,
    )


def server_info(r: search_pb2.GetInfoResponse) -> ServerInfo:
    return ServerInfo(
        model_name=r.model_name,
        model_fingerprint=r.model_fingerprint,
        embedding_size=r.embedding_size,
        input_size=r.input_size,
        execution_provider=r.execution_provider,
        providers=list(r.providers),
        gallery_size=r.gallery_size,
        index_version=r.index_version,
        max_k=r.max_k,
        knn_backend=r.knn_backend,
        weights=r.weights,
        thumbnail_size=r.thumbnail_size,
        startup_seconds=r.startup_seconds,
        warmup_seconds=r.warmup_seconds,
        max_distance=r.max_distance or None,
        intra_op_threads=r.intra_op_threads,
        server_version=r.server_version,
        gallery_faces=r.gallery_faces or "largest",
        model_instances=r.model_instances or 1,
        default_search_breadth=r.default_search_breadth,
        max_search_breadth=r.max_search_breadth,
    )


def _result_name(value: int) -> str:
    return search_pb2.ChangeResult.Name(value).lower()


# Images per AddImages call: within the server's default max_images_per_add (64), and a
# call short enough that its deadline, or a wait for the gallery's turn, stays small.
ADD_CALL_IMAGES = 32


def add_batches(images: Sequence[NewImage]) -> list[Sequence[NewImage]]:
    """The images in the groups that go in one AddImages call each."""
    return [images[i : i + ADD_CALL_IMAGES] for i in range(0, len(images), ADD_CALL_IMAGES)]


def add_request(images: Sequence[NewImage]) -> search_pb2.AddImagesRequest:
    return search_pb2.AddImagesRequest(
        images=[
            search_pb2.NewImage(
                image=image_bytes(new.image), label=new.label, external_id=new.external_id
            )
            for new in images
        ]
    )


def add_results(response: search_pb2.AddImagesResponse, offset: int = 0) -> list[AddResult]:
    """The results of one call whose first image is ``offset`` in the caller's list."""
    return [
        AddResult(
            offset + r.position,
            _result_name(r.result),
            r.id,
            r.label,
            r.path,
            r.error,
            [GalleryFace(face.id, _box(face.box)) for face in r.faces],
        )
        for r in response.results
    ]


def remove_request(
    ids: Sequence[str], labels: Sequence[str], images: Sequence[ImageInput], delete_files: bool
) -> search_pb2.RemoveImagesRequest:
    return search_pb2.RemoveImagesRequest(
        ids=list(ids),
        labels=list(labels),
        images=[image_bytes(image) for image in images],
        delete_files=delete_files,
    )


def remove_results(response: search_pb2.RemoveImagesResponse) -> list[RemoveResult]:
    return [
        RemoveResult(
            r.selector,
            r.position,
            _result_name(r.result),
            [RemovedImage(g.id, g.label, g.path, g.file_deleted) for g in r.removed],
            r.error,
        )
        for r in response.results
    ]


class GalleryPages:
    """One list_images: the next ListImages request, and the entries of the pages so far.

    Sync and async clients run the same loop around it; only the call differs.
    """

    def __init__(self, label: str) -> None:
        self.label = label
        self.found: list[GalleryEntry] = []
        self.token: str | None = None  # None before the first page, "" after the last

    def next_request(self) -> search_pb2.ListImagesRequest | None:
        if self.token == "":
            return None
        return search_pb2.ListImagesRequest(label=self.label, page_token=self.token or "")

    def add(self, response: search_pb2.ListImagesResponse) -> None:
        self.found += [
            GalleryEntry(
                e.id,
                e.label,
                e.path,
                list(e.also),
                e.pending,
                _box(e.face_box) if e.HasField("face_box") else None,
            )
            for e in response.images
        ]
        self.token = response.next_page_token


def call_error(error: grpc.RpcError) -> LookalikeError:
    return LookalikeError(error.code(), error.details() or "")


class Readiness:
    """One wait_until_ready: the health checks still allowed, and what each answer means.

    Sync and async clients run the same loop around it; only the waiting differs.
    """

    POLL_SECONDS = 0.2
    CHECK_SECONDS = 5.0  # one health check's own deadline, within the overall timeout

    def __init__(self, target: str, timeout: float) -> None:
        self.target = target
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.last = "no answer"
        self.request = health_pb2.HealthCheckRequest(service=SERVICE_NAME)

    def check_timeout(self) -> float:
        """The next check's timeout; LookalikeError(DEADLINE_EXCEEDED) once time is up."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise LookalikeError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"{self.target} not ready after {self.timeout:g} s (last: {self.last})",
            )
        return min(remaining, self.CHECK_SECONDS)

    def answered(self, response: health_pb2.HealthCheckResponse) -> bool:
        """True when the server is SERVING; otherwise keep polling."""
        self.last = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
        return response.status == health_pb2.HealthCheckResponse.SERVING

    def failed(self, error: grpc.RpcError) -> None:
        """A server not up yet is polled again; any other failure ends the wait."""
        if error.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            raise call_error(error) from None
        self.last = f"{error.code().name}: {error.details() or ''}".rstrip(": ")

    def pause(self) -> float:
        return max(0.0, min(self.POLL_SECONDS, self.deadline - time.monotonic()))


class ClientBase:
    """The channel, stubs and settings both clients hold; ``channels`` is grpc or grpc.aio."""

    channels: ModuleType

    def __init__(
        self,
        target: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        token: str | None = None,
        tls: bool = False,
        ca: bytes | str | PathLike | None = None,
        retries: int = 3,
    ) -> None:
        """``timeout`` bounds each call, retries included; ``ca`` (PEM) implies TLS."""
        self.target = target
        self.timeout = timeout
        self._metadata = auth_metadata(token)
        options = [("grpc.service_config", retry_policy(retries))] if retries > 0 else []
        if tls or ca is not None:
            roots = ca if isinstance(ca, bytes) or ca is None else Path(ca).read_bytes()
            credentials = grpc.ssl_channel_credentials(root_certificates=roots)
            self._channel = self.channels.secure_channel(target, credentials, options=options)
        else:
            self._channel = self.channels.insecure_channel(target, options=options)
        self._stub = search_pb2_grpc.SearchServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

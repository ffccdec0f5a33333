from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FaceMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FACE_MODE_UNSPECIFIED: _ClassVar[FaceMode]
    FACE_MODE_LARGEST: _ClassVar[FaceMode]
    FACE_MODE_BOX: _ClassVar[FaceMode]
    FACE_MODE_POINT: _ClassVar[FaceMode]
    FACE_MODE_ALL: _ClassVar[FaceMode]

class ChangeResult(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHANGE_RESULT_UNSPECIFIED: _ClassVar[ChangeResult]
    ADDED: _ClassVar[ChangeResult]
    ALREADY_PRESENT: _ClassVar[ChangeResult]
    REMOVED: _ClassVar[ChangeResult]
    NOT_FOUND: _ClassVar[ChangeResult]
    FAILED: _ClassVar[ChangeResult]
FACE_MODE_UNSPECIFIED: FaceMode
FACE_MODE_LARGEST: FaceMode
FACE_MODE_BOX: FaceMode
FACE_MODE_POINT: FaceMode
FACE_MODE_ALL: FaceMode
CHANGE_RESULT_UNSPECIFIED: ChangeResult
ADDED: ChangeResult
ALREADY_PRESENT: ChangeResult
REMOVED: ChangeResult
NOT_FOUND: ChangeResult
FAILED: ChangeResult

class SearchRequest(_message.Message):
    __slots__ = ("image", "k", "thumbnails", "max_distance", "search_breadth", "faces", "faces_only")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    THUMBNAILS_FIELD_NUMBER: _ClassVar[int]
    MAX_DISTANCE_FIELD_NUMBER: _ClassVar[int]
    SEARCH_BREADTH_FIELD_NUMBER: _ClassVar[int]
    FACES_FIELD_NUMBER: _ClassVar[int]
    FACES_ONLY_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    k: int
    thumbnails: bool
    max_distance: float
    search_breadth: int
    faces: FaceSelection
    faces_only: bool
    def __init__(self, image: _Optional[bytes] = ..., k: _Optional[int] = ..., thumbnails: _Optional[bool] = ..., max_distance: _Optional[float] = ..., search_breadth: _Optional[int] = ..., faces: _Optional[_Union[FaceSelection, _Mapping]] = ..., faces_only: _Optional[bool] = ...) -> None: ...

class FaceSelection(_message.Message):
    __slots__ = ("mode", "box", "point", "limit")
    MODE_FIELD_NUMBER: _ClassVar[int]
    BOX_FIELD_NUMBER: _ClassVar[int]
    POINT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    mode: FaceMode
    box: Box
    point: Point
    limit: int
    def __init__(self, mode: _Optional[_Union[FaceMode, str]] = ..., box: _Optional[_Union[Box, _Mapping]] = ..., point: _Optional[_Union[Point, _Mapping]] = ..., limit: _Optional[int] = ...) -> None: ...

class Box(_message.Message):
    __slots__ = ("left", "top", "right", "bottom")
    LEFT_FIELD_NUMBER: _ClassVar[int]
    TOP_FIELD_NUMBER: _ClassVar[int]
    RIGHT_FIELD_NUMBER: _ClassVar[int]
    BOTTOM_FIELD_NUMBER: _ClassVar[int]
    left: int
    top: int
    right: int
    bottom: int
    def __init__(self, left: _Optional[int] = ..., top: _Optional[int] = ..., right: _Optional[int] = ..., bottom: _Optional[int] = ...) -> None: ...

class Point(_message.Message):
    __slots__ = ("x", "y")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    x: int
    y: int
    def __init__(self, x: _Optional[int] = ..., y: _Optional[int] = ...) -> None: ...

class Match(_message.Message):
    __slots__ = ("rank", "id", "label", "path", "distance", "thumbnail_jpeg", "note", "face_box")
    RANK_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    THUMBNAIL_JPEG_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    FACE_BOX_FIELD_NUMBER: _ClassVar[int]
    rank: int
    id: str
    label: str
    path: str
    distance: float
    thumbnail_jpeg: bytes
    note: str
    face_box: Box
    def __init__(self, rank: _Optional[int] = ..., id: _Optional[str] = ..., label: _Optional[str] = ..., path: _Optional[str] = ..., distance: _Optional[float] = ..., thumbnail_jpeg: _Optional[bytes] = ..., note: _Optional[str] = ..., face_box: _Optional[_Union[Box, _Mapping]] = ...) -> None: ...

class CropBox(_message.Message):
    __slots__ = ("left", "top", "right", "bottom", "image_width", "image_height")
    LEFT_FIELD_NUMBER: _ClassVar[int]
    TOP_FIELD_NUMBER: _ClassVar[int]
    RIGHT_FIELD_NUMBER: _ClassVar[int]
    BOTTOM_FIELD_NUMBER: _ClassVar[int]
    IMAGE_WIDTH_FIELD_NUMBER: _ClassVar[int]
    IMAGE_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    left: int
    top: int
    right: int
    bottom: int
    image_width: int
    image_height: int
    def __init__(self, left: _Optional[int] = ..., top: _Optional[int] = ..., right: _Optional[int] = ..., bottom: _Optional[int] = ..., image_width: _Optional[int] = ..., image_height: _Optional[int] = ...) -> None: ...

class Timings(_message.Message):
    __slots__ = ("decode_ms", "embed_ms", "search_ms", "total_ms")
    DECODE_MS_FIELD_NUMBER: _ClassVar[int]
    EMBED_MS_FIELD_NUMBER: _ClassVar[int]
    SEARCH_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    decode_ms: float
    embed_ms: float
    search_ms: float
    total_ms: float
    def __init__(self, decode_ms: _Optional[float] = ..., embed_ms: _Optional[float] = ..., search_ms: _Optional[float] = ..., total_ms: _Optional[float] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("matches", "model_fingerprint", "index_version", "timings", "query_crop", "crop_note", "max_distance", "faces")
    MATCHES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    INDEX_VERSION_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    QUERY_CROP_FIELD_NUMBER: _ClassVar[int]
    CROP_NOTE_FIELD_NUMBER: _ClassVar[int]
    MAX_DISTANCE_FIELD_NUMBER: _ClassVar[int]
    FACES_FIELD_NUMBER: _ClassVar[int]
    matches: _containers.RepeatedCompositeFieldContainer[Match]
    model_fingerprint: str
    index_version: str
    timings: Timings
    query_crop: CropBox
    crop_note: str
    max_distance: float
    faces: _containers.RepeatedCompositeFieldContainer[FaceResult]
    def __init__(self, matches: _Optional[_Iterable[_Union[Match, _Mapping]]] = ..., model_fingerprint: _Optional[str] = ..., index_version: _Optional[str] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ..., query_crop: _Optional[_Union[CropBox, _Mapping]] = ..., crop_note: _Optional[str] = ..., max_distance: _Optional[float] = ..., faces: _Optional[_Iterable[_Union[FaceResult, _Mapping]]] = ...) -> None: ...

class FaceResult(_message.Message):
    __slots__ = ("number", "box", "score", "query_crop", "crop_note", "matches")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    BOX_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    QUERY_CROP_FIELD_NUMBER: _ClassVar[int]
    CROP_NOTE_FIELD_NUMBER: _ClassVar[int]
    MATCHES_FIELD_NUMBER: _ClassVar[int]
    number: int
    box: Box
    score: float
    query_crop: CropBox
    crop_note: str
    matches: _containers.RepeatedCompositeFieldContainer[Match]
    def __init__(self, number: _Optional[int] = ..., box: _Optional[_Union[Box, _Mapping]] = ..., score: _Optional[float] = ..., query_crop: _Optional[_Union[CropBox, _Mapping]] = ..., crop_note: _Optional[str] = ..., matches: _Optional[_Iterable[_Union[Match, _Mapping]]] = ...) -> None: ...

class GetInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetInfoResponse(_message.Message):
    __slots__ = ("model_name", "model_fingerprint", "embedding_size", "input_size", "execution_provider", "providers", "gallery_size", "index_version", "max_k", "knn_backend", "weights", "thumbnail_size", "startup_seconds", "warmup_seconds", "max_distance", "intra_op_threads", "server_version", "gallery_faces", "model_instances", "default_search_breadth", "max_search_breadth")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_SIZE_FIELD_NUMBER: _ClassVar[int]
    INPUT_SIZE_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_PROVIDER_FIELD_NUMBER: _ClassVar[int]
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    GALLERY_SIZE_FIELD_NUMBER: _ClassVar[int]
    INDEX_VERSION_FIELD_NUMBER: _ClassVar[int]
    MAX_K_FIELD_NUMBER: _ClassVar[int]
    KNN_BACKEND_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    THUMBNAIL_SIZE_FIELD_NUMBER: _ClassVar[int]
    STARTUP_SECONDS_FIELD_NUMBER: _ClassVar[int]
    WARMUP_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_DISTANCE_FIELD_NUMBER: _ClassVar[int]
    INTRA_OP_THREADS_FIELD_NUMBER: _ClassVar[int]
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    GALLERY_FACES_FIELD_NUMBER: _ClassVar[int]
    MODEL_INSTANCES_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_SEARCH_BREADTH_FIELD_NUMBER: _ClassVar[int]
    MAX_SEARCH_BREADTH_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_fingerprint: str
    embedding_size: int
    input_size: int
    execution_provider: str
    providers: _containers.RepeatedScalarFieldContainer[str]
    gallery_size: int
    index_version: str
    max_k: int
    knn_backend: str
    weights: str
    thumbnail_size: int
    startup_seconds: float
    warmup_seconds: float
    max_distance: float
    intra_op_threads: int
    server_version: str
    gallery_faces: str
    model_instances: int
    default_search_breadth: int
    max_search_breadth: int
    def __init__(self, model_name: _Optional[str] = ..., model_fingerprint: _Optional[str] = ..., embedding_size: _Optional[int] = ..., input_size: _Optional[int] = ..., execution_provider: _Optional[str] = ..., providers: _Optional[_Iterable[str]] = ..., gallery_size: _Optional[int] = ..., index_version: _Optional[str] = ..., max_k: _Optional[int] = ..., knn_backend: _Optional[str] = ..., weights: _Optional[str] = ..., thumbnail_size: _Optional[int] = ..., startup_seconds: _Optional[float] = ..., warmup_seconds: _Optional[float] = ..., max_distance: _Optional[float] = ..., intra_op_threads: _Optional[int] = ..., server_version: _Optional[str] = ..., gallery_faces: _Optional[str] = ..., model_instances: _Optional[int] = ..., default_search_breadth: _Optional[int] = ..., max_search_breadth: _Optional[int] = ...) -> None: ...

class ReloadIndexRequest(_message.Message):
    __slots__ = ("index_path",)
    INDEX_PATH_FIELD_NUMBER: _ClassVar[int]
    index_path: str
    def __init__(self, index_path: _Optional[str] = ...) -> None: ...

class ReloadIndexResponse(_message.Message):
    __slots__ = ("index_version", "gallery_size", "previous_version")
    INDEX_VERSION_FIELD_NUMBER: _ClassVar[int]
    GALLERY_SIZE_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_VERSION_FIELD_NUMBER: _ClassVar[int]
    index_version: str
    gallery_size: int
    previous_version: str
    def __init__(self, index_version: _Optional[str] = ..., gallery_size: _Optional[int] = ..., previous_version: _Optional[str] = ...) -> None: ...

class NewImage(_message.Message):
    __slots__ = ("image", "label", "external_id")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_ID_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    label: str
    external_id: str
    def __init__(self, image: _Optional[bytes] = ..., label: _Optional[str] = ..., external_id: _Optional[str] = ...) -> None: ...

class AddImagesRequest(_message.Message):
    __slots__ = ("images", "faces")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    FACES_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[NewImage]
    faces: FaceMode
    def __init__(self, images: _Optional[_Iterable[_Union[NewImage, _Mapping]]] = ..., faces: _Optional[_Union[FaceMode, str]] = ...) -> None: ...

class AddResult(_message.Message):
    __slots__ = ("position", "result", "id", "label", "path", "error", "faces")
    POSITION_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    FACES_FIELD_NUMBER: _ClassVar[int]
    position: int
    result: ChangeResult
    id: str
    label: str
    path: str
    error: str
    faces: _containers.RepeatedCompositeFieldContainer[GalleryFace]
    def __init__(self, position: _Optional[int] = ..., result: _Optional[_Union[ChangeResult, str]] = ..., id: _Optional[str] = ..., label: _Optional[str] = ..., path: _Optional[str] = ..., error: _Optional[str] = ..., faces: _Optional[_Iterable[_Union[GalleryFace, _Mapping]]] = ...) -> None: ...

class GalleryFace(_message.Message):
    __slots__ = ("id", "box")
    ID_FIELD_NUMBER: _ClassVar[int]
    BOX_FIELD_NUMBER: _ClassVar[int]
    id: str
    box: Box
    def __init__(self, id: _Optional[str] = ..., box: _Optional[_Union[Box, _Mapping]] = ...) -> None: ...

class AddImagesResponse(_message.Message):
    __slots__ = ("results", "gallery_size", "pending_rows")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    GALLERY_SIZE_FIELD_NUMBER: _ClassVar[int]
    PENDING_ROWS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[AddResult]
    gallery_size: int
    pending_rows: int
    def __init__(self, results: _Optional[_Iterable[_Union[AddResult, _Mapping]]] = ..., gallery_size: _Optional[int] = ..., pending_rows: _Optional[int] = ...) -> None: ...

class RemoveImagesRequest(_message.Message):
    __slots__ = ("ids", "labels", "images", "delete_files")
    IDS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    DELETE_FILES_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    labels: _containers.RepeatedScalarFieldContainer[str]
    images: _containers.RepeatedScalarFieldContainer[bytes]
    delete_files: bool
    def __init__(self, ids: _Optional[_Iterable[str]] = ..., labels: _Optional[_Iterable[str]] = ..., images: _Optional[_Iterable[bytes]] = ..., delete_files: _Optional[bool] = ...) -> None: ...

class RemovedImage(_message.Message):
    __slots__ = ("id", "label", "path", "file_deleted")
    ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    FILE_DELETED_FIELD_NUMBER: _ClassVar[int]
    id: str
    label: str
    path: str
    file_deleted: bool
    def __init__(self, id: _Optional[str] = ..., label: _Optional[str] = ..., path: _Optional[str] = ..., file_deleted: _Optional[bool] = ...) -> None: ...

class RemoveResult(_message.Message):
    __slots__ = ("selector", "position", "result", "removed", "error")
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    selector: str
    position: int
    result: ChangeResult
    removed: _containers.RepeatedCompositeFieldContainer[RemovedImage]
    error: str
    def __init__(self, selector: _Optional[str] = ..., position: _Optional[int] = ..., result: _Optional[_Union[ChangeResult, str]] = ..., removed: _Optional[_Iterable[_Union[RemovedImage, _Mapping]]] = ..., error: _Optional[str] = ...) -> None: ...

class RemoveImagesResponse(_message.Message):
    __slots__ = ("results", "gallery_size", "pending_rows")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    GALLERY_SIZE_FIELD_NUMBER: _ClassVar[int]
    PENDING_ROWS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[RemoveResult]
    gallery_size: int
    pending_rows: int
    def __init__(self, results: _Optional[_Iterable[_Union[RemoveResult, _Mapping]]] = ..., gallery_size: _Optional[int] = ..., pending_rows: _Optional[int] = ...) -> None: ...

class ListImagesRequest(_message.Message):
    __slots__ = ("label", "page_size", "page_token")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    label: str
    page_size: int
    page_token: str
    def __init__(self, label: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class GalleryEntry(_message.Message):
    __slots__ = ("id", "label", "path", "also", "pending", "face_box")
    ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    ALSO_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    FACE_BOX_FIELD_NUMBER: _ClassVar[int]
    id: str
    label: str
    path: str
    also: _containers.RepeatedScalarFieldContainer[str]
    pending: bool
    face_box: Box
    def __init__(self, id: _Optional[str] = ..., label: _Optional[str] = ..., path: _Optional[str] = ..., also: _Optional[_Iterable[str]] = ..., pending: _Optional[bool] = ..., face_box: _Optional[_Union[Box, _Mapping]] = ...) -> None: ...

class ListImagesResponse(_message.Message):
    __slots__ = ("images", "next_page_token", "gallery_size")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    GALLERY_SIZE_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[GalleryEntry]
    next_page_token: str
    gallery_size: int
    def __init__(self, images: _Optional[_Iterable[_Union[GalleryEntry, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., gallery_size: _Optional[int] = ...) -> None: ...

class CompactIndexRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CompactIndexResponse(_message.Message):
    __slots__ = ("index_version", "gallery_size", "previous_version", "folded_rows")
    INDEX_VERSION_FIELD_NUMBER: _ClassVar[int]
    GALLERY_SIZE_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_VERSION_FIELD_NUMBER: _ClassVar[int]
    FOLDED_ROWS_FIELD_NUMBER: _ClassVar[int]
    index_version: str
    gallery_size: int
    previous_version: str
    folded_rows: int
    def __init__(self, index_version: _Optional[str] = ..., gallery_size: _Optional[int] = ..., previous_version: _Optional[str] = ..., folded_rows: _Optional[int] = ...) -> None: ...

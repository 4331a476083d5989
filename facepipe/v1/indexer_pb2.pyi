from facepipe.v1 import common_pb2 as _common_pb2
from facepipe.v1 import pipeline_pb2 as _pipeline_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SearchFilter(_message.Message):
    __slots__ = ("site", "url", "image_sha256", "person_id", "taken_after_ms", "taken_before_ms", "folder")
    SITE_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SHA256_FIELD_NUMBER: _ClassVar[int]
    PERSON_ID_FIELD_NUMBER: _ClassVar[int]
    TAKEN_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    TAKEN_BEFORE_MS_FIELD_NUMBER: _ClassVar[int]
    FOLDER_FIELD_NUMBER: _ClassVar[int]
    site: str
    url: str
    image_sha256: str
    person_id: str
    taken_after_ms: int
    taken_before_ms: int
    folder: str
    def __init__(self, site: _Optional[str] = ..., url: _Optional[str] = ..., image_sha256: _Optional[str] = ..., person_id: _Optional[str] = ..., taken_after_ms: _Optional[int] = ..., taken_before_ms: _Optional[int] = ..., folder: _Optional[str] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("tenant_id", "image", "vector", "top_k", "min_score", "filter", "query_face_index")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    MIN_SCORE_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    QUERY_FACE_INDEX_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    image: bytes
    vector: _common_pb2.Embedding
    top_k: int
    min_score: float
    filter: SearchFilter
    query_face_index: int
    def __init__(self, tenant_id: _Optional[str] = ..., image: _Optional[bytes] = ..., vector: _Optional[_Union[_common_pb2.Embedding, _Mapping]] = ..., top_k: _Optional[int] = ..., min_score: _Optional[float] = ..., filter: _Optional[_Union[SearchFilter, _Mapping]] = ..., query_face_index: _Optional[int] = ...) -> None: ...

class SearchMatch(_message.Message):
    __slots__ = ("point_id", "score", "tenant_id", "site", "url", "page_url", "image_sha256", "bbox", "det_score", "quality", "crop", "thumb", "model", "face_index", "indexed_at_ms", "alt_text", "person_id", "person_name", "photo", "image_width", "image_height", "image_thumb")
    POINT_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    PAGE_URL_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SHA256_FIELD_NUMBER: _ClassVar[int]
    BBOX_FIELD_NUMBER: _ClassVar[int]
    DET_SCORE_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    CROP_FIELD_NUMBER: _ClassVar[int]
    THUMB_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    FACE_INDEX_FIELD_NUMBER: _ClassVar[int]
    INDEXED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    ALT_TEXT_FIELD_NUMBER: _ClassVar[int]
    PERSON_ID_FIELD_NUMBER: _ClassVar[int]
    PERSON_NAME_FIELD_NUMBER: _ClassVar[int]
    PHOTO_FIELD_NUMBER: _ClassVar[int]
    IMAGE_WIDTH_FIELD_NUMBER: _ClassVar[int]
    IMAGE_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_THUMB_FIELD_NUMBER: _ClassVar[int]
    point_id: str
    score: float
    tenant_id: str
    site: str
    url: str
    page_url: str
    image_sha256: str
    bbox: _common_pb2.BoundingBox
    det_score: float
    quality: float
    crop: _common_pb2.ObjectRef
    thumb: _common_pb2.ObjectRef
    model: str
    face_index: int
    indexed_at_ms: int
    alt_text: str
    person_id: str
    person_name: str
    photo: _pipeline_pb2.PhotoMetadata
    image_width: int
    image_height: int
    image_thumb: _common_pb2.ObjectRef
    def __init__(self, point_id: _Optional[str] = ..., score: _Optional[float] = ..., tenant_id: _Optional[str] = ..., site: _Optional[str] = ..., url: _Optional[str] = ..., page_url: _Optional[str] = ..., image_sha256: _Optional[str] = ..., bbox: _Optional[_Union[_common_pb2.BoundingBox, _Mapping]] = ..., det_score: _Optional[float] = ..., quality: _Optional[float] = ..., crop: _Optional[_Union[_common_pb2.ObjectRef, _Mapping]] = ..., thumb: _Optional[_Union[_common_pb2.ObjectRef, _Mapping]] = ..., model: _Optional[str] = ..., face_index: _Optional[int] = ..., indexed_at_ms: _Optional[int] = ..., alt_text: _Optional[str] = ..., person_id: _Optional[str] = ..., person_name: _Optional[str] = ..., photo: _Optional[_Union[_pipeline_pb2.PhotoMetadata, _Mapping]] = ..., image_width: _Optional[int] = ..., image_height: _Optional[int] = ..., image_thumb: _Optional[_Union[_common_pb2.ObjectRef, _Mapping]] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("matches", "query_face", "query_faces_found", "query_face_index", "query_faces")
    MATCHES_FIELD_NUMBER: _ClassVar[int]
    QUERY_FACE_FIELD_NUMBER: _ClassVar[int]
    QUERY_FACES_FOUND_FIELD_NUMBER: _ClassVar[int]
    QUERY_FACE_INDEX_FIELD_NUMBER: _ClassVar[int]
    QUERY_FACES_FIELD_NUMBER: _ClassVar[int]
    matches: _containers.RepeatedCompositeFieldContainer[SearchMatch]
    query_face: _common_pb2.Face
    query_faces_found: int
    query_face_index: int
    query_faces: _containers.RepeatedCompositeFieldContainer[_common_pb2.Face]
    def __init__(self, matches: _Optional[_Iterable[_Union[SearchMatch, _Mapping]]] = ..., query_face: _Optional[_Union[_common_pb2.Face, _Mapping]] = ..., query_faces_found: _Optional[int] = ..., query_face_index: _Optional[int] = ..., query_faces: _Optional[_Iterable[_Union[_common_pb2.Face, _Mapping]]] = ...) -> None: ...

class GetStatsRequest(_message.Message):
    __slots__ = ("tenant_id", "count_images")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    COUNT_IMAGES_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    count_images: bool
    def __init__(self, tenant_id: _Optional[str] = ..., count_images: _Optional[bool] = ...) -> None: ...

class GetStatsResponse(_message.Message):
    __slots__ = ("points", "dim", "model", "vector_store", "object_store", "counters", "images", "collection")
    class CountersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    POINTS_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VECTOR_STORE_FIELD_NUMBER: _ClassVar[int]
    OBJECT_STORE_FIELD_NUMBER: _ClassVar[int]
    COUNTERS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    points: int
    dim: int
    model: str
    vector_store: str
    object_store: str
    counters: _containers.ScalarMap[str, int]
    images: int
    collection: str
    def __init__(self, points: _Optional[int] = ..., dim: _Optional[int] = ..., model: _Optional[str] = ..., vector_store: _Optional[str] = ..., object_store: _Optional[str] = ..., counters: _Optional[_Mapping[str, int]] = ..., images: _Optional[int] = ..., collection: _Optional[str] = ...) -> None: ...

class ListFacesRequest(_message.Message):
    __slots__ = ("tenant_id", "page_size", "page_token", "person_id", "image_sha256")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PERSON_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SHA256_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    page_size: int
    page_token: str
    person_id: str
    image_sha256: str
    def __init__(self, tenant_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., person_id: _Optional[str] = ..., image_sha256: _Optional[str] = ...) -> None: ...

class ListFacesResponse(_message.Message):
    __slots__ = ("faces", "next_page_token", "pinned_point_ids")
    FACES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PINNED_POINT_IDS_FIELD_NUMBER: _ClassVar[int]
    faces: _containers.RepeatedCompositeFieldContainer[SearchMatch]
    next_page_token: str
    pinned_point_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, faces: _Optional[_Iterable[_Union[SearchMatch, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., pinned_point_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteFacesRequest(_message.Message):
    __slots__ = ("tenant_id", "image_sha256", "url", "site", "all")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SHA256_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    image_sha256: str
    url: str
    site: str
    all: bool
    def __init__(self, tenant_id: _Optional[str] = ..., image_sha256: _Optional[str] = ..., url: _Optional[str] = ..., site: _Optional[str] = ..., all: _Optional[bool] = ...) -> None: ...

class DeleteFacesResponse(_message.Message):
    __slots__ = ("points_deleted", "objects_deleted")
    POINTS_DELETED_FIELD_NUMBER: _ClassVar[int]
    OBJECTS_DELETED_FIELD_NUMBER: _ClassVar[int]
    points_deleted: int
    objects_deleted: int
    def __init__(self, points_deleted: _Optional[int] = ..., objects_deleted: _Optional[int] = ...) -> None: ...

class OptOutRequest(_message.Message):
    __slots__ = ("tenant_id", "images", "note")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    images: _containers.RepeatedScalarFieldContainer[bytes]
    note: str
    def __init__(self, tenant_id: _Optional[str] = ..., images: _Optional[_Iterable[bytes]] = ..., note: _Optional[str] = ...) -> None: ...

class OptOutResponse(_message.Message):
    __slots__ = ("optout_id", "faces", "points_deleted", "objects_deleted", "min_score")
    OPTOUT_ID_FIELD_NUMBER: _ClassVar[int]
    FACES_FIELD_NUMBER: _ClassVar[int]
    POINTS_DELETED_FIELD_NUMBER: _ClassVar[int]
    OBJECTS_DELETED_FIELD_NUMBER: _ClassVar[int]
    MIN_SCORE_FIELD_NUMBER: _ClassVar[int]
    optout_id: str
    faces: int
    points_deleted: int
    objects_deleted: int
    min_score: float
    def __init__(self, optout_id: _Optional[str] = ..., faces: _Optional[int] = ..., points_deleted: _Optional[int] = ..., objects_deleted: _Optional[int] = ..., min_score: _Optional[float] = ...) -> None: ...

class ListOptOutsRequest(_message.Message):
    __slots__ = ("tenant_id",)
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    def __init__(self, tenant_id: _Optional[str] = ...) -> None: ...

class OptOutEntry(_message.Message):
    __slots__ = ("optout_id", "tenant_id", "faces", "note", "created_at_ms", "key_id")
    OPTOUT_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    FACES_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    optout_id: str
    tenant_id: str
    faces: int
    note: str
    created_at_ms: int
    key_id: str
    def __init__(self, optout_id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., faces: _Optional[int] = ..., note: _Optional[str] = ..., created_at_ms: _Optional[int] = ..., key_id: _Optional[str] = ...) -> None: ...

class ListOptOutsResponse(_message.Message):
    __slots__ = ("optouts",)
    OPTOUTS_FIELD_NUMBER: _ClassVar[int]
    optouts: _containers.RepeatedCompositeFieldContainer[OptOutEntry]
    def __init__(self, optouts: _Optional[_Iterable[_Union[OptOutEntry, _Mapping]]] = ...) -> None: ...

class RemoveOptOutRequest(_message.Message):
    __slots__ = ("tenant_id", "optout_id")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    OPTOUT_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    optout_id: str
    def __init__(self, tenant_id: _Optional[str] = ..., optout_id: _Optional[str] = ...) -> None: ...

class RemoveOptOutResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListAuditRecordsRequest(_message.Message):
    __slots__ = ("tenant_id", "since_ms", "limit")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    SINCE_MS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    since_ms: int
    limit: int
    def __init__(self, tenant_id: _Optional[str] = ..., since_ms: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class AuditRecord(_message.Message):
    __slots__ = ("seq", "time_ms", "key_id", "role", "tenant_id", "action", "method", "service", "outcome", "results", "affected", "detail")
    class AffectedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class DetailEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIME_MS_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    AFFECTED_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    seq: int
    time_ms: int
    key_id: str
    role: str
    tenant_id: str
    action: str
    method: str
    service: str
    outcome: str
    results: int
    affected: _containers.ScalarMap[str, int]
    detail: _containers.ScalarMap[str, str]
    def __init__(self, seq: _Optional[int] = ..., time_ms: _Optional[int] = ..., key_id: _Optional[str] = ..., role: _Optional[str] = ..., tenant_id: _Optional[str] = ..., action: _Optional[str] = ..., method: _Optional[str] = ..., service: _Optional[str] = ..., outcome: _Optional[str] = ..., results: _Optional[int] = ..., affected: _Optional[_Mapping[str, int]] = ..., detail: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ListAuditRecordsResponse(_message.Message):
    __slots__ = ("records",)
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[AuditRecord]
    def __init__(self, records: _Optional[_Iterable[_Union[AuditRecord, _Mapping]]] = ...) -> None: ...

class ReindexRequest(_message.Message):
    __slots__ = ("tenant_id", "from_collection", "drop_old", "wait")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_COLLECTION_FIELD_NUMBER: _ClassVar[int]
    DROP_OLD_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    from_collection: str
    drop_old: bool
    wait: bool
    def __init__(self, tenant_id: _Optional[str] = ..., from_collection: _Optional[str] = ..., drop_old: _Optional[bool] = ..., wait: _Optional[bool] = ...) -> None: ...

class ReindexResponse(_message.Message):
    __slots__ = ("state", "from_collection", "to_collection", "model", "faces_total", "faces_reindexed", "faces_skipped", "faces_missing", "faces_realigned", "points_dropped", "error", "optouts_of_other_models")
    STATE_FIELD_NUMBER: _ClassVar[int]
    FROM_COLLECTION_FIELD_NUMBER: _ClassVar[int]
    TO_COLLECTION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    FACES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    FACES_REINDEXED_FIELD_NUMBER: _ClassVar[int]
    FACES_SKIPPED_FIELD_NUMBER: _ClassVar[int]
    FACES_MISSING_FIELD_NUMBER: _ClassVar[int]
    FACES_REALIGNED_FIELD_NUMBER: _ClassVar[int]
    POINTS_DROPPED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    OPTOUTS_OF_OTHER_MODELS_FIELD_NUMBER: _ClassVar[int]
    state: str
    from_collection: str
    to_collection: str
    model: str
    faces_total: int
    faces_reindexed: int
    faces_skipped: int
    faces_missing: int
    faces_realigned: int
    points_dropped: int
    error: str
    optouts_of_other_models: int
    def __init__(self, state: _Optional[str] = ..., from_collection: _Optional[str] = ..., to_collection: _Optional[str] = ..., model: _Optional[str] = ..., faces_total: _Optional[int] = ..., faces_reindexed: _Optional[int] = ..., faces_skipped: _Optional[int] = ..., faces_missing: _Optional[int] = ..., faces_realigned: _Optional[int] = ..., points_dropped: _Optional[int] = ..., error: _Optional[str] = ..., optouts_of_other_models: _Optional[int] = ...) -> None: ...

class FaceNeighborsRequest(_message.Message):
    __slots__ = ("tenant_id", "point_ids", "k", "min_score")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    POINT_IDS_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    MIN_SCORE_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    point_ids: _containers.RepeatedScalarFieldContainer[str]
    k: int
    min_score: float
    def __init__(self, tenant_id: _Optional[str] = ..., point_ids: _Optional[_Iterable[str]] = ..., k: _Optional[int] = ..., min_score: _Optional[float] = ...) -> None: ...

class FaceNeighbor(_message.Message):
    __slots__ = ("point_id", "score", "person_id")
    POINT_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    PERSON_ID_FIELD_NUMBER: _ClassVar[int]
    point_id: str
    score: float
    person_id: str
    def __init__(self, point_id: _Optional[str] = ..., score: _Optional[float] = ..., person_id: _Optional[str] = ...) -> None: ...

class FaceNeighbors(_message.Message):
    __slots__ = ("point_id", "neighbors", "found", "person_id", "vector")
    POINT_ID_FIELD_NUMBER: _ClassVar[int]
    NEIGHBORS_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    PERSON_ID_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    point_id: str
    neighbors: _containers.RepeatedCompositeFieldContainer[FaceNeighbor]
    found: bool
    person_id: str
    vector: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, point_id: _Optional[str] = ..., neighbors: _Optional[_Iterable[_Union[FaceNeighbor, _Mapping]]] = ..., found: _Optional[bool] = ..., person_id: _Optional[str] = ..., vector: _Optional[_Iterable[float]] = ...) -> None: ...

class FaceNeighborsResponse(_message.Message):
    __slots__ = ("faces",)
    FACES_FIELD_NUMBER: _ClassVar[int]
    faces: _containers.RepeatedCompositeFieldContainer[FaceNeighbors]
    def __init__(self, faces: _Optional[_Iterable[_Union[FaceNeighbors, _Mapping]]] = ...) -> None: ...

class FacePerson(_message.Message):
    __slots__ = ("point_id", "person_id", "pinned")
    POINT_ID_FIELD_NUMBER: _ClassVar[int]
    PERSON_ID_FIELD_NUMBER: _ClassVar[int]
    PINNED_FIELD_NUMBER: _ClassVar[int]
    point_id: str
    person_id: str
    pinned: bool
    def __init__(self, point_id: _Optional[str] = ..., person_id: _Optional[str] = ..., pinned: _Optional[bool] = ...) -> None: ...

class SetFacePersonsRequest(_message.Message):
    __slots__ = ("tenant_id", "faces")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    FACES_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    faces: _containers.RepeatedCompositeFieldContainer[FacePerson]
    def __init__(self, tenant_id: _Optional[str] = ..., faces: _Optional[_Iterable[_Union[FacePerson, _Mapping]]] = ...) -> None: ...

class SetFacePersonsResponse(_message.Message):
    __slots__ = ("faces_updated",)
    FACES_UPDATED_FIELD_NUMBER: _ClassVar[int]
    faces_updated: int
    def __init__(self, faces_updated: _Optional[int] = ...) -> None: ...

class FaceGraphRequest(_message.Message):
    __slots__ = ("tenant_id", "k")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    k: int
    def __init__(self, tenant_id: _Optional[str] = ..., k: _Optional[int] = ...) -> None: ...

class FaceGraphRow(_message.Message):
    __slots__ = ("index", "point_id", "neighbors", "similarities", "person_id", "pinned", "quality", "vector")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    POINT_ID_FIELD_NUMBER: _ClassVar[int]
    NEIGHBORS_FIELD_NUMBER: _ClassVar[int]
    SIMILARITIES_FIELD_NUMBER: _ClassVar[int]
    PERSON_ID_FIELD_NUMBER: _ClassVar[int]
    PINNED_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    index: int
    point_id: str
    neighbors: _containers.RepeatedScalarFieldContainer[int]
    similarities: _containers.RepeatedScalarFieldContainer[float]
    person_id: str
    pinned: bool
    quality: float
    vector: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, index: _Optional[int] = ..., point_id: _Optional[str] = ..., neighbors: _Optional[_Iterable[int]] = ..., similarities: _Optional[_Iterable[float]] = ..., person_id: _Optional[str] = ..., pinned: _Optional[bool] = ..., quality: _Optional[float] = ..., vector: _Optional[_Iterable[float]] = ...) -> None: ...

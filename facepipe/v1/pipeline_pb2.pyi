from facepipe.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ImageStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IMAGE_STATUS_UNSPECIFIED: _ClassVar[ImageStatus]
    IMAGE_STATUS_INDEXED: _ClassVar[ImageStatus]
    IMAGE_STATUS_DUPLICATE: _ClassVar[ImageStatus]
    IMAGE_STATUS_FAILED: _ClassVar[ImageStatus]
IMAGE_STATUS_UNSPECIFIED: ImageStatus
IMAGE_STATUS_INDEXED: ImageStatus
IMAGE_STATUS_DUPLICATE: ImageStatus
IMAGE_STATUS_FAILED: ImageStatus

class FaceHint(_message.Message):
    __slots__ = ("box", "landmarks", "score")
    BOX_FIELD_NUMBER: _ClassVar[int]
    LANDMARKS_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    box: _common_pb2.BoundingBox
    landmarks: _containers.RepeatedCompositeFieldContainer[_common_pb2.Point]
    score: float
    def __init__(self, box: _Optional[_Union[_common_pb2.BoundingBox, _Mapping]] = ..., landmarks: _Optional[_Iterable[_Union[_common_pb2.Point, _Mapping]]] = ..., score: _Optional[float] = ...) -> None: ...

class IngestRequest(_message.Message):
    __slots__ = ("image_sha256", "bucket", "key", "tenant_id", "site", "url", "image_phash", "face_hints", "page_url", "alt_text", "batch_id", "message_id", "aligned", "folder")
    IMAGE_SHA256_FIELD_NUMBER: _ClassVar[int]
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    IMAGE_PHASH_FIELD_NUMBER: _ClassVar[int]
    FACE_HINTS_FIELD_NUMBER: _ClassVar[int]
    PAGE_URL_FIELD_NUMBER: _ClassVar[int]
    ALT_TEXT_FIELD_NUMBER: _ClassVar[int]
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    ALIGNED_FIELD_NUMBER: _ClassVar[int]
    FOLDER_FIELD_NUMBER: _ClassVar[int]
    image_sha256: str
    bucket: str
    key: str
    tenant_id: str
    site: str
    url: str
    image_phash: str
    face_hints: _containers.RepeatedCompositeFieldContainer[FaceHint]
    page_url: str
    alt_text: str
    batch_id: str
    message_id: str
    aligned: bool
    folder: str
    def __init__(self, image_sha256: _Optional[str] = ..., bucket: _Optional[str] = ..., key: _Optional[str] = ..., tenant_id: _Optional[str] = ..., site: _Optional[str] = ..., url: _Optional[str] = ..., image_phash: _Optional[str] = ..., face_hints: _Optional[_Iterable[_Union[FaceHint, _Mapping]]] = ..., page_url: _Optional[str] = ..., alt_text: _Optional[str] = ..., batch_id: _Optional[str] = ..., message_id: _Optional[str] = ..., aligned: _Optional[bool] = ..., folder: _Optional[str] = ...) -> None: ...

class PhotoMetadata(_message.Message):
    __slots__ = ("taken_at_ms", "has_gps", "latitude", "longitude", "camera_make", "camera_model", "folder")
    TAKEN_AT_MS_FIELD_NUMBER: _ClassVar[int]
    HAS_GPS_FIELD_NUMBER: _ClassVar[int]
    LATITUDE_FIELD_NUMBER: _ClassVar[int]
    LONGITUDE_FIELD_NUMBER: _ClassVar[int]
    CAMERA_MAKE_FIELD_NUMBER: _ClassVar[int]
    CAMERA_MODEL_FIELD_NUMBER: _ClassVar[int]
    FOLDER_FIELD_NUMBER: _ClassVar[int]
    taken_at_ms: int
    has_gps: bool
    latitude: float
    longitude: float
    camera_make: str
    camera_model: str
    folder: str
    def __init__(self, taken_at_ms: _Optional[int] = ..., has_gps: _Optional[bool] = ..., latitude: _Optional[float] = ..., longitude: _Optional[float] = ..., camera_make: _Optional[str] = ..., camera_model: _Optional[str] = ..., folder: _Optional[str] = ...) -> None: ...

class ImageRecord(_message.Message):
    __slots__ = ("tenant_id", "site", "url", "page_url", "alt_text", "image_sha256", "phash", "raw", "content_type", "width", "height", "size_bytes", "batch_id", "message_id", "face_hints", "ingested_at_ms", "photo", "image_thumb", "aligned")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    PAGE_URL_FIELD_NUMBER: _ClassVar[int]
    ALT_TEXT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SHA256_FIELD_NUMBER: _ClassVar[int]
    PHASH_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    FACE_HINTS_FIELD_NUMBER: _ClassVar[int]
    INGESTED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    PHOTO_FIELD_NUMBER: _ClassVar[int]
    IMAGE_THUMB_FIELD_NUMBER: _ClassVar[int]
    ALIGNED_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    site: str
    url: str
    page_url: str
    alt_text: str
    image_sha256: str
    phash: str
    raw: _common_pb2.ObjectRef
    content_type: str
    width: int
    height: int
    size_bytes: int
    batch_id: str
    message_id: str
    face_hints: _containers.RepeatedCompositeFieldContainer[FaceHint]
    ingested_at_ms: int
    photo: PhotoMetadata
    image_thumb: _common_pb2.ObjectRef
    aligned: bool
    def __init__(self, tenant_id: _Optional[str] = ..., site: _Optional[str] = ..., url: _Optional[str] = ..., page_url: _Optional[str] = ..., alt_text: _Optional[str] = ..., image_sha256: _Optional[str] = ..., phash: _Optional[str] = ..., raw: _Optional[_Union[_common_pb2.ObjectRef, _Mapping]] = ..., content_type: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., size_bytes: _Optional[int] = ..., batch_id: _Optional[str] = ..., message_id: _Optional[str] = ..., face_hints: _Optional[_Iterable[_Union[FaceHint, _Mapping]]] = ..., ingested_at_ms: _Optional[int] = ..., photo: _Optional[_Union[PhotoMetadata, _Mapping]] = ..., image_thumb: _Optional[_Union[_common_pb2.ObjectRef, _Mapping]] = ..., aligned: _Optional[bool] = ...) -> None: ...

class FaceCrop(_message.Message):
    __slots__ = ("aligned_bgr", "size", "thumb_jpeg")
    ALIGNED_BGR_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    THUMB_JPEG_FIELD_NUMBER: _ClassVar[int]
    aligned_bgr: bytes
    size: int
    thumb_jpeg: bytes
    def __init__(self, aligned_bgr: _Optional[bytes] = ..., size: _Optional[int] = ..., thumb_jpeg: _Optional[bytes] = ...) -> None: ...

class DetectedImage(_message.Message):
    __slots__ = ("image", "faces", "detector_model", "faces_rejected", "crops", "rejected_reasons")
    class RejectedReasonsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    FACES_FIELD_NUMBER: _ClassVar[int]
    DETECTOR_MODEL_FIELD_NUMBER: _ClassVar[int]
    FACES_REJECTED_FIELD_NUMBER: _ClassVar[int]
    CROPS_FIELD_NUMBER: _ClassVar[int]
    REJECTED_REASONS_FIELD_NUMBER: _ClassVar[int]
    image: ImageRecord
    faces: _containers.RepeatedCompositeFieldContainer[_common_pb2.Face]
    detector_model: str
    faces_rejected: int
    crops: _containers.RepeatedCompositeFieldContainer[FaceCrop]
    rejected_reasons: _containers.ScalarMap[str, int]
    def __init__(self, image: _Optional[_Union[ImageRecord, _Mapping]] = ..., faces: _Optional[_Iterable[_Union[_common_pb2.Face, _Mapping]]] = ..., detector_model: _Optional[str] = ..., faces_rejected: _Optional[int] = ..., crops: _Optional[_Iterable[_Union[FaceCrop, _Mapping]]] = ..., rejected_reasons: _Optional[_Mapping[str, int]] = ...) -> None: ...

class EmbeddedFace(_message.Message):
    __slots__ = ("face_index", "face", "embedding", "crop", "thumb", "face_phash")
    FACE_INDEX_FIELD_NUMBER: _ClassVar[int]
    FACE_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    CROP_FIELD_NUMBER: _ClassVar[int]
    THUMB_FIELD_NUMBER: _ClassVar[int]
    FACE_PHASH_FIELD_NUMBER: _ClassVar[int]
    face_index: int
    face: _common_pb2.Face
    embedding: _common_pb2.Embedding
    crop: _common_pb2.ObjectRef
    thumb: _common_pb2.ObjectRef
    face_phash: str
    def __init__(self, face_index: _Optional[int] = ..., face: _Optional[_Union[_common_pb2.Face, _Mapping]] = ..., embedding: _Optional[_Union[_common_pb2.Embedding, _Mapping]] = ..., crop: _Optional[_Union[_common_pb2.ObjectRef, _Mapping]] = ..., thumb: _Optional[_Union[_common_pb2.ObjectRef, _Mapping]] = ..., face_phash: _Optional[str] = ...) -> None: ...

class EmbeddedImage(_message.Message):
    __slots__ = ("image", "faces", "faces_rejected", "faces_dup_skipped", "rejected_reasons", "faces_optout_skipped")
    class RejectedReasonsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    FACES_FIELD_NUMBER: _ClassVar[int]
    FACES_REJECTED_FIELD_NUMBER: _ClassVar[int]
    FACES_DUP_SKIPPED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_REASONS_FIELD_NUMBER: _ClassVar[int]
    FACES_OPTOUT_SKIPPED_FIELD_NUMBER: _ClassVar[int]
    image: ImageRecord
    faces: _containers.RepeatedCompositeFieldContainer[EmbeddedFace]
    faces_rejected: int
    faces_dup_skipped: int
    rejected_reasons: _containers.ScalarMap[str, int]
    faces_optout_skipped: int
    def __init__(self, image: _Optional[_Union[ImageRecord, _Mapping]] = ..., faces: _Optional[_Iterable[_Union[EmbeddedFace, _Mapping]]] = ..., faces_rejected: _Optional[int] = ..., faces_dup_skipped: _Optional[int] = ..., rejected_reasons: _Optional[_Mapping[str, int]] = ..., faces_optout_skipped: _Optional[int] = ...) -> None: ...

class ImageDone(_message.Message):
    __slots__ = ("batch_id", "message_id", "tenant_id", "url", "image_sha256", "status", "faces_indexed", "faces_dup_skipped", "faces_rejected", "stage", "error", "rejected_reasons", "faces_known", "reason", "faces_optout_skipped")
    class RejectedReasonsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SHA256_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    FACES_INDEXED_FIELD_NUMBER: _ClassVar[int]
    FACES_DUP_SKIPPED_FIELD_NUMBER: _ClassVar[int]
    FACES_REJECTED_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    REJECTED_REASONS_FIELD_NUMBER: _ClassVar[int]
    FACES_KNOWN_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    FACES_OPTOUT_SKIPPED_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    message_id: str
    tenant_id: str
    url: str
    image_sha256: str
    status: ImageStatus
    faces_indexed: int
    faces_dup_skipped: int
    faces_rejected: int
    stage: str
    error: str
    rejected_reasons: _containers.ScalarMap[str, int]
    faces_known: int
    reason: str
    faces_optout_skipped: int
    def __init__(self, batch_id: _Optional[str] = ..., message_id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., url: _Optional[str] = ..., image_sha256: _Optional[str] = ..., status: _Optional[_Union[ImageStatus, str]] = ..., faces_indexed: _Optional[int] = ..., faces_dup_skipped: _Optional[int] = ..., faces_rejected: _Optional[int] = ..., stage: _Optional[str] = ..., error: _Optional[str] = ..., rejected_reasons: _Optional[_Mapping[str, int]] = ..., faces_known: _Optional[int] = ..., reason: _Optional[str] = ..., faces_optout_skipped: _Optional[int] = ...) -> None: ...

class IndexedFace(_message.Message):
    __slots__ = ("point_id", "face_index", "quality", "thumb")
    POINT_ID_FIELD_NUMBER: _ClassVar[int]
    FACE_INDEX_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    THUMB_FIELD_NUMBER: _ClassVar[int]
    point_id: str
    face_index: int
    quality: float
    thumb: _common_pb2.ObjectRef
    def __init__(self, point_id: _Optional[str] = ..., face_index: _Optional[int] = ..., quality: _Optional[float] = ..., thumb: _Optional[_Union[_common_pb2.ObjectRef, _Mapping]] = ...) -> None: ...

class FacesIndexed(_message.Message):
    __slots__ = ("tenant_id", "image_sha256", "faces", "indexed_at_ms", "message_id", "url")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SHA256_FIELD_NUMBER: _ClassVar[int]
    FACES_FIELD_NUMBER: _ClassVar[int]
    INDEXED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    image_sha256: str
    faces: _containers.RepeatedCompositeFieldContainer[IndexedFace]
    indexed_at_ms: int
    message_id: str
    url: str
    def __init__(self, tenant_id: _Optional[str] = ..., image_sha256: _Optional[str] = ..., faces: _Optional[_Iterable[_Union[IndexedFace, _Mapping]]] = ..., indexed_at_ms: _Optional[int] = ..., message_id: _Optional[str] = ..., url: _Optional[str] = ...) -> None: ...

class ErasedFace(_message.Message):
    __slots__ = ("point_id", "person_id")
    POINT_ID_FIELD_NUMBER: _ClassVar[int]
    PERSON_ID_FIELD_NUMBER: _ClassVar[int]
    point_id: str
    person_id: str
    def __init__(self, point_id: _Optional[str] = ..., person_id: _Optional[str] = ...) -> None: ...

class FacesErased(_message.Message):
    __slots__ = ("tenant_id", "faces", "all")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    FACES_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    faces: _containers.RepeatedCompositeFieldContainer[ErasedFace]
    all: bool
    def __init__(self, tenant_id: _Optional[str] = ..., faces: _Optional[_Iterable[_Union[ErasedFace, _Mapping]]] = ..., all: _Optional[bool] = ...) -> None: ...

from facepipe.v1 import common_pb2 as _common_pb2
from facepipe.v1 import detector_pb2 as _detector_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SubjectFace(_message.Message):
    __slots__ = ("face_id", "crop", "thumb", "quality", "source", "added_at_ms")
    FACE_ID_FIELD_NUMBER: _ClassVar[int]
    CROP_FIELD_NUMBER: _ClassVar[int]
    THUMB_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    ADDED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    face_id: str
    crop: _common_pb2.ObjectRef
    thumb: _common_pb2.ObjectRef
    quality: float
    source: str
    added_at_ms: int
    def __init__(self, face_id: _Optional[str] = ..., crop: _Optional[_Union[_common_pb2.ObjectRef, _Mapping]] = ..., thumb: _Optional[_Union[_common_pb2.ObjectRef, _Mapping]] = ..., quality: _Optional[float] = ..., source: _Optional[str] = ..., added_at_ms: _Optional[int] = ...) -> None: ...

class Subject(_message.Message):
    __slots__ = ("subject_id", "tenant_id", "name", "external_id", "metadata", "face_count", "faces", "created_at_ms", "updated_at_ms")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    FACE_COUNT_FIELD_NUMBER: _ClassVar[int]
    FACES_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    subject_id: str
    tenant_id: str
    name: str
    external_id: str
    metadata: _containers.ScalarMap[str, str]
    face_count: int
    faces: _containers.RepeatedCompositeFieldContainer[SubjectFace]
    created_at_ms: int
    updated_at_ms: int
    def __init__(self, subject_id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., name: _Optional[str] = ..., external_id: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., face_count: _Optional[int] = ..., faces: _Optional[_Iterable[_Union[SubjectFace, _Mapping]]] = ..., created_at_ms: _Optional[int] = ..., updated_at_ms: _Optional[int] = ...) -> None: ...

class EnrolSubjectRequest(_message.Message):
    __slots__ = ("tenant_id", "subject_id", "name", "external_id", "metadata", "images", "aligned", "from_person_id", "max_person_faces")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    ALIGNED_FIELD_NUMBER: _ClassVar[int]
    FROM_PERSON_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_PERSON_FACES_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    subject_id: str
    name: str
    external_id: str
    metadata: _containers.ScalarMap[str, str]
    images: _containers.RepeatedScalarFieldContainer[bytes]
    aligned: bool
    from_person_id: str
    max_person_faces: int
    def __init__(self, tenant_id: _Optional[str] = ..., subject_id: _Optional[str] = ..., name: _Optional[str] = ..., external_id: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., images: _Optional[_Iterable[bytes]] = ..., aligned: _Optional[bool] = ..., from_person_id: _Optional[str] = ..., max_person_faces: _Optional[int] = ...) -> None: ...

class EnrolProblem(_message.Message):
    __slots__ = ("image_index", "message")
    IMAGE_INDEX_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    image_index: int
    message: str
    def __init__(self, image_index: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class EnrolSubjectResponse(_message.Message):
    __slots__ = ("subject", "faces_added", "problems")
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    FACES_ADDED_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    subject: Subject
    faces_added: int
    problems: _containers.RepeatedCompositeFieldContainer[EnrolProblem]
    def __init__(self, subject: _Optional[_Union[Subject, _Mapping]] = ..., faces_added: _Optional[int] = ..., problems: _Optional[_Iterable[_Union[EnrolProblem, _Mapping]]] = ...) -> None: ...

class ListSubjectsRequest(_message.Message):
    __slots__ = ("tenant_id", "page_size", "page_token", "name_contains")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    NAME_CONTAINS_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    page_size: int
    page_token: str
    name_contains: str
    def __init__(self, tenant_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., name_contains: _Optional[str] = ...) -> None: ...

class ListSubjectsResponse(_message.Message):
    __slots__ = ("subjects", "next_page_token")
    SUBJECTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    subjects: _containers.RepeatedCompositeFieldContainer[Subject]
    next_page_token: str
    def __init__(self, subjects: _Optional[_Iterable[_Union[Subject, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetSubjectRequest(_message.Message):
    __slots__ = ("tenant_id", "subject_id")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    subject_id: str
    def __init__(self, tenant_id: _Optional[str] = ..., subject_id: _Optional[str] = ...) -> None: ...

class SubjectResponse(_message.Message):
    __slots__ = ("subject",)
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    subject: Subject
    def __init__(self, subject: _Optional[_Union[Subject, _Mapping]] = ...) -> None: ...

class UpdateSubjectRequest(_message.Message):
    __slots__ = ("tenant_id", "subject_id", "name", "external_id", "metadata", "replace_metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    REPLACE_METADATA_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    subject_id: str
    name: str
    external_id: str
    metadata: _containers.ScalarMap[str, str]
    replace_metadata: bool
    def __init__(self, tenant_id: _Optional[str] = ..., subject_id: _Optional[str] = ..., name: _Optional[str] = ..., external_id: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., replace_metadata: _Optional[bool] = ...) -> None: ...

class RemoveSubjectFacesRequest(_message.Message):
    __slots__ = ("tenant_id", "subject_id", "face_ids")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    FACE_IDS_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    subject_id: str
    face_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, tenant_id: _Optional[str] = ..., subject_id: _Optional[str] = ..., face_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteSubjectRequest(_message.Message):
    __slots__ = ("tenant_id", "subject_id", "all_subjects")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    ALL_SUBJECTS_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    subject_id: str
    all_subjects: bool
    def __init__(self, tenant_id: _Optional[str] = ..., subject_id: _Optional[str] = ..., all_subjects: _Optional[bool] = ...) -> None: ...

class DeleteSubjectResponse(_message.Message):
    __slots__ = ("faces_deleted", "objects_deleted", "subjects_deleted")
    FACES_DELETED_FIELD_NUMBER: _ClassVar[int]
    OBJECTS_DELETED_FIELD_NUMBER: _ClassVar[int]
    SUBJECTS_DELETED_FIELD_NUMBER: _ClassVar[int]
    faces_deleted: int
    objects_deleted: int
    subjects_deleted: int
    def __init__(self, faces_deleted: _Optional[int] = ..., objects_deleted: _Optional[int] = ..., subjects_deleted: _Optional[int] = ...) -> None: ...

class VerifyRequest(_message.Message):
    __slots__ = ("tenant_id", "image_a", "image_b", "aligned")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_A_FIELD_NUMBER: _ClassVar[int]
    IMAGE_B_FIELD_NUMBER: _ClassVar[int]
    ALIGNED_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    image_a: bytes
    image_b: bytes
    aligned: bool
    def __init__(self, tenant_id: _Optional[str] = ..., image_a: _Optional[bytes] = ..., image_b: _Optional[bytes] = ..., aligned: _Optional[bool] = ...) -> None: ...

class VerifyResponse(_message.Message):
    __slots__ = ("verified", "similarity", "threshold", "face_a", "face_b", "model", "faces_a", "faces_b")
    VERIFIED_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    FACE_A_FIELD_NUMBER: _ClassVar[int]
    FACE_B_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    FACES_A_FIELD_NUMBER: _ClassVar[int]
    FACES_B_FIELD_NUMBER: _ClassVar[int]
    verified: bool
    similarity: float
    threshold: float
    face_a: _common_pb2.Face
    face_b: _common_pb2.Face
    model: str
    faces_a: int
    faces_b: int
    def __init__(self, verified: _Optional[bool] = ..., similarity: _Optional[float] = ..., threshold: _Optional[float] = ..., face_a: _Optional[_Union[_common_pb2.Face, _Mapping]] = ..., face_b: _Optional[_Union[_common_pb2.Face, _Mapping]] = ..., model: _Optional[str] = ..., faces_a: _Optional[int] = ..., faces_b: _Optional[int] = ...) -> None: ...

class RecognizeOptions(_message.Message):
    __slots__ = ("candidates", "min_similarity", "detect")
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    MIN_SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    DETECT_FIELD_NUMBER: _ClassVar[int]
    candidates: int
    min_similarity: float
    detect: _detector_pb2.DetectOptions
    def __init__(self, candidates: _Optional[int] = ..., min_similarity: _Optional[float] = ..., detect: _Optional[_Union[_detector_pb2.DetectOptions, _Mapping]] = ...) -> None: ...

class RecognizeRequest(_message.Message):
    __slots__ = ("tenant_id", "image", "options")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    image: bytes
    options: RecognizeOptions
    def __init__(self, tenant_id: _Optional[str] = ..., image: _Optional[bytes] = ..., options: _Optional[_Union[RecognizeOptions, _Mapping]] = ...) -> None: ...

class SubjectCandidate(_message.Message):
    __slots__ = ("subject_id", "name", "similarity", "external_id")
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_ID_FIELD_NUMBER: _ClassVar[int]
    subject_id: str
    name: str
    similarity: float
    external_id: str
    def __init__(self, subject_id: _Optional[str] = ..., name: _Optional[str] = ..., similarity: _Optional[float] = ..., external_id: _Optional[str] = ...) -> None: ...

class RecognizedFace(_message.Message):
    __slots__ = ("face", "subject_id", "subject_name", "external_id", "similarity", "candidates", "track_id", "liveness")
    FACE_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_NAME_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_ID_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    TRACK_ID_FIELD_NUMBER: _ClassVar[int]
    LIVENESS_FIELD_NUMBER: _ClassVar[int]
    face: _common_pb2.Face
    subject_id: str
    subject_name: str
    external_id: str
    similarity: float
    candidates: _containers.RepeatedCompositeFieldContainer[SubjectCandidate]
    track_id: int
    liveness: str
    def __init__(self, face: _Optional[_Union[_common_pb2.Face, _Mapping]] = ..., subject_id: _Optional[str] = ..., subject_name: _Optional[str] = ..., external_id: _Optional[str] = ..., similarity: _Optional[float] = ..., candidates: _Optional[_Iterable[_Union[SubjectCandidate, _Mapping]]] = ..., track_id: _Optional[int] = ..., liveness: _Optional[str] = ...) -> None: ...

class RecognizeResponse(_message.Message):
    __slots__ = ("faces", "threshold", "model", "width", "height")
    FACES_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    faces: _containers.RepeatedCompositeFieldContainer[RecognizedFace]
    threshold: float
    model: str
    width: int
    height: int
    def __init__(self, faces: _Optional[_Iterable[_Union[RecognizedFace, _Mapping]]] = ..., threshold: _Optional[float] = ..., model: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ...) -> None: ...

class RecognizeFrame(_message.Message):
    __slots__ = ("tenant_id", "camera_id", "image", "captured_at_ms", "frame_id", "options")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    CAMERA_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    CAPTURED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    FRAME_ID_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    camera_id: str
    image: bytes
    captured_at_ms: int
    frame_id: int
    options: RecognizeOptions
    def __init__(self, tenant_id: _Optional[str] = ..., camera_id: _Optional[str] = ..., image: _Optional[bytes] = ..., captured_at_ms: _Optional[int] = ..., frame_id: _Optional[int] = ..., options: _Optional[_Union[RecognizeOptions, _Mapping]] = ...) -> None: ...

class RecognizeFrameResult(_message.Message):
    __slots__ = ("frame_id", "camera_id", "captured_at_ms", "faces", "frames_dropped", "frames_processed", "latency_ms", "width", "height", "error")
    FRAME_ID_FIELD_NUMBER: _ClassVar[int]
    CAMERA_ID_FIELD_NUMBER: _ClassVar[int]
    CAPTURED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    FACES_FIELD_NUMBER: _ClassVar[int]
    FRAMES_DROPPED_FIELD_NUMBER: _ClassVar[int]
    FRAMES_PROCESSED_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    frame_id: int
    camera_id: str
    captured_at_ms: int
    faces: _containers.RepeatedCompositeFieldContainer[RecognizedFace]
    frames_dropped: int
    frames_processed: int
    latency_ms: float
    width: int
    height: int
    error: _common_pb2.ImageError
    def __init__(self, frame_id: _Optional[int] = ..., camera_id: _Optional[str] = ..., captured_at_ms: _Optional[int] = ..., faces: _Optional[_Iterable[_Union[RecognizedFace, _Mapping]]] = ..., frames_dropped: _Optional[int] = ..., frames_processed: _Optional[int] = ..., latency_ms: _Optional[float] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., error: _Optional[_Union[_common_pb2.ImageError, _Mapping]] = ...) -> None: ...

class AccessRecord(_message.Message):
    __slots__ = ("record_id", "tenant_id", "camera_id", "track_id", "subject_id", "subject_name", "first_seen_ms", "last_seen_ms", "best_similarity", "snapshot_jpeg", "frames", "external_id")
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    CAMERA_ID_FIELD_NUMBER: _ClassVar[int]
    TRACK_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_NAME_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEEN_MS_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_MS_FIELD_NUMBER: _ClassVar[int]
    BEST_SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_JPEG_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_ID_FIELD_NUMBER: _ClassVar[int]
    record_id: str
    tenant_id: str
    camera_id: str
    track_id: int
    subject_id: str
    subject_name: str
    first_seen_ms: int
    last_seen_ms: int
    best_similarity: float
    snapshot_jpeg: bytes
    frames: int
    external_id: str
    def __init__(self, record_id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., camera_id: _Optional[str] = ..., track_id: _Optional[int] = ..., subject_id: _Optional[str] = ..., subject_name: _Optional[str] = ..., first_seen_ms: _Optional[int] = ..., last_seen_ms: _Optional[int] = ..., best_similarity: _Optional[float] = ..., snapshot_jpeg: _Optional[bytes] = ..., frames: _Optional[int] = ..., external_id: _Optional[str] = ...) -> None: ...

class ListAccessLogRequest(_message.Message):
    __slots__ = ("tenant_id", "camera_id", "subject_id", "since_ms", "until_ms", "limit", "without_snapshots")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    CAMERA_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    SINCE_MS_FIELD_NUMBER: _ClassVar[int]
    UNTIL_MS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    WITHOUT_SNAPSHOTS_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    camera_id: str
    subject_id: str
    since_ms: int
    until_ms: int
    limit: int
    without_snapshots: bool
    def __init__(self, tenant_id: _Optional[str] = ..., camera_id: _Optional[str] = ..., subject_id: _Optional[str] = ..., since_ms: _Optional[int] = ..., until_ms: _Optional[int] = ..., limit: _Optional[int] = ..., without_snapshots: _Optional[bool] = ...) -> None: ...

class ListAccessLogResponse(_message.Message):
    __slots__ = ("records",)
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[AccessRecord]
    def __init__(self, records: _Optional[_Iterable[_Union[AccessRecord, _Mapping]]] = ...) -> None: ...

from facepipe.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PersonFace(_message.Message):
    __slots__ = ("point_id", "image_sha256", "face_index", "url", "site", "bbox", "crop", "thumb", "quality", "taken_at_ms", "indexed_at_ms", "pinned")
    POINT_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SHA256_FIELD_NUMBER: _ClassVar[int]
    FACE_INDEX_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    BBOX_FIELD_NUMBER: _ClassVar[int]
    CROP_FIELD_NUMBER: _ClassVar[int]
    THUMB_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    TAKEN_AT_MS_FIELD_NUMBER: _ClassVar[int]
    INDEXED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    PINNED_FIELD_NUMBER: _ClassVar[int]
    point_id: str
    image_sha256: str
    face_index: int
    url: str
    site: str
    bbox: _common_pb2.BoundingBox
    crop: _common_pb2.ObjectRef
    thumb: _common_pb2.ObjectRef
    quality: float
    taken_at_ms: int
    indexed_at_ms: int
    pinned: bool
    def __init__(self, point_id: _Optional[str] = ..., image_sha256: _Optional[str] = ..., face_index: _Optional[int] = ..., url: _Optional[str] = ..., site: _Optional[str] = ..., bbox: _Optional[_Union[_common_pb2.BoundingBox, _Mapping]] = ..., crop: _Optional[_Union[_common_pb2.ObjectRef, _Mapping]] = ..., thumb: _Optional[_Union[_common_pb2.ObjectRef, _Mapping]] = ..., quality: _Optional[float] = ..., taken_at_ms: _Optional[int] = ..., indexed_at_ms: _Optional[int] = ..., pinned: _Optional[bool] = ...) -> None: ...

class Person(_message.Message):
    __slots__ = ("person_id", "tenant_id", "name", "face_count", "best_face", "hidden", "created_at_ms", "updated_at_ms", "faces")
    PERSON_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    FACE_COUNT_FIELD_NUMBER: _ClassVar[int]
    BEST_FACE_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    FACES_FIELD_NUMBER: _ClassVar[int]
    person_id: str
    tenant_id: str
    name: str
    face_count: int
    best_face: PersonFace
    hidden: bool
    created_at_ms: int
    updated_at_ms: int
    faces: _containers.RepeatedCompositeFieldContainer[PersonFace]
    def __init__(self, person_id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., name: _Optional[str] = ..., face_count: _Optional[int] = ..., best_face: _Optional[_Union[PersonFace, _Mapping]] = ..., hidden: _Optional[bool] = ..., created_at_ms: _Optional[int] = ..., updated_at_ms: _Optional[int] = ..., faces: _Optional[_Iterable[_Union[PersonFace, _Mapping]]] = ...) -> None: ...

class ListPersonsRequest(_message.Message):
    __slots__ = ("tenant_id", "include_hidden", "with_faces", "page_size", "page_token", "min_faces")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_HIDDEN_FIELD_NUMBER: _ClassVar[int]
    WITH_FACES_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    MIN_FACES_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    include_hidden: bool
    with_faces: bool
    page_size: int
    page_token: str
    min_faces: int
    def __init__(self, tenant_id: _Optional[str] = ..., include_hidden: _Optional[bool] = ..., with_faces: _Optional[bool] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., min_faces: _Optional[int] = ...) -> None: ...

class ListPersonsResponse(_message.Message):
    __slots__ = ("persons", "next_page_token")
    PERSONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    persons: _containers.RepeatedCompositeFieldContainer[Person]
    next_page_token: str
    def __init__(self, persons: _Optional[_Iterable[_Union[Person, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetPersonRequest(_message.Message):
    __slots__ = ("tenant_id", "person_id", "page_size", "page_token")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    PERSON_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    person_id: str
    page_size: int
    page_token: str
    def __init__(self, tenant_id: _Optional[str] = ..., person_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class GetPersonResponse(_message.Message):
    __slots__ = ("person", "next_page_token")
    PERSON_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    person: Person
    next_page_token: str
    def __init__(self, person: _Optional[_Union[Person, _Mapping]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class RenamePersonRequest(_message.Message):
    __slots__ = ("tenant_id", "person_id", "name")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    PERSON_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    person_id: str
    name: str
    def __init__(self, tenant_id: _Optional[str] = ..., person_id: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class MergePersonsRequest(_message.Message):
    __slots__ = ("tenant_id", "into_person_id", "person_ids")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    INTO_PERSON_ID_FIELD_NUMBER: _ClassVar[int]
    PERSON_IDS_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    into_person_id: str
    person_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, tenant_id: _Optional[str] = ..., into_person_id: _Optional[str] = ..., person_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class SplitPersonRequest(_message.Message):
    __slots__ = ("tenant_id", "person_id", "point_ids", "to_person_id", "name")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    PERSON_ID_FIELD_NUMBER: _ClassVar[int]
    POINT_IDS_FIELD_NUMBER: _ClassVar[int]
    TO_PERSON_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    person_id: str
    point_ids: _containers.RepeatedScalarFieldContainer[str]
    to_person_id: str
    name: str
    def __init__(self, tenant_id: _Optional[str] = ..., person_id: _Optional[str] = ..., point_ids: _Optional[_Iterable[str]] = ..., to_person_id: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class SplitPersonResponse(_message.Message):
    __slots__ = ("from_person", "to_person")
    FROM_PERSON_FIELD_NUMBER: _ClassVar[int]
    TO_PERSON_FIELD_NUMBER: _ClassVar[int]
    from_person: Person
    to_person: Person
    def __init__(self, from_person: _Optional[_Union[Person, _Mapping]] = ..., to_person: _Optional[_Union[Person, _Mapping]] = ...) -> None: ...

class HidePersonRequest(_message.Message):
    __slots__ = ("tenant_id", "person_id", "hidden")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    PERSON_ID_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    person_id: str
    hidden: bool
    def __init__(self, tenant_id: _Optional[str] = ..., person_id: _Optional[str] = ..., hidden: _Optional[bool] = ...) -> None: ...

class PersonResponse(_message.Message):
    __slots__ = ("person",)
    PERSON_FIELD_NUMBER: _ClassVar[int]
    person: Person
    def __init__(self, person: _Optional[_Union[Person, _Mapping]] = ...) -> None: ...

class UnassignFaceRequest(_message.Message):
    __slots__ = ("tenant_id", "point_id")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    POINT_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    point_id: str
    def __init__(self, tenant_id: _Optional[str] = ..., point_id: _Optional[str] = ...) -> None: ...

class UnassignFaceResponse(_message.Message):
    __slots__ = ("person_id", "person_removed")
    PERSON_ID_FIELD_NUMBER: _ClassVar[int]
    PERSON_REMOVED_FIELD_NUMBER: _ClassVar[int]
    person_id: str
    person_removed: bool
    def __init__(self, person_id: _Optional[str] = ..., person_removed: _Optional[bool] = ...) -> None: ...

class ReclusterRequest(_message.Message):
    __slots__ = ("tenant_id", "wait", "status_only")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    STATUS_ONLY_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    wait: bool
    status_only: bool
    def __init__(self, tenant_id: _Optional[str] = ..., wait: _Optional[bool] = ..., status_only: _Optional[bool] = ...) -> None: ...

class ReclusterResponse(_message.Message):
    __slots__ = ("state", "faces", "persons_before", "persons_after", "faces_moved", "seconds", "error", "started_at_ms", "automatic")
    STATE_FIELD_NUMBER: _ClassVar[int]
    FACES_FIELD_NUMBER: _ClassVar[int]
    PERSONS_BEFORE_FIELD_NUMBER: _ClassVar[int]
    PERSONS_AFTER_FIELD_NUMBER: _ClassVar[int]
    FACES_MOVED_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    AUTOMATIC_FIELD_NUMBER: _ClassVar[int]
    state: str
    faces: int
    persons_before: int
    persons_after: int
    faces_moved: int
    seconds: float
    error: str
    started_at_ms: int
    automatic: bool
    def __init__(self, state: _Optional[str] = ..., faces: _Optional[int] = ..., persons_before: _Optional[int] = ..., persons_after: _Optional[int] = ..., faces_moved: _Optional[int] = ..., seconds: _Optional[float] = ..., error: _Optional[str] = ..., started_at_ms: _Optional[int] = ..., automatic: _Optional[bool] = ...) -> None: ...

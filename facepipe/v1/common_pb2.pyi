from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class QualityReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    QUALITY_REASON_UNSPECIFIED: _ClassVar[QualityReason]
    QUALITY_REASON_LOW_SCORE: _ClassVar[QualityReason]
    QUALITY_REASON_TOO_SMALL: _ClassVar[QualityReason]
    QUALITY_REASON_BLURRY: _ClassVar[QualityReason]
    QUALITY_REASON_POSE_YAW: _ClassVar[QualityReason]
    QUALITY_REASON_POSE_ROLL: _ClassVar[QualityReason]
    QUALITY_REASON_NO_LANDMARKS: _ClassVar[QualityReason]

class ErrorCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_CODE_UNSPECIFIED: _ClassVar[ErrorCode]
    ERROR_CODE_EMPTY: _ClassVar[ErrorCode]
    ERROR_CODE_UNDECODABLE: _ClassVar[ErrorCode]
    ERROR_CODE_TOO_LARGE: _ClassVar[ErrorCode]
    ERROR_CODE_NOT_FOUND: _ClassVar[ErrorCode]
    ERROR_CODE_INVALID_ARGUMENT: _ClassVar[ErrorCode]
    ERROR_CODE_INTERNAL: _ClassVar[ErrorCode]
    ERROR_CODE_FETCH_FAILED: _ClassVar[ErrorCode]
QUALITY_REASON_UNSPECIFIED: QualityReason
QUALITY_REASON_LOW_SCORE: QualityReason
QUALITY_REASON_TOO_SMALL: QualityReason
QUALITY_REASON_BLURRY: QualityReason
QUALITY_REASON_POSE_YAW: QualityReason
QUALITY_REASON_POSE_ROLL: QualityReason
QUALITY_REASON_NO_LANDMARKS: QualityReason
ERROR_CODE_UNSPECIFIED: ErrorCode
ERROR_CODE_EMPTY: ErrorCode
ERROR_CODE_UNDECODABLE: ErrorCode
ERROR_CODE_TOO_LARGE: ErrorCode
ERROR_CODE_NOT_FOUND: ErrorCode
ERROR_CODE_INVALID_ARGUMENT: ErrorCode
ERROR_CODE_INTERNAL: ErrorCode
ERROR_CODE_FETCH_FAILED: ErrorCode

class ObjectRef(_message.Message):
    __slots__ = ("bucket", "key")
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    bucket: str
    key: str
    def __init__(self, bucket: _Optional[str] = ..., key: _Optional[str] = ...) -> None: ...

class ImageInput(_message.Message):
    __slots__ = ("id", "data", "ref")
    ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    REF_FIELD_NUMBER: _ClassVar[int]
    id: str
    data: bytes
    ref: ObjectRef
    def __init__(self, id: _Optional[str] = ..., data: _Optional[bytes] = ..., ref: _Optional[_Union[ObjectRef, _Mapping]] = ...) -> None: ...

class BoundingBox(_message.Message):
    __slots__ = ("x1", "y1", "x2", "y2")
    X1_FIELD_NUMBER: _ClassVar[int]
    Y1_FIELD_NUMBER: _ClassVar[int]
    X2_FIELD_NUMBER: _ClassVar[int]
    Y2_FIELD_NUMBER: _ClassVar[int]
    x1: float
    y1: float
    x2: float
    y2: float
    def __init__(self, x1: _Optional[float] = ..., y1: _Optional[float] = ..., x2: _Optional[float] = ..., y2: _Optional[float] = ...) -> None: ...

class Point(_message.Message):
    __slots__ = ("x", "y")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    x: float
    y: float
    def __init__(self, x: _Optional[float] = ..., y: _Optional[float] = ...) -> None: ...

class Quality(_message.Message):
    __slots__ = ("score", "accepted", "reasons", "size_px", "blur", "yaw", "roll")
    SCORE_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    SIZE_PX_FIELD_NUMBER: _ClassVar[int]
    BLUR_FIELD_NUMBER: _ClassVar[int]
    YAW_FIELD_NUMBER: _ClassVar[int]
    ROLL_FIELD_NUMBER: _ClassVar[int]
    score: float
    accepted: bool
    reasons: _containers.RepeatedScalarFieldContainer[QualityReason]
    size_px: float
    blur: float
    yaw: float
    roll: float
    def __init__(self, score: _Optional[float] = ..., accepted: _Optional[bool] = ..., reasons: _Optional[_Iterable[_Union[QualityReason, str]]] = ..., size_px: _Optional[float] = ..., blur: _Optional[float] = ..., yaw: _Optional[float] = ..., roll: _Optional[float] = ...) -> None: ...

class Face(_message.Message):
    __slots__ = ("box", "score", "landmarks", "quality")
    BOX_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    LANDMARKS_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    box: BoundingBox
    score: float
    landmarks: _containers.RepeatedCompositeFieldContainer[Point]
    quality: Quality
    def __init__(self, box: _Optional[_Union[BoundingBox, _Mapping]] = ..., score: _Optional[float] = ..., landmarks: _Optional[_Iterable[_Union[Point, _Mapping]]] = ..., quality: _Optional[_Union[Quality, _Mapping]] = ...) -> None: ...

class Embedding(_message.Message):
    __slots__ = ("vector", "model", "dim")
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    vector: _containers.RepeatedScalarFieldContainer[float]
    model: str
    dim: int
    def __init__(self, vector: _Optional[_Iterable[float]] = ..., model: _Optional[str] = ..., dim: _Optional[int] = ...) -> None: ...

class ImageError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: ErrorCode
    message: str
    def __init__(self, code: _Optional[_Union[ErrorCode, str]] = ..., message: _Optional[str] = ...) -> None: ...

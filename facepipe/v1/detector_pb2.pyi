from facepipe.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DetectOptions(_message.Message):
    __slots__ = ("score_threshold", "max_faces", "input_size", "include_rejected")
    SCORE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MAX_FACES_FIELD_NUMBER: _ClassVar[int]
    INPUT_SIZE_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_REJECTED_FIELD_NUMBER: _ClassVar[int]
    score_threshold: float
    max_faces: int
    input_size: int
    include_rejected: bool
    def __init__(self, score_threshold: _Optional[float] = ..., max_faces: _Optional[int] = ..., input_size: _Optional[int] = ..., include_rejected: _Optional[bool] = ...) -> None: ...

class DetectBatchRequest(_message.Message):
    __slots__ = ("images", "options")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[_common_pb2.ImageInput]
    options: DetectOptions
    def __init__(self, images: _Optional[_Iterable[_Union[_common_pb2.ImageInput, _Mapping]]] = ..., options: _Optional[_Union[DetectOptions, _Mapping]] = ...) -> None: ...

class ImageDetections(_message.Message):
    __slots__ = ("id", "faces", "error", "width", "height")
    ID_FIELD_NUMBER: _ClassVar[int]
    FACES_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    id: str
    faces: _containers.RepeatedCompositeFieldContainer[_common_pb2.Face]
    error: _common_pb2.ImageError
    width: int
    height: int
    def __init__(self, id: _Optional[str] = ..., faces: _Optional[_Iterable[_Union[_common_pb2.Face, _Mapping]]] = ..., error: _Optional[_Union[_common_pb2.ImageError, _Mapping]] = ..., width: _Optional[int] = ..., height: _Optional[int] = ...) -> None: ...

class DetectBatchResponse(_message.Message):
    __slots__ = ("results", "model")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ImageDetections]
    model: str
    def __init__(self, results: _Optional[_Iterable[_Union[ImageDetections, _Mapping]]] = ..., model: _Optional[str] = ...) -> None: ...

from facepipe.v1 import pipeline_pb2 as _pipeline_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class IngestResponse(_message.Message):
    __slots__ = ("batch_id", "message_id")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    message_id: str
    def __init__(self, batch_id: _Optional[str] = ..., message_id: _Optional[str] = ...) -> None: ...

"""facepipe.v1.Extractor over gRPC: queues an IngestRequest after validating it."""

from __future__ import annotations

import uuid

import grpc

from facepipe import bus
from facepipe.v1 import extractor_pb2, extractor_pb2_grpc, pipeline_pb2
from services.extractor.consumer import validate


class ExtractorServicer(extractor_pb2_grpc.ExtractorServicer):
    def __init__(self, service) -> None:
        self.service = service  # ExtractorService: js once connected to NATS

    async def Ingest(self, request: pipeline_pb2.IngestRequest, context) -> extractor_pb2.IngestResponse:
        if self.service.js is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "no NATS configured (FACEPIPE_NATS_URL)")
        try:
            validate(request)
        except bus.PermanentError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        queued = pipeline_pb2.IngestRequest()
        queued.CopyFrom(request)
        queued.batch_id = request.batch_id or uuid.uuid4().hex
        queued.message_id = request.message_id or uuid.uuid4().hex
        await bus.publish(
            self.service.js,
            bus.SUBJECT_INGEST,
            queued.SerializeToString(),
            msg_id=f"ingest.{queued.message_id}",
        )
        return extractor_pb2.IngestResponse(batch_id=queued.batch_id, message_id=queued.message_id)

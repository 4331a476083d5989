"""facepipe.v1.Extractor over gRPC: queues an IngestRequest after validating it."""

from __future__ import annotations

import uuid

import grpc

from facepipe import bus
from facepipe.pipeline import Loaded
from facepipe.v1 import extractor_pb2, extractor_pb2_grpc, pipeline_pb2

from .stage import ExtractorDeps, validate


class ExtractorServicer(extractor_pb2_grpc.ExtractorServicer):
    def __init__(self, loaded: Loaded[ExtractorDeps]) -> None:
        self.loaded = loaded

    async def Ingest(self, request: pipeline_pb2.IngestRequest, context) -> extractor_pb2.IngestResponse:
        deps = await self.loaded.require(context, "the extractor is still starting")
        if not deps.output.connected:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "no NATS configured (FACEPIPE_NATS_URL)")
        try:
            validate(request)
        except bus.PermanentError as exc:
            refused = exc.reason == "foreign_object"
            code = grpc.StatusCode.PERMISSION_DENIED if refused else grpc.StatusCode.INVALID_ARGUMENT
            await context.abort(code, str(exc))
        queued = pipeline_pb2.IngestRequest()
        queued.CopyFrom(request)
        queued.batch_id = request.batch_id or uuid.uuid4().hex
        queued.message_id = request.message_id or uuid.uuid4().hex
        await deps.output.publish(
            bus.SUBJECT_INGEST, queued.SerializeToString(), msg_id=f"ingest.{queued.message_id}"
        )
        return extractor_pb2.IngestResponse(batch_id=queued.batch_id, message_id=queued.message_id)


def register(server: grpc.aio.Server, loaded: Loaded[ExtractorDeps]) -> list[str]:
    extractor_pb2_grpc.add_ExtractorServicer_to_server(ExtractorServicer(loaded), server)
    return [extractor_pb2.DESCRIPTOR.services_by_name["Extractor"].full_name]

"""facepipe.v1.Embedder over gRPC."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np

from facepipe.faces import FaceEmbedder
from facepipe.imaging import ImageError, decode_image
from facepipe.pipeline import Loaded
from facepipe.protoconv import embedding_to_proto, image_bytes, image_error, landmarks_from_proto
from facepipe.runtime import metrics
from facepipe.v1 import embedder_pb2, embedder_pb2_grpc

from .stage import EmbedderDeps

MAX_INPUTS_PER_BATCH = 256


class InvalidInput(ImageError):
    code = "INVALID_ARGUMENT"


class EmbedderServicer(embedder_pb2_grpc.EmbedderServicer):
    def __init__(self, loaded: Loaded[EmbedderDeps]) -> None:
        self.loaded = loaded

    async def EmbedBatch(
        self, request: embedder_pb2.EmbedBatchRequest, context
    ) -> embedder_pb2.EmbedBatchResponse:
        deps = await self.loaded.require(context, "models are still loading")
        if len(request.inputs) > MAX_INPUTS_PER_BATCH:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"at most {MAX_INPUTS_PER_BATCH} inputs per batch"
            )
        embedder, objects = deps.embedder, deps.objects

        async def one(index: int, item: embedder_pb2.EmbedInput) -> embedder_pb2.EmbedResult:
            item_id = item.id or str(index)
            try:
                crops = await _crops(embedder, item, deps.max_pixels, objects)
                vectors = await embedder.embed_crops(crops)
            except (ImageError, ValueError) as exc:
                err = exc if isinstance(exc, ImageError) else InvalidInput(str(exc))
                return embedder_pb2.EmbedResult(id=item_id, error=image_error(err))
            metrics.EMBEDDINGS.labels("embedder", embedder.model_name).inc(len(vectors))
            return embedder_pb2.EmbedResult(
                id=item_id, embeddings=[embedding_to_proto(v, embedder.model_name) for v in vectors]
            )

        results = await asyncio.gather(*(one(i, x) for i, x in enumerate(request.inputs)))
        return embedder_pb2.EmbedBatchResponse(results=results, model=embedder.model_name, dim=embedder.dim)


async def _crops(
    embedder: FaceEmbedder, item: embedder_pb2.EmbedInput, max_pixels: int, objects
) -> list[np.ndarray]:
    if item.aligned_crops:
        if item.faces:
            raise InvalidInput("give either faces with an image or aligned_crops, not both")
        return await asyncio.to_thread(
            lambda: [_aligned(embedder, c, max_pixels) for c in item.aligned_crops]
        )
    if not item.faces:
        raise InvalidInput("nothing to embed: no faces and no aligned_crops")
    if not item.HasField("image"):
        raise InvalidInput("faces need the image they were detected in")
    data = await image_bytes(item.image, objects)
    image = await asyncio.to_thread(decode_image, data, max_pixels)
    landmarks = [landmarks_from_proto(f) for f in item.faces]
    return await asyncio.to_thread(lambda: [embedder.align(image.bgr, lmk) for lmk in landmarks])


def register(server: grpc.aio.Server, loaded: Loaded[EmbedderDeps]) -> list[str]:
    embedder_pb2_grpc.add_EmbedderServicer_to_server(EmbedderServicer(loaded), server)
    return [embedder_pb2.DESCRIPTOR.services_by_name["Embedder"].full_name]


def _aligned(embedder: FaceEmbedder, data: bytes, max_pixels: int) -> np.ndarray:
    import cv2

    img = decode_image(data, max_pixels).bgr
    h, w = img.shape[:2]
    if h != w:
        raise InvalidInput(f"aligned crops must be square ({embedder.size}x{embedder.size}), got {w}x{h}")
    if h != embedder.size:
        img = cv2.resize(img, (embedder.size, embedder.size), interpolation=cv2.INTER_AREA)
    return img

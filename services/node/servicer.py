"""facepipe.v1.InferenceNode: runs batched tensors on this machine's best provider.

The node has no stage: what it serves are the models themselves, so the
dependencies opened here are the pack's models, loaded on the preferred
provider (DirectML on Windows, CUDA where present, CPU)."""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass

import grpc

from facepipe.aio import ordered_map
from facepipe.inference import LocalInference, from_tensor, to_tensor
from facepipe.models.registry import load_pack
from facepipe.pipeline import Loaded, Opened
from facepipe.runtime import metrics
from facepipe.v1 import inference_pb2, inference_pb2_grpc


@dataclass(frozen=True)
class NodeDeps:
    inference: LocalInference


async def open_deps(opened: Opened) -> NodeDeps:
    s = opened.settings
    pack = await asyncio.to_thread(load_pack, s.resolved_models_dir, s.detector_model, s.recognizer_model)
    local = LocalInference(pack.directory, s.providers, s.intra_op_threads, opened.name, s.workers)
    try:
        for path in (pack.detector, pack.recognizer):
            await asyncio.to_thread(local.model, path.name)
    except BaseException:
        local.close()
        raise
    return NodeDeps(local)


async def close_deps(deps: NodeDeps) -> None:
    deps.inference.close()


class InferenceNodeServicer(inference_pb2_grpc.InferenceNodeServicer):
    def __init__(self, loaded: Loaded[NodeDeps]) -> None:
        self.loaded = loaded

    async def Infer(self, request_iterator, context):
        async for result in ordered_map(request_iterator, self._infer_one, max_inflight=2):
            yield result

    async def _infer_one(self, batch: inference_pb2.TensorBatch) -> inference_pb2.TensorBatchResult:
        deps = self.loaded.value
        if deps is None:
            return inference_pb2.TensorBatchResult(batch_id=batch.batch_id, error="models are still loading")
        local = deps.inference
        start = time.perf_counter()
        try:
            if len(batch.inputs) != 1:
                raise ValueError(f"expected 1 input tensor, got {len(batch.inputs)}")
            model = local.model(batch.model)
            blob = from_tensor(batch.inputs[0])
            outputs = await local.run(batch.model, blob)
        except Exception as exc:  # noqa: BLE001 - reported to the caller, which backs off or falls back
            return inference_pb2.TensorBatchResult(
                batch_id=batch.batch_id, error=f"{type(exc).__name__}: {exc}"
            )
        metrics.BATCH_SIZE.labels("node", batch.model).observe(blob.shape[0])
        return inference_pb2.TensorBatchResult(
            batch_id=batch.batch_id,
            outputs=[to_tensor(name, out) for name, out in zip(model.output_names, outputs, strict=True)],
            provider=model.provider,
            infer_ms=(time.perf_counter() - start) * 1000.0,
        )

    async def ListModels(self, request, context) -> inference_pb2.ListModelsResponse:
        deps = self.loaded.value
        models = []
        for name, m in sorted((deps.inference.loaded if deps else {}).items()):
            shape = [d if isinstance(d, int) and d > 0 else -1 for d in m.inputs[0].shape]
            models.append(
                inference_pb2.ModelInfo(
                    name=name, input_shape=shape, dynamic_batch=m.batch_dynamic, provider=m.provider
                )
            )
        return inference_pb2.ListModelsResponse(models=models, node=socket.gethostname())


def register(server: grpc.aio.Server, loaded: Loaded[NodeDeps]) -> list[str]:
    inference_pb2_grpc.add_InferenceNodeServicer_to_server(InferenceNodeServicer(loaded), server)
    return [inference_pb2.DESCRIPTOR.services_by_name["InferenceNode"].full_name]

"""facepipe.v1.InferenceNode: runs batched tensors on this machine's best provider."""

from __future__ import annotations

import time

from facepipe.aio import ordered_map
from facepipe.inference import LocalInference, from_tensor, to_tensor
from facepipe.runtime import metrics
from facepipe.v1 import inference_pb2, inference_pb2_grpc


class InferenceNodeServicer(inference_pb2_grpc.InferenceNodeServicer):
    def __init__(self, service) -> None:
        self.service = service

    async def Infer(self, request_iterator, context):
        async for result in ordered_map(request_iterator, self._infer_one, max_inflight=2):
            yield result

    async def _infer_one(self, batch: inference_pb2.TensorBatch) -> inference_pb2.TensorBatchResult:
        local: LocalInference | None = self.service.inference
        if local is None:
            return inference_pb2.TensorBatchResult(batch_id=batch.batch_id, error="models are still loading")
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
        local: LocalInference | None = self.service.inference
        models = []
        for name, m in sorted((local.loaded if local else {}).items()):
            shape = [d if isinstance(d, int) and d > 0 else -1 for d in m.inputs[0].shape]
            models.append(
                inference_pb2.ModelInfo(
                    name=name, input_shape=shape, dynamic_batch=m.batch_dynamic, provider=m.provider
                )
            )
        return inference_pb2.ListModelsResponse(models=models, node=self.service.node_name)

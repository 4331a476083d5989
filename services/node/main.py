"""Inference node entrypoint: ``facepipe serve node``. Loads every model of the
pack on the preferred provider (DirectML on Windows, CUDA where present, CPU)."""

from __future__ import annotations

import asyncio
import socket

from facepipe.config import Settings
from facepipe.inference import LocalInference
from facepipe.models.registry import load_pack
from facepipe.runtime.server import Service, run_service
from facepipe.v1 import inference_pb2, inference_pb2_grpc
from services.node.servicer import InferenceNodeServicer


class NodeService(Service):
    name = "node"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.inference: LocalInference | None = None
        self.node_name = socket.gethostname()

    def register(self, server) -> list[str]:
        inference_pb2_grpc.add_InferenceNodeServicer_to_server(InferenceNodeServicer(self), server)
        return [inference_pb2.DESCRIPTOR.services_by_name["InferenceNode"].full_name]

    async def start(self, runtime) -> None:
        s = self.settings
        pack = await asyncio.to_thread(load_pack, s.resolved_models_dir, s.detector_model, s.recognizer_model)
        local = LocalInference(pack.directory, s.providers, s.intra_op_threads, self.name, s.workers)
        for path in (pack.detector, pack.recognizer):
            await asyncio.to_thread(local.model, path.name)
        self.inference = local

    async def stop(self) -> None:
        if self.inference:
            self.inference.close()

    def ready_checks(self):
        async def models() -> tuple[bool, str]:
            return self.inference is not None, "models not loaded"

        return {"models": models}


def main(settings: Settings) -> None:
    run_service(NodeService(settings), settings)

"""Where tensors get run: in-process ONNX Runtime, or streamed to inference
nodes (``FACEPIPE_INFERENCE_NODES``) with in-process fallback when a node is
missing or fails."""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import time
import uuid
from pathlib import Path

import grpc
import numpy as np

from facepipe.auth.client import aio_channel
from facepipe.config import TlsSettings
from facepipe.models.session import OnnxModel
from facepipe.runtime import metrics
from facepipe.v1 import inference_pb2, inference_pb2_grpc

log = logging.getLogger("facepipe.inference")

_DTYPES = {
    np.dtype(np.float32): inference_pb2.DATA_TYPE_FLOAT32,
    np.dtype(np.float16): inference_pb2.DATA_TYPE_FLOAT16,
    np.dtype(np.uint8): inference_pb2.DATA_TYPE_UINT8,
    np.dtype(np.int64): inference_pb2.DATA_TYPE_INT64,
}
_NP = {v: k for k, v in _DTYPES.items()}
NODE_RETRY_SECONDS = 10.0
NODE_TIMEOUT_SECONDS = 60.0
GRPC_OPTIONS = [("grpc.max_receive_message_length", 256 << 20), ("grpc.max_send_message_length", 256 << 20)]


def to_tensor(name: str, arr: np.ndarray) -> inference_pb2.Tensor:
    arr = np.ascontiguousarray(arr)
    if arr.dtype not in _DTYPES:
        raise TypeError(f"unsupported tensor dtype {arr.dtype}")
    return inference_pb2.Tensor(
        name=name, shape=list(arr.shape), dtype=_DTYPES[arr.dtype], data=arr.tobytes()
    )


def from_tensor(t: inference_pb2.Tensor) -> np.ndarray:
    if t.dtype not in _NP:
        raise ValueError(f"unsupported tensor dtype {t.dtype}")
    arr = np.frombuffer(t.data, dtype=_NP[t.dtype])
    expected = int(np.prod(t.shape)) if len(t.shape) else 1
    if arr.size != expected:
        raise ValueError(f"tensor {t.name!r}: {arr.size} values for shape {list(t.shape)}")
    return arr.reshape(tuple(t.shape))


class LocalInference:
    """In-process ONNX Runtime over the files of one model pack."""

    def __init__(
        self,
        directory: Path,
        providers,
        intra_op_threads: int = 0,
        service: str = "facepipe",
        workers: int = 0,
    ) -> None:
        self.directory = Path(directory)
        self.providers = tuple(providers)
        self.intra_op_threads = intra_op_threads
        self.workers = workers
        self.service = service
        self._models: dict[str, OnnxModel] = {}

    def model(self, name: str) -> OnnxModel:
        m = self._models.get(name)
        if m is None:
            path = self.directory / name
            if "/" in name or not path.is_file():
                raise FileNotFoundError(f"model {name!r} is not in {self.directory}")
            m = self._models[name] = OnnxModel(
                path, self.providers, self.intra_op_threads, self.service, self.workers
            )
        return m

    @property
    def loaded(self) -> dict[str, OnnxModel]:
        return dict(self._models)

    async def run(self, model: str, blob: np.ndarray) -> list[np.ndarray]:
        m = self.model(model)
        start = time.perf_counter()
        outs = await asyncio.to_thread(m.run_batch, blob)
        metrics.INFERENCE_LATENCY.labels(self.service, model, "local").observe(time.perf_counter() - start)
        return outs

    def close(self) -> None:
        for m in self._models.values():
            m.close()


class NodeUnavailable(RuntimeError):
    pass


class NodeClient:
    """One long-lived Infer stream to a node; replies arrive in request order."""

    def __init__(self, address: str, key: str | None = None, tls: TlsSettings | None = None) -> None:
        self.address = address
        self.key = key  # the deployment's service credential
        self.tls = tls  # None: the environment's
        # Channels bind to the running event loop, so they are made on first use.
        self.channel: grpc.aio.Channel | None = None
        self._call = None
        self._pending: collections.deque[asyncio.Future] = collections.deque()
        self._lock = asyncio.Lock()
        self._reader: asyncio.Task | None = None
        self.down_until = 0.0

    @property
    def available(self) -> bool:
        return time.monotonic() >= self.down_until

    async def infer(self, model: str, blob: np.ndarray, input_name: str = "input") -> list[np.ndarray]:
        request = inference_pb2.TensorBatch(
            batch_id=uuid.uuid4().hex, model=model, inputs=[to_tensor(input_name, blob)]
        )
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        async with self._lock:
            try:
                if self._call is None:
                    if self.channel is None:
                        self.channel = aio_channel(self.address, self.key, options=GRPC_OPTIONS, tls=self.tls)
                    self._call = inference_pb2_grpc.InferenceNodeStub(self.channel).Infer()
                    self._reader = asyncio.create_task(self._read(self._call))
                self._pending.append(fut)
                await self._call.write(request)
            except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError) as exc:
                self._fail(exc)
        try:
            result: inference_pb2.TensorBatchResult = await asyncio.wait_for(fut, NODE_TIMEOUT_SECONDS)
        except TimeoutError as exc:
            self._fail(exc)
            raise NodeUnavailable(f"node {self.address} timed out") from exc
        if result.error:
            raise RuntimeError(f"node {self.address}: {result.error}")
        return [from_tensor(t) for t in result.outputs]

    async def _read(self, call) -> None:
        try:
            async for result in call:
                if self._pending:
                    fut = self._pending.popleft()
                    if not fut.done():
                        fut.set_result(result)
            self._fail(NodeUnavailable(f"node {self.address} closed the stream"))
        except (grpc.aio.AioRpcError, asyncio.CancelledError) as exc:
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        self.down_until = time.monotonic() + NODE_RETRY_SECONDS
        if self._call is not None:
            self._call.cancel()
        self._call = None
        while self._pending:
            fut = self._pending.popleft()
            if not fut.done():
                fut.set_exception(NodeUnavailable(f"node {self.address} unavailable: {exc}"))

    async def close(self) -> None:
        if self._call is not None:
            self._call.cancel()
        if self._reader is not None:
            self._reader.cancel()
        if self.channel is not None:
            await self.channel.close()


class RemoteInference:
    """Round-robin over inference nodes; any node failure falls back to ``local``."""

    def __init__(
        self,
        addresses: list[str],
        local: LocalInference,
        service: str = "facepipe",
        key: str | None = None,
        tls: TlsSettings | None = None,
    ) -> None:
        self.nodes = [NodeClient(a, key, tls) for a in addresses]
        self.local = local
        self.service = service
        self._next = itertools.cycle(range(len(self.nodes)))
        self.fallbacks = 0

    def model(self, name: str) -> OnnxModel:
        return self.local.model(name)

    async def run(self, model: str, blob: np.ndarray) -> list[np.ndarray]:
        for _ in range(len(self.nodes)):
            node = self.nodes[next(self._next)]
            if not node.available:
                continue
            start = time.perf_counter()
            try:
                outs = await node.infer(model, blob, self.local.model(model).input_name)
            except NodeUnavailable as exc:
                log.warning("inference node unavailable", extra={"node": node.address, "error": str(exc)})
                continue
            metrics.INFERENCE_LATENCY.labels(self.service, model, node.address).observe(
                time.perf_counter() - start
            )
            return outs
        self.fallbacks += 1
        return await self.local.run(model, blob)

    async def close(self) -> None:
        for node in self.nodes:
            await node.close()
        self.local.close()

"""One small class hides ONNX Runtime: provider choice with fallback, model
I/O introspection, and batched runs whether or not the model's batch axis is
dynamic."""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from facepipe.runtime import metrics

log = logging.getLogger("facepipe.models")

CPU = "CPUExecutionProvider"
DEFAULT_PROVIDERS = ("DmlExecutionProvider", "CUDAExecutionProvider", CPU)


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int | str | None, ...]

    @property
    def batch_dynamic(self) -> bool:
        return not isinstance(self.shape[0], int) or self.shape[0] <= 0


class OnnxModel:
    """An ONNX Runtime session on the best available provider.

    ``run_batch`` takes inputs with the batch on axis 0 and returns outputs with
    the batch on axis 0. A model whose batch axis is fixed at 1 is run item by
    item over a small thread pool; a dynamic one gets the whole batch at once.
    """

    def __init__(
        self,
        path: str | Path,
        providers: tuple[str, ...] | list[str] = DEFAULT_PROVIDERS,
        intra_op_threads: int = 0,
        service: str = "facepipe",
        workers: int = 0,
    ) -> None:
        self.path = Path(path)
        self.name = self.path.name
        self.service = service
        cores = os.cpu_count() or 2
        # Fixed-batch models run items concurrently; the cores are split between them.
        self.workers = workers or max(1, cores // 2)
        if not intra_op_threads:
            intra_op_threads = max(1, cores // self.workers)
        self.session, self.provider = self._create(providers, intra_op_threads)
        self.inputs = [TensorInfo(i.name, tuple(i.shape)) for i in self.session.get_inputs()]
        self.outputs = [TensorInfo(o.name, tuple(o.shape)) for o in self.session.get_outputs()]
        self.output_names = [o.name for o in self.outputs]
        self.batch_dynamic = self.inputs[0].batch_dynamic
        # Fixed-batch models declare outputs either with a leading 1 or with no batch axis.
        self._out_has_batch = [isinstance(o.shape[0], int) and o.shape[0] == 1 for o in self.outputs]
        pool_size = 1 if self.batch_dynamic else self.workers
        self._pool = ThreadPoolExecutor(max_workers=pool_size, thread_name_prefix=f"ort-{self.name}")
        metrics.MODEL_PROVIDER.labels(service, self.name, self.provider).set(1)
        log.info(
            "model loaded",
            extra={"model": self.name, "provider": self.provider, "inputs": [i.shape for i in self.inputs]},
        )

    def _create(self, providers, intra_op_threads: int) -> tuple[ort.InferenceSession, str]:
        available = set(ort.get_available_providers())
        wanted = [p for p in providers if p in available]
        if CPU not in wanted:
            wanted.append(CPU)
        last_error: Exception | None = None
        for i, provider in enumerate(wanted):
            opts = ort.SessionOptions()
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            opts.log_severity_level = 3
            if provider == "DmlExecutionProvider":
                # DirectML needs sequential execution without memory patterns.
                opts.enable_mem_pattern = False
                opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            if intra_op_threads:
                opts.intra_op_num_threads = intra_op_threads
            # Spinning worker threads burn the cores that other stages and decoding need.
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            chain = [provider] if provider == CPU else [provider, CPU]
            try:
                session = ort.InferenceSession(str(self.path), sess_options=opts, providers=chain)
            except Exception as exc:  # noqa: BLE001 - a broken provider falls back to the next one
                last_error = exc
                log.warning("provider failed, falling back", extra={"provider": provider, "error": str(exc)})
                continue
            actual = session.get_providers()[0]
            if actual != provider and i + 1 < len(wanted):
                log.warning("provider unavailable at runtime", extra={"provider": provider, "got": actual})
            return session, actual
        raise RuntimeError(f"could not load {self.path}: {last_error}")

    @property
    def input_name(self) -> str:
        return self.inputs[0].name

    @property
    def input_hw(self) -> tuple[int | None, int | None]:
        """Fixed (height, width) of the first input, None where dynamic."""
        shape = self.inputs[0].shape
        h, w = (shape[2], shape[3]) if len(shape) == 4 else (None, None)
        return (h if isinstance(h, int) and h > 0 else None, w if isinstance(w, int) and w > 0 else None)

    def run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        """One raw session run."""
        return self.session.run(self.output_names, feed)

    def run_batch(self, blob: np.ndarray) -> list[np.ndarray]:
        """Runs N items (axis 0 of ``blob``); every output has the batch on axis 0."""
        n = blob.shape[0]
        if self.batch_dynamic:
            return self.run({self.input_name: blob})
        if n == 1:
            outs = self.run({self.input_name: blob})
            return [o if has else o[None] for o, has in zip(outs, self._out_has_batch, strict=True)]
        per_item = list(self._pool.map(lambda i: self.run({self.input_name: blob[i : i + 1]}), range(n)))
        return [
            np.concatenate([item[k] for item in per_item])
            if has
            else np.stack([item[k] for item in per_item])
            for k, has in enumerate(self._out_has_batch)
        ]

    def close(self) -> None:
        self._pool.shutdown(wait=False)

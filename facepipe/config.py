"""Settings from the environment.

Every field of :class:`Settings` is read from ``FACEPIPE_<FIELD>`` (upper case),
so one process can be configured entirely through env vars, as on Kubernetes.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_PORTS = {
    "detector": 50051,
    "embedder": 50052,
    "indexer": 50053,
    "extractor": 50054,
    "crawler": 50055,
    "node": 50056,
}
# Metrics/health HTTP port = gRPC port + this offset, unless FACEPIPE_HTTP_PORT is set.
HTTP_PORT_OFFSET = 1000


def _home() -> Path:
    return Path(os.environ.get("FACEPIPE_HOME", Path.home() / ".facepipe")).expanduser()


def _parse(value: str, kind: Any) -> Any:
    if kind in (bool, "bool"):
        return value.strip().lower() in ("1", "true", "yes", "on")
    if kind in (int, "int"):
        return int(value)
    if kind in (float, "float"):
        return float(value)
    if kind in ("tuple[str, ...]",):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    if kind in ("Path", "Path | None"):
        return Path(value).expanduser()
    return value


@dataclass(frozen=True)
class Settings:
    # Service identity and ports (0 picks the default for the service).
    service: str = "facepipe"
    # Loopback for local use; containers set FACEPIPE_GRPC_HOST=0.0.0.0 to be reachable.
    grpc_host: str = "127.0.0.1"
    grpc_port: int = 0
    http_port: int = 0
    log_level: str = "INFO"
    # Seconds to drain in-flight work on SIGTERM.
    drain_seconds: float = 10.0

    # Models.
    home: Path = field(default_factory=_home)
    model_pack: str = "local"
    models_dir: Path | None = None
    detector_model: str = ""
    recognizer_model: str = ""
    # Provider preference, first available wins; CPU is always appended.
    providers: tuple[str, ...] = ("DmlExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
    intra_op_threads: int = 0
    # Remote inference nodes, host:port,...; empty means in-process.
    inference_nodes: tuple[str, ...] = ()

    # Detection.
    det_size: int = 640
    det_threshold: float = 0.5
    nms_threshold: float = 0.4
    max_pixels: int = 50_000_000
    max_image_bytes: int = 50 * 1024 * 1024
    max_batch: int = 8
    max_wait_ms: float = 5.0
    workers: int = 0

    # Quality thresholds.
    min_face_score: float = 0.5
    min_face_px: int = 24
    min_blur: float = 15.0
    max_yaw: float = 60.0
    max_roll: float = 45.0

    # Pipeline: NATS JetStream (empty: gRPC only, no stage consumer).
    nats_url: str = ""
    # Messages a stage handles at once; model calls among them are batched.
    max_inflight: int = 16
    dedup_ttl_seconds: float = 30 * 24 * 3600.0
    # Global near-duplicate face dedup (also read from DEDUP_MAX_HAMMING / ENABLE_GLOBAL_DEDUP).
    dedup_max_hamming: int = 8
    enable_global_dedup: bool = True

    # Tracing: OTLP/gRPC endpoint, e.g. http://otel-collector:4317. Empty disables export.
    otlp_endpoint: str = ""

    @classmethod
    def from_env(cls, service: str = "facepipe", **overrides: Any) -> Settings:
        values: dict[str, Any] = {"service": service}
        for f in dataclasses.fields(cls):
            env = f"FACEPIPE_{f.name.upper()}"
            raw = os.environ.get(env)
            if raw is not None and raw != "" and f.name != "service":
                try:
                    values[f.name] = _parse(raw, f.type)
                except ValueError:
                    raise ValueError(f"{env}={raw!r} is not a valid {f.type}") from None
        for name, env in (
            ("dedup_max_hamming", "DEDUP_MAX_HAMMING"),
            ("enable_global_dedup", "ENABLE_GLOBAL_DEDUP"),
        ):
            if os.environ.get(env) and f"FACEPIPE_{env}" not in os.environ:
                values[name] = _parse(os.environ[env], cls.__dataclass_fields__[name].type)
        if not values.get("otlp_endpoint") and os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
            values["otlp_endpoint"] = os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"]
        values.update({k: v for k, v in overrides.items() if v is not None})
        s = cls(**values)
        if not s.grpc_port:
            s = dataclasses.replace(s, grpc_port=DEFAULT_PORTS.get(service, 50050))
        if not s.http_port:
            s = dataclasses.replace(s, http_port=s.grpc_port + HTTP_PORT_OFFSET)
        return s

    @property
    def resolved_models_dir(self) -> Path:
        return self.models_dir or (self.home / "models" / self.model_pack)

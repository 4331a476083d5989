"""Inference node entrypoint: ``facepipe serve node``. Loads every model of the
pack on the preferred provider (DirectML on Windows, CUDA where present, CPU)
and serves facepipe.v1.InferenceNode; it consumes no stage."""

from __future__ import annotations

from facepipe.config import Settings
from facepipe.pipeline import Resources, StageService
from facepipe.runtime.server import run_service

from .servicer import NodeDeps, close_deps, open_deps, register


def build(settings: Settings) -> StageService[NodeDeps]:
    return StageService(
        "node",
        settings,
        open_deps=open_deps,
        close_deps=close_deps,
        register=register,
        resources=Resources(models=True),
    )


def main(settings: Settings) -> None:
    run_service(build(settings), settings)

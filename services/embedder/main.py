"""Embedder service entrypoint: ``facepipe serve embedder``. Serves
facepipe.v1.Embedder and, with NATS configured, consumes the embedder stage."""

from __future__ import annotations

from facepipe.config import Settings
from facepipe.pipeline import Resources, StageService
from facepipe.runtime.server import run_service

from . import stage
from .servicer import register
from .stage import EmbedderDeps


def build(settings: Settings) -> StageService[EmbedderDeps]:
    return StageService(
        "embedder",
        settings,
        open_deps=stage.open_deps,
        close_deps=stage.close_deps,
        register=register,
        stage=stage.STAGE,
        resources=Resources(object_store=True, models=True),
    )


def main(settings: Settings) -> None:
    run_service(build(settings), settings)

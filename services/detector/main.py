"""Detector service entrypoint: ``facepipe serve detector``. Serves
facepipe.v1.Detector and, with NATS configured, consumes the detector stage."""

from __future__ import annotations

from facepipe.config import Settings
from facepipe.pipeline import Resources, StageService
from facepipe.runtime.server import run_service

from . import stage
from .servicer import register
from .stage import DetectorDeps


def build(settings: Settings) -> StageService[DetectorDeps]:
    return StageService(
        "detector",
        settings,
        open_deps=stage.open_deps,
        close_deps=stage.close_deps,
        register=register,
        stage=stage.STAGE,
        resources=Resources(object_store=True, models=True),
    )


def main(settings: Settings) -> None:
    run_service(build(settings), settings)

"""Extractor service entrypoint: ``facepipe serve extractor``.

Consumes the ``facepipe.ingest`` stage (stage.py) and serves
facepipe.v1.Extractor/Ingest, which validates and queues the same message for
producers that speak gRPC (servicer.py).
"""

from __future__ import annotations

from facepipe.config import Settings
from facepipe.pipeline import Resources, StageService
from facepipe.runtime.server import run_service

from . import stage
from .servicer import register
from .stage import ExtractorDeps


def build(settings: Settings) -> StageService[ExtractorDeps]:
    return StageService(
        "extractor",
        settings,
        open_deps=stage.open_deps,
        close_deps=stage.close_deps,
        register=register,
        stage=stage.STAGE,
        resources=Resources(object_store=True),
    )


def main(settings: Settings) -> None:
    run_service(build(settings), settings)

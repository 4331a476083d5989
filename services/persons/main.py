"""Persons service entrypoint: ``facepipe serve persons``.

Consumes the indexer's face events into persons and serves facepipe.v1.Persons; faces
are read and changed through the indexer, records live in NATS KV.
"""

from __future__ import annotations

from facepipe.config import Settings
from facepipe.pipeline import StageService
from facepipe.runtime.server import run_service

from . import stage
from .servicer import register
from .stage import PersonsDeps


def build(settings: Settings) -> StageService[PersonsDeps]:
    return StageService(
        "persons",
        settings,
        open_deps=stage.open_deps,
        close_deps=stage.close_deps,
        register=register,
        stage=stage.STAGE,
        stats=stage.stats,
    )


def main(settings: Settings) -> None:
    run_service(build(settings), settings)

"""Indexer service entrypoint: ``facepipe serve indexer``.

Consumes facepipe.faces.embedded into the vector store and serves
facepipe.v1.Indexer (search, stats, erasure) over the same store; with Qdrant
Edge this process is the only one that opens the shard.
"""

from __future__ import annotations

import functools

from facepipe.config import Settings
from facepipe.pipeline import Resources, StageService
from facepipe.runtime.server import run_service

from . import stage
from .servicer import register
from .stage import IndexerDeps


def build(settings: Settings) -> StageService[IndexerDeps]:
    return StageService(
        "indexer",
        settings,
        open_deps=functools.partial(stage.open_deps, optimize_every=settings.indexer.optimize_every),
        close_deps=stage.close_deps,
        register=register,
        stage=stage.STAGE,
        resources=Resources(object_store=True, vector_store=True, models=True),
        stats=stage.stats,
    )


def main(settings: Settings) -> None:
    run_service(build(settings), settings)

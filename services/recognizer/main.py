"""Recognizer service entrypoint: ``facepipe serve recognizer``.

Serves facepipe.v1.Recognizer: enrolled subjects in a gallery of their own, Verify,
Recognize and RecognizeStream, with the active pack's models in-process. It consumes
no stage of the pipeline."""

from __future__ import annotations

from facepipe.config import Settings
from facepipe.pipeline import Resources, StageService
from facepipe.runtime.server import run_service

from . import stage
from .servicer import register
from .stage import RecognizerDeps


def build(settings: Settings) -> StageService[RecognizerDeps]:
    # The gallery is opened by open_deps: the shared vector store resource is the
    # faces collection, which only the indexer opens.
    return StageService(
        "recognizer",
        settings,
        open_deps=stage.open_deps,
        close_deps=stage.close_deps,
        register=register,
        resources=Resources(object_store=True, models=True),
        stats=stage.stats,
    )


def main(settings: Settings) -> None:
    run_service(build(settings), settings)

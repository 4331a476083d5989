"""The persons stage: consumes the indexer's face events (``facepipe.faces.indexed``,
``facepipe.faces.erased``) with a durable consumer and keeps each tenant's persons
up to date (services/persons/people.py)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError
from nats.aio.msg import Msg

from facepipe import bus
from facepipe.config import Settings
from facepipe.models.registry import pack_thresholds
from facepipe.persons.records import PersonBook
from facepipe.pipeline import Opened, Stage, check_tenant
from facepipe.v1 import pipeline_pb2

from .faces import IndexerFaces
from .people import NewFace, People
from .recluster import Reclusterer

log = logging.getLogger("facepipe.persons")


@dataclass(frozen=True)
class PersonsDeps:
    people: People
    reclusterer: Reclusterer
    cut_distance: float


def cut_distance(settings: Settings) -> float:
    """The cosine distance persons are cut at: the setting, else the model pack's."""
    if settings.persons.cluster_distance:
        return settings.persons.cluster_distance
    value = pack_thresholds(settings.resolved_models_dir).get("persons_cluster_distance")
    if value is None:
        raise ValueError(
            f"the model pack in {settings.resolved_models_dir} has no persons_cluster_distance; "
            "set FACEPIPE_PERSONS_CLUSTER_DISTANCE"
        )
    return value


async def open_deps(opened: Opened) -> PersonsDeps:
    settings = opened.settings
    distance = cut_distance(settings)
    js = opened.output.js
    if js is None:
        raise ValueError("the persons service needs NATS (FACEPIPE_NATS_URL): its records live there")
    book = await PersonBook.open(js)
    faces = IndexerFaces(settings)
    # A person is joined only through a face at least this similar (the pack's verify threshold).
    min_similarity = pack_thresholds(settings.resolved_models_dir).get("same_person_min_score")
    people = People(book, faces, distance, settings.persons.neighbours, min_similarity)
    log.info(
        "persons ready",
        extra={
            "indexer": faces.addr,
            "cut_distance": distance,
            "min_similarity": min_similarity,
            "neighbours": settings.persons.neighbours,
        },
    )
    reclusterer = Reclusterer(
        people, settings.persons.graph_k, settings.persons.settle_s, settings.persons.settle_growth
    )
    return PersonsDeps(people, reclusterer, distance)


async def close_deps(deps: PersonsDeps) -> None:
    await deps.reclusterer.close()
    await deps.people.faces.close()


def decode(msg: Msg) -> Any:
    """A FacesIndexed or FacesErased, by subject."""
    kind = pipeline_pb2.FacesErased if msg.subject == bus.SUBJECT_FACES_ERASED else pipeline_pb2.FacesIndexed
    message = kind()
    try:
        message.ParseFromString(msg.data)
    except DecodeError as exc:
        raise bus.PermanentError(f"malformed {kind.__name__}: {exc}", reason="malformed") from exc
    return message


async def handle(deps: PersonsDeps, delivery: bus.Delivery) -> None:
    event = delivery.payload
    tenant = check_tenant(event.tenant_id)
    if isinstance(event, pipeline_pb2.FacesErased):
        await deps.people.erased(tenant, {f.person_id for f in event.faces if f.person_id}, event.all)
        return
    faces = [
        NewFace(
            point_id=f.point_id,
            quality=f.quality,
            image_sha256=event.image_sha256,
            face_index=f.face_index,
            url=event.url,
            thumb_bucket=f.thumb.bucket,
            thumb_key=f.thumb.key,
        )
        for f in event.faces
    ]
    assigned = await deps.people.assign(tenant, faces)
    deps.reclusterer.assigned(tenant, len(assigned))


async def on_dead(deps: PersonsDeps, msg: Msg, payload: Any, error: str, reason: str) -> None:
    """A dead-lettered event leaves its faces unassigned; a recluster assigns them."""
    log.warning("face event dead-lettered", extra={"error": error, "reason": reason, "subject": msg.subject})


def stats(deps: PersonsDeps) -> dict[str, Any]:
    return {
        **deps.people.counters,
        "cut_distance": deps.cut_distance,
        "tenants_unsettled": len(deps.reclusterer.unsettled),
    }


STAGE: Stage[PersonsDeps] = Stage(
    bus.STAGES["persons"], pipeline_pb2.FacesIndexed, handle, decode=decode, on_dead=on_dead
)

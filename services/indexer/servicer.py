"""facepipe.v1.Indexer over gRPC: search, stats, erasure and opt-outs, each scoped to
one tenant, and the audit log. Search, erasure and opt-out changes are audited by the
server runtime; the handlers add what they returned and affected (facepipe.audit.note)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import uuid
from typing import Any

import grpc
import numpy as np

from facepipe import audit, auth
from facepipe.echo import echo
from facepipe.faces import FaceEngine
from facepipe.imaging import ImageError
from facepipe.optout import OptOut, new_id
from facepipe.photos import clean_folder
from facepipe.pipeline import TENANT_RE, Loaded
from facepipe.protoconv import face_to_proto
from facepipe.storage import FACE_THUMBS_BUCKET, SearchHit, StoredPoint
from facepipe.storage.vectors.base import FilterValue, Range
from facepipe.v1 import common_pb2, indexer_pb2, indexer_pb2_grpc, pipeline_pb2

from .reindex import ReindexRefused
from .stage import SHA256_RE, IndexerDeps, counters, erase_faces, erase_matching, forget_erased

log = logging.getLogger("facepipe.indexer")

DEFAULT_TOP_K = 10
MAX_TOP_K = 1000
FILTER_FIELDS = ("site", "url", "image_sha256", "person_id")
DEFAULT_PAGE_SIZE = 100
# Listing and image counting read at most this many points of a tenant.
MAX_LIST_POINTS = 1_000_000
MAX_OPTOUT_PHOTOS = 20
MAX_NOTE_CHARS = 200
OPTOUT_ID_RE = re.compile(r"^[0-9a-f]{16}$")
COLLECTION_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
DEFAULT_NEIGHBOURS = 20
MAX_GRAPH_K = 200
MAX_SET_FACES = 10_000
PERSON_ID_RE = re.compile(r"^[0-9a-f]{32}$")
DEFAULT_AUDIT_RECORDS = 100
MAX_AUDIT_RECORDS = 10_000


class IndexerServicer(indexer_pb2_grpc.IndexerServicer):
    def __init__(self, loaded: Loaded[IndexerDeps]) -> None:
        self.loaded = loaded

    async def Search(self, request: indexer_pb2.SearchRequest, context) -> indexer_pb2.SearchResponse:
        deps = await self._deps(context)
        store = deps.store
        tenant = await _tenant(request.tenant_id, context)
        top_k = request.top_k or DEFAULT_TOP_K
        if not 1 <= top_k <= MAX_TOP_K:
            await _invalid(context, f"top_k must be between 1 and {MAX_TOP_K}, got {request.top_k}")
        if not math.isfinite(request.min_score) or not -1.0 <= request.min_score <= 1.0:
            await _invalid(
                context, f"min_score must be a cosine similarity in [-1, 1], got {request.min_score}"
            )
        filters: dict[str, FilterValue] = {k: v for k in FILTER_FIELDS if (v := getattr(request.filter, k))}
        filters.update(await _photo_filters(request.filter, context))
        response = indexer_pb2.SearchResponse()
        query = request.WhichOneof("query")
        if query == "image":
            vector = await _image_vector(
                deps.engine, request.image, request.query_face_index, response, context
            )
            if vector is None:
                audit.note(results=0)
                return response
        elif query == "vector":
            vector = await _given_vector(deps, request.vector, context)
        else:
            await _invalid(context, "give a query: image (encoded bytes) or vector")
        await _searchable(deps, tenant, context)
        hits = await asyncio.to_thread(
            store.search, vector, tenant, top_k, request.min_score or None, filters
        )
        response.matches.extend(_match(h) for h in hits)
        await _name_persons(deps, tenant, response.matches)
        audit.note(results=len(hits))
        return response

    async def GetStats(self, request: indexer_pb2.GetStatsRequest, context) -> indexer_pb2.GetStatsResponse:
        deps = await self._deps(context)
        store = deps.store
        tenant = await _tenant(request.tenant_id, context) if request.tenant_id else None
        points = await asyncio.to_thread(store.count, tenant)
        images = 0
        if tenant is not None and request.count_images:
            payloads = await asyncio.to_thread(store.scroll, tenant, None, MAX_LIST_POINTS)
            images = len({p.payload.get("image_sha256") for p in payloads})
        objects = deps.objects
        return indexer_pb2.GetStatsResponse(
            images=images,
            points=points,
            dim=deps.dim,
            model=deps.model,
            # The kind of store only: callers never learn the server's paths or URLs.
            vector_store=_kind(store.describe()),
            collection=deps.collections.active_name if deps.collections is not None else "",
            object_store=_kind(objects.describe()) if objects is not None else "",
            # The stage's counters span every tenant.
            counters=counters(deps) if auth.is_all_tenants() else {},
        )

    async def DeleteFaces(
        self, request: indexer_pb2.DeleteFacesRequest, context
    ) -> indexer_pb2.DeleteFacesResponse:
        deps = await self._deps(context)
        tenant = await _tenant(request.tenant_id, context)
        selector = request.WhichOneof("selector")
        if selector is None or (selector == "all" and not request.all):
            await _invalid(context, "give what to delete: image_sha256, url, site or all=true")
        filters: dict[str, str] | None = None
        if selector != "all":
            value = getattr(request, selector)
            if not value:
                await _invalid(context, f"{selector} is empty")
            if selector == "image_sha256" and not SHA256_RE.match(value):
                await _invalid(context, f"image_sha256 {echo(value)} is not 64 lowercase hex digits")
            filters = {selector: value}
        audit.detail(selector=selector, value=str(getattr(request, selector)) if filters else "")
        stores = await asyncio.to_thread(deps.all_stores)
        async with _erasing(deps, tenant):
            erased = await asyncio.to_thread(erase_faces, stores, deps.objects, tenant, filters)
        if filters is None and deps.collections is not None:
            await asyncio.to_thread(deps.collections.forget_tenant, tenant)
        await forget_erased(deps, tenant, erased, everything=filters is None)
        await deps.writer.note_deleted(erased.points)
        audit.note(points_deleted=erased.points, objects_deleted=erased.objects)
        log.info(
            "faces erased",
            extra={
                "tenant_id": tenant,
                "selector": selector,
                "points": erased.points,
                "objects": erased.objects,
            },
        )
        return indexer_pb2.DeleteFacesResponse(points_deleted=erased.points, objects_deleted=erased.objects)

    async def ListFaces(
        self, request: indexer_pb2.ListFacesRequest, context
    ) -> indexer_pb2.ListFacesResponse:
        deps = await self._deps(context)
        tenant = await _tenant(request.tenant_id, context)
        page_size = request.page_size or DEFAULT_PAGE_SIZE
        if not 1 <= page_size <= MAX_TOP_K:
            await _invalid(context, f"page_size must be between 1 and {MAX_TOP_K}, got {request.page_size}")
        start = 0
        if request.page_token:
            if not request.page_token.isdigit():
                await _invalid(context, f"page_token {echo(request.page_token)} is not one this service gave")
            start = int(request.page_token)
        filters = {}
        if request.person_id:
            filters["person_id"] = await _person_id(request.person_id, context)
        if request.image_sha256:
            if not SHA256_RE.match(request.image_sha256):
                await _invalid(
                    context, f"image_sha256 {echo(request.image_sha256)} is not 64 lowercase hex digits"
                )
            filters["image_sha256"] = request.image_sha256
        # Every model's collection, each face once (a moved face is in two): erasure by site
        # lists the tenant's sites here. Sorted by point id, so pages stay stable while
        # nothing is written.
        stored = await asyncio.to_thread(_all_faces, deps, tenant, filters or None)
        page = stored[start : start + page_size]
        response = indexer_pb2.ListFacesResponse(
            faces=[_match(SearchHit(p.id, 0.0, p.payload)) for p in page],
            pinned_point_ids=[p.id for p in page if p.payload.get("person_pinned")],
        )
        if start + page_size < len(stored):
            response.next_page_token = str(start + page_size)
        return response

    async def OptOut(self, request: indexer_pb2.OptOutRequest, context) -> indexer_pb2.OptOutResponse:
        deps = await self._deps(context)
        tenant = await _tenant(request.tenant_id, context)
        registry, threshold = await _optouts(deps, context)
        # Faces of another model's collection cannot be matched with this model's vectors.
        await _searchable(deps, tenant, context)
        if not request.images:
            await _invalid(context, "give at least one photo of the person")
        if len(request.images) > MAX_OPTOUT_PHOTOS:
            await _invalid(context, f"at most {MAX_OPTOUT_PHOTOS} photos, got {len(request.images)}")
        vectors = [
            await _photo_vector(deps.engine, data, n, context) for n, data in enumerate(request.images, 1)
        ]
        principal = auth.current.get()
        entry = OptOut(
            optout_id=new_id(),
            tenant=tenant,
            vectors=[v.tolist() for v in vectors],
            model=deps.model,
            note=request.note[:MAX_NOTE_CHARS],
            key_id=principal.key_id if principal else "",
        )
        # Registered first, so that no new face of the person is indexed while the old go.
        await registry.add(entry)
        audit.detail(optout_id=entry.optout_id)
        stores = await asyncio.to_thread(deps.all_stores)
        async with _erasing(deps, tenant):
            erased = await asyncio.to_thread(
                erase_matching, deps.store, stores, deps.objects, tenant, vectors, threshold
            )
        await forget_erased(deps, tenant, erased, everything=False)
        await deps.writer.note_deleted(erased.points)
        audit.note(points_deleted=erased.points, objects_deleted=erased.objects)
        log.info(
            "opt-out registered",
            extra={"tenant_id": tenant, "optout_id": entry.optout_id, "points": erased.points},
        )
        return indexer_pb2.OptOutResponse(
            optout_id=entry.optout_id,
            faces=len(vectors),
            points_deleted=erased.points,
            objects_deleted=erased.objects,
            min_score=threshold,
        )

    async def ListOptOuts(
        self, request: indexer_pb2.ListOptOutsRequest, context
    ) -> indexer_pb2.ListOptOutsResponse:
        deps = await self._deps(context)
        tenant = await _tenant(request.tenant_id, context)
        registry, _ = await _optouts(deps, context)
        entries = await registry.list(tenant)
        audit.note(results=len(entries))
        return indexer_pb2.ListOptOutsResponse(
            optouts=[
                indexer_pb2.OptOutEntry(
                    optout_id=e.optout_id,
                    tenant_id=e.tenant,
                    faces=len(e.vectors),
                    note=e.note,
                    created_at_ms=int(e.created_at * 1000),
                    key_id=e.key_id,
                )
                for e in entries
            ]
        )

    async def RemoveOptOut(
        self, request: indexer_pb2.RemoveOptOutRequest, context
    ) -> indexer_pb2.RemoveOptOutResponse:
        deps = await self._deps(context)
        tenant = await _tenant(request.tenant_id, context)
        registry, _ = await _optouts(deps, context)
        if not OPTOUT_ID_RE.match(request.optout_id):
            await _invalid(context, f"optout_id {echo(request.optout_id)} is not 16 hex digits")
        audit.detail(optout_id=request.optout_id)
        if not await registry.remove(tenant, request.optout_id):
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"tenant {tenant} has no opt-out {request.optout_id}"
            )
        audit.note(optouts_removed=1)
        return indexer_pb2.RemoveOptOutResponse()

    async def ListAuditRecords(
        self, request: indexer_pb2.ListAuditRecordsRequest, context
    ) -> indexer_pb2.ListAuditRecordsResponse:
        deps = await self._deps(context)
        # The access rule made an empty tenant the key's own; it stays empty only for
        # callers who may read every tenant's records.
        tenant = await _tenant(request.tenant_id, context) if request.tenant_id else None
        limit = request.limit or DEFAULT_AUDIT_RECORDS
        if not 1 <= limit <= MAX_AUDIT_RECORDS:
            await _invalid(context, f"limit must be between 1 and {MAX_AUDIT_RECORDS}, got {request.limit}")
        if request.since_ms < 0:
            await _invalid(context, f"since_ms must not be negative, got {request.since_ms}")
        js = deps.output.js
        if js is None:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION, "the audit log needs NATS (FACEPIPE_NATS_URL)"
            )
        records = await audit.read(js, tenant, request.since_ms / 1000.0, limit)
        return indexer_pb2.ListAuditRecordsResponse(records=[_audit_proto(r) for r in records])

    async def Reindex(self, request: indexer_pb2.ReindexRequest, context) -> indexer_pb2.ReindexResponse:
        deps = await self._deps(context)
        tenant = await _tenant(request.tenant_id, context)
        if request.from_collection and not COLLECTION_RE.match(request.from_collection):
            await _invalid(
                context,
                f"from_collection {echo(request.from_collection)} is not a collection name: "
                "1-64 letters, digits, '_' or '-'",
            )
        reindexer = deps.reindexer
        if reindexer is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "this indexer cannot reindex")
        audit.detail(from_collection=request.from_collection, drop_old=str(request.drop_old).lower())
        try:
            job = await reindexer.start(tenant, request.from_collection, request.drop_old)
        except ReindexRefused as exc:
            await _invalid(context, str(exc))
        if request.wait and job.task is not None:
            # Shielded: a caller that gives up waiting leaves the reindex running.
            await asyncio.shield(job.task)
        audit.note(points_reindexed=job.reindexed, points_deleted=job.dropped)
        stale_optouts = 0
        if deps.optouts is not None:
            entries = await deps.optouts.list(tenant)
            stale_optouts = sum(1 for e in entries if e.model not in ("", deps.model))
        return indexer_pb2.ReindexResponse(
            state=job.state,
            from_collection=job.source,
            to_collection=job.target,
            model=job.model,
            faces_total=job.total,
            faces_reindexed=job.reindexed,
            faces_skipped=job.skipped,
            faces_missing=job.missing,
            faces_realigned=job.realigned,
            points_dropped=job.dropped,
            error=job.error,
            optouts_of_other_models=stale_optouts,
        )

    # -- internal, for the persons service (role "service") --------------------------------

    async def FaceNeighbors(
        self, request: indexer_pb2.FaceNeighborsRequest, context
    ) -> indexer_pb2.FaceNeighborsResponse:
        deps = await self._deps(context)
        tenant = await _tenant(request.tenant_id, context)
        if not 1 <= len(request.point_ids) <= MAX_TOP_K:
            await _invalid(context, f"give 1 to {MAX_TOP_K} point_ids, got {len(request.point_ids)}")
        ids = [await _point(p, context) for p in request.point_ids]
        k = request.k or DEFAULT_NEIGHBOURS
        if not 1 <= k <= MAX_TOP_K:
            await _invalid(context, f"k must be between 1 and {MAX_TOP_K}, got {request.k}")
        if not math.isfinite(request.min_score) or not -1.0 <= request.min_score <= 1.0:
            await _invalid(
                context, f"min_score must be a cosine similarity in [-1, 1], got {request.min_score}"
            )
        await _searchable(deps, tenant, context)
        found = await asyncio.to_thread(_neighbours, deps.store, tenant, ids, k, request.min_score or None)
        return indexer_pb2.FaceNeighborsResponse(faces=found)

    async def SetFacePersons(
        self, request: indexer_pb2.SetFacePersonsRequest, context
    ) -> indexer_pb2.SetFacePersonsResponse:
        deps = await self._deps(context)
        tenant = await _tenant(request.tenant_id, context)
        if len(request.faces) > MAX_SET_FACES:
            await _invalid(context, f"at most {MAX_SET_FACES} faces per call, got {len(request.faces)}")
        payloads: dict[str, dict[str, Any]] = {}
        for face in request.faces:
            pid = await _point(face.point_id, context)
            if face.person_id:
                await _person_id(face.person_id, context)
            payloads[pid] = {"person_id": face.person_id, "person_pinned": bool(face.pinned)}
        stores = await asyncio.to_thread(deps.all_stores)
        # Every collection: a tenant being moved to another model keeps its persons.
        updated = 0
        for store in stores:
            updated = max(updated, await asyncio.to_thread(store.set_payload, tenant, payloads))
        return indexer_pb2.SetFacePersonsResponse(faces_updated=updated)

    async def FaceGraph(self, request: indexer_pb2.FaceGraphRequest, context):
        deps = await self._deps(context)
        tenant = await _tenant(request.tenant_id, context)
        k = request.k or DEFAULT_NEIGHBOURS
        if not 1 <= k <= MAX_GRAPH_K:
            await _invalid(context, f"k must be between 1 and {MAX_GRAPH_K}, got {request.k}")
        await _searchable(deps, tenant, context)
        graph, payloads = await asyncio.to_thread(_face_graph, deps.store, tenant, k)
        for index, point in enumerate(graph.ids):
            row = graph.neighbours[index]
            keep = row >= 0
            payload = payloads.get(point, {})
            yield indexer_pb2.FaceGraphRow(
                index=index,
                point_id=point,
                neighbors=row[keep].tolist(),
                similarities=graph.similarities[index][keep].tolist(),
                person_id=str(payload.get("person_id") or ""),
                pinned=bool(payload.get("person_pinned", False)),
                quality=float(payload.get("quality", 0.0)),
                vector=graph.vectors[index].tolist() if graph.vectors is not None else [],
            )

    async def _deps(self, context) -> IndexerDeps:
        return await self.loaded.require(context, "the index is still loading")


def register(server: grpc.aio.Server, loaded: Loaded[IndexerDeps]) -> list[str]:
    indexer_pb2_grpc.add_IndexerServicer_to_server(IndexerServicer(loaded), server)
    return [indexer_pb2.DESCRIPTOR.services_by_name["Indexer"].full_name]


async def _image_vector(
    engine: FaceEngine, data: bytes, face_index: int, response: indexer_pb2.SearchResponse, context
) -> np.ndarray | None:
    """The embedding of the chosen face (largest first), or None when there is no face."""
    if face_index < 0:
        await _invalid(context, f"query_face_index must be 0 or more, got {face_index}")
    try:
        image = await asyncio.to_thread(engine.detector.decode, data)
    except ImageError as exc:
        await _invalid(context, f"cannot use the query image: {exc}")
    faces = await engine.detector.detect(image, engine.detector.params())
    response.query_faces_found = len(faces)
    if not faces:
        return None
    by_area = sorted(faces, key=lambda f: -float((f.box[2] - f.box[0]) * (f.box[3] - f.box[1])))
    response.query_faces.extend(face_to_proto(f) for f in by_area)
    if face_index >= len(by_area):
        await _invalid(
            context, f"query_face_index {face_index} is out of range: the image has {len(by_area)} face(s)"
        )
    chosen = by_area[face_index]
    response.query_face_index = face_index
    response.query_face.CopyFrom(face_to_proto(chosen))
    vectors, _ = await engine.embedder.embed_faces(image.bgr, [chosen.landmarks])
    return vectors[0]


async def _given_vector(deps: IndexerDeps, embedding: common_pb2.Embedding, context) -> np.ndarray:
    dim, model = deps.dim, deps.model
    vec = np.asarray(embedding.vector, dtype=np.float32)
    if vec.size != dim:
        await _invalid(context, f"vector has {vec.size} dimensions, the index holds {dim}-d vectors")
    if embedding.dim and embedding.dim != vec.size:
        await _invalid(context, f"vector.dim is {embedding.dim} but the vector has {vec.size} values")
    if embedding.model and embedding.model != model:
        await _invalid(
            context, f"vector is from model {echo(embedding.model)}, the index holds {echo(model)}"
        )
    norm = float(np.linalg.norm(vec))
    if not math.isfinite(norm) or norm == 0.0:
        await _invalid(context, "vector is all zeros or has non-finite values")
    return vec / norm


async def _photo_filters(given: indexer_pb2.SearchFilter, context) -> dict[str, FilterValue]:
    """The capture-time range (after: inclusive, before: exclusive) and the folder (it or
    any folder below it) of a search."""
    out: dict[str, FilterValue] = {}
    after, before = given.taken_after_ms, given.taken_before_ms
    if after and before and after >= before:
        await _invalid(context, f"taken_after_ms ({after}) must be before taken_before_ms ({before})")
    if after or before:
        out["taken_at"] = Range(gte=after or None, lt=before or None)
    if given.folder:
        try:
            out["folders"] = clean_folder(given.folder)
        except ValueError as exc:
            await _invalid(context, f"invalid folder filter: {exc}")
    return out


def _photo(p: dict[str, Any]) -> pipeline_pb2.PhotoMetadata:
    return pipeline_pb2.PhotoMetadata(
        taken_at_ms=int(p.get("taken_at", 0)),
        has_gps=bool(p.get("has_gps", False)),
        latitude=float(p.get("lat", 0.0)),
        longitude=float(p.get("lon", 0.0)),
        camera_make=str(p.get("camera_make", "")),
        camera_model=str(p.get("camera_model", "")),
        folder=str(p.get("folder", "")),
    )


def _match(hit: SearchHit) -> indexer_pb2.SearchMatch:
    p: dict[str, Any] = hit.payload
    x1, y1, x2, y2 = (list(p.get("bbox") or []) + [0.0] * 4)[:4]
    image_thumb = str(p.get("image_thumb_key", ""))
    return indexer_pb2.SearchMatch(
        point_id=hit.id,
        score=hit.score,
        tenant_id=p.get("tenant_id", ""),
        site=p.get("site", ""),
        url=p.get("url", ""),
        page_url=p.get("page_url", ""),
        image_sha256=p.get("image_sha256", ""),
        bbox=common_pb2.BoundingBox(x1=x1, y1=y1, x2=x2, y2=y2),
        det_score=float(p.get("score", 0.0)),
        quality=float(p.get("quality", 0.0)),
        crop=common_pb2.ObjectRef(bucket=p.get("crop_bucket", ""), key=p.get("crop_key", "")),
        thumb=common_pb2.ObjectRef(bucket=p.get("thumb_bucket", ""), key=p.get("thumb_key", "")),
        model=p.get("model", ""),
        face_index=int(p.get("face_index", 0)),
        indexed_at_ms=int(p.get("indexed_at", 0)),
        alt_text=p.get("alt_text", ""),
        person_id=str(p.get("person_id") or ""),
        photo=_photo(p),
        image_width=int(p.get("width", 0)),
        image_height=int(p.get("height", 0)),
        image_thumb=common_pb2.ObjectRef(bucket=FACE_THUMBS_BUCKET, key=image_thumb) if image_thumb else None,
    )


async def _name_persons(deps: IndexerDeps, tenant: str, matches) -> None:
    """Fills person_name from the person records (the names live with the persons)."""
    wanted = {m.person_id for m in matches if m.person_id}
    if not wanted or deps.persons is None:
        return
    try:
        names = await deps.persons.names(tenant, wanted)
    except Exception as exc:  # noqa: BLE001 - the matches stand without names
        log.warning("cannot read person names", extra={"error": str(exc)})
        return
    for m in matches:
        m.person_name = names.get(m.person_id, "")


def _erasing(deps: IndexerDeps, tenant: str) -> contextlib.AbstractAsyncContextManager[Any]:
    """Keeps a reindex of the tenant from writing back what is being erased."""
    if deps.reindexer is None:
        return contextlib.nullcontext()
    return deps.reindexer.tenant_lock(tenant)


def _all_faces(deps: IndexerDeps, tenant: str, filters: dict[str, str] | None = None) -> list[StoredPoint]:
    """The tenant's faces in every collection, the active one's copy first, by point id."""
    faces: dict[str, StoredPoint] = {}
    for store in deps.all_stores():
        for p in store.scroll(tenant, filters, MAX_LIST_POINTS):
            faces.setdefault(p.id, p)
    return sorted(faces.values(), key=lambda p: p.id)


def _neighbours(
    store, tenant: str, ids: list[str], k: int, min_score: float | None
) -> list[indexer_pb2.FaceNeighbors]:
    """The ``k`` nearest faces of each face (itself left out), with their persons."""
    vectors = store.vectors(tenant, ids)
    present = [pid for pid in ids if pid in vectors]
    results = (
        store.search_many(np.stack([vectors[pid] for pid in present]), tenant, k + 1, min_score)
        if present
        else []
    )
    hits_of = dict(zip(present, results, strict=True))
    own = {p.id: str(p.payload.get("person_id") or "") for p in store.retrieve(tenant, present)}
    out = []
    for pid in ids:
        entry = indexer_pb2.FaceNeighbors(point_id=pid, found=pid in vectors, person_id=own.get(pid, ""))
        if pid in vectors:
            entry.vector.extend(vectors[pid].tolist())
        for hit in hits_of.get(pid, []):
            if hit.id != pid and len(entry.neighbors) < k:
                entry.neighbors.append(
                    indexer_pb2.FaceNeighbor(
                        point_id=hit.id, score=hit.score, person_id=str(hit.payload.get("person_id") or "")
                    )
                )
        out.append(entry)
    return out


def _face_graph(store, tenant: str, k: int):
    """The tenant's kNN graph and each face's payload (persons, quality)."""
    from facepipe.persons.graph import knn_graph

    graph = knn_graph(store, tenant, k)
    payloads = {p.id: p.payload for p in store.scroll(tenant, None, MAX_LIST_POINTS)}
    return graph, payloads


async def _point(value: str, context) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        await _invalid(context, f"point id {echo(value)} is not a UUID")
    raise AssertionError("unreachable")


async def _person_id(value: str, context) -> str:
    if not PERSON_ID_RE.match(value):
        await _invalid(context, f"person_id {echo(value)} is not 32 lowercase hex digits")
    return value


async def _searchable(deps: IndexerDeps, tenant: str, context) -> None:
    """Refuses a search that the active collection cannot answer for this tenant: its
    faces are in another model's collection, or being moved from there."""
    if deps.reindexer is None:
        return
    problem = await asyncio.to_thread(deps.reindexer.search_problem, tenant)
    if problem:
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, problem)


async def _optouts(deps: IndexerDeps, context):
    if deps.optouts is None:
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "opt-outs need NATS (FACEPIPE_NATS_URL)")
    if deps.optout_min_score is None:
        await context.abort(
            grpc.StatusCode.FAILED_PRECONDITION,
            "no threshold to match opted-out people by: the model pack has no calibrated "
            "search_min_score; set FACEPIPE_OPTOUT_MIN_SCORE",
        )
    return deps.optouts, deps.optout_min_score


async def _photo_vector(engine: FaceEngine, data: bytes, number: int, context) -> np.ndarray:
    """The embedding of the largest face of an opt-out photo (numbered from 1)."""
    try:
        image = await asyncio.to_thread(engine.detector.decode, data)
    except ImageError as exc:
        await _invalid(context, f"cannot use photo {number}: {exc}")
    faces = await engine.detector.detect(image, engine.detector.params())
    if not faces:
        await _invalid(context, f"photo {number} has no face")
    largest = max(faces, key=lambda f: float((f.box[2] - f.box[0]) * (f.box[3] - f.box[1])))
    vectors, _ = await engine.embedder.embed_faces(image.bgr, [largest.landmarks])
    vector = np.asarray(vectors[0], dtype=np.float32)
    return vector / max(float(np.linalg.norm(vector)), 1e-12)


def _audit_proto(record: audit.AuditRecord) -> indexer_pb2.AuditRecord:
    out = indexer_pb2.AuditRecord(
        seq=record.seq,
        time_ms=int(record.time * 1000),
        key_id=record.key_id,
        role=record.role,
        tenant_id=record.tenant,
        action=record.action,
        method=record.method,
        service=record.service,
        outcome=record.outcome,
        affected=record.affected,
        detail=record.detail,
    )
    if record.results is not None:
        out.results = record.results
    return out


def _kind(description: str) -> str:
    """``qdrant-edge:/data/vectors`` -> ``qdrant-edge``."""
    return description.split(":", 1)[0]


async def _tenant(tenant_id: str, context) -> str:
    if not TENANT_RE.match(tenant_id or ""):
        await _invalid(context, f"tenant_id {echo(tenant_id)} is required: 1-64 letters, digits, '_' or '-'")
    return tenant_id


async def _invalid(context, message: str) -> None:
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)

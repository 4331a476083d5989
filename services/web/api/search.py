"""POST /api/v1/search: the faces most like the face in an uploaded photo."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, File, Form, Request, UploadFile

from facepipe.v1 import indexer_pb2

from .auth import Caller, CallerDep
from .convert import as_dict, match_dict
from .errors import ERROR_RESPONSES, bad_request

router = APIRouter(tags=["search"], responses=ERROR_RESPONSES)
MAX_TOP_K = 1000


async def run_search(
    request: Request,
    caller: Caller,
    image: bytes,
    top_k: int = 20,
    min_score: float = 0.0,
    face_index: int = 0,
    person_id: str = "",
    site: str = "",
) -> dict[str, Any]:
    """One Search with the caller's key; the shared path of the API and the search page."""
    deps = request.app.state.deps
    if not image:
        raise bad_request("image is empty: upload a photo")
    if not 1 <= top_k <= MAX_TOP_K:
        raise bad_request(f"top_k must be 1-{MAX_TOP_K}")
    search = indexer_pb2.SearchRequest(
        tenant_id=caller.tenant,
        image=image,
        top_k=top_k,
        min_score=min_score,
        query_face_index=face_index,
        filter=indexer_pb2.SearchFilter(person_id=person_id, site=site),
    )
    resp = await deps.indexer().Search(search, **deps.call_options(caller.key))
    threshold = deps.thresholds.get("search_min_score")
    return {
        "tenant": caller.tenant,
        # The pack's search threshold: a score at or above it is taken as the same person.
        "threshold": threshold,
        "query_faces_found": resp.query_faces_found,
        "query_face_index": resp.query_face_index,
        "query_face": as_dict(resp.query_face) if resp.HasField("query_face") else None,
        "matches": [match_dict(m) for m in resp.matches],
    }


@router.post("/search", summary="Search by photo")
async def search(
    request: Request,
    image: UploadFile = File(..., description="An encoded photo (JPEG, PNG, WebP, ...)."),
    top_k: int = Form(20, description=f"Matches to return, 1-{MAX_TOP_K}."),
    min_score: float = Form(0.0, description="Lowest cosine similarity, in [-1, 1]; 0: no bound."),
    face_index: int = Form(0, description="Which face of the photo to search with, largest first."),
    person_id: str = Form("", description="Only faces of this person."),
    site: str = Form("", description="Only faces found on this site."),
    caller: Caller = CallerDep,
) -> dict[str, Any]:
    """The tenant's faces most like the largest (or chosen) face of the photo, best first,
    each with its score, source, person and thumbnail URLs."""
    data = await image.read()
    return await run_search(request, caller, data, top_k, min_score, face_index, person_id, site)

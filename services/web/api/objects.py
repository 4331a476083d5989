"""GET /api/v1/objects/{bucket}/{key}: a stored thumbnail or crop, served from the
object store after the indexer confirmed that the caller's key may read the tenant
the object belongs to."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response

from facepipe.auth.access import object_tenant
from facepipe.storage.objects import ObjectNotFound

from ..backends import to_thread
from .auth import Caller, CallerDep
from .errors import ERROR_RESPONSES

router = APIRouter(tags=["objects"], responses=ERROR_RESPONSES)
# Only images are served: the thumbnails and crops, never the raw uploads.
SERVED_BUCKETS = ("face-thumbs", "face-crops")


@router.get(
    "/objects/{bucket}/{key:path}",
    summary="A thumbnail or face crop",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}, "description": "The image"}},
)
async def get_object(request: Request, bucket: str, key: str, caller: Caller = CallerDep) -> Response:
    deps = request.app.state.deps
    tenant = object_tenant(bucket, key)
    if bucket not in SERVED_BUCKETS or tenant is None:
        raise HTTPException(404, "no such object")
    await deps.confirm_access(caller.key, tenant)
    try:
        data = await to_thread(deps.objects.get, bucket, key)
    except ObjectNotFound:
        raise HTTPException(404, "no such object") from None
    media = "image/png" if key.endswith(".png") else "image/jpeg"
    return Response(data, media_type=media, headers={"cache-control": "private, max-age=3600"})

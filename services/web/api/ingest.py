"""POST /api/v1/ingest: photos uploaded, or URLs given, queued for the pipeline
(facepipe.v1.Extractor/Ingest). Uploads are stored under raw-images/<tenant>/ only
after the extractor has accepted the key as a writer of the tenant."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import grpc
from fastapi import APIRouter, File, Form, HTTPException, Request, UploadFile

from facepipe.client import sniff_extension
from facepipe.storage.objects import RAW_IMAGES_BUCKET
from facepipe.v1 import pipeline_pb2

from ..backends import to_thread
from .auth import Caller, CallerDep
from .errors import ERROR_RESPONSES, bad_request

router = APIRouter(tags=["ingest"], responses=ERROR_RESPONSES)
MAX_ITEMS = 1000


async def check_writer(request: Request, caller: Caller) -> None:
    """Asks the extractor whether the key may ingest for the tenant, before anything is
    stored: an empty request is refused for the key first (401/403), else as incomplete."""
    deps = request.app.state.deps
    try:
        await deps.extractor().Ingest(
            pipeline_pb2.IngestRequest(tenant_id=caller.tenant), **deps.call_options(caller.key)
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() != grpc.StatusCode.INVALID_ARGUMENT:
            raise
        return
    raise HTTPException(500, "the extractor accepted an empty ingest request")


def store_upload(objects, tenant: str, data: bytes) -> tuple[str, str]:
    """Stores an uploaded photo as the command line does; (key, sha256)."""
    ext = sniff_extension(data)
    sha = hashlib.sha256(data).hexdigest()
    key = f"{tenant}/{sha}.{ext}"
    if not objects.exists(RAW_IMAGES_BUCKET, key):
        objects.put(RAW_IMAGES_BUCKET, key, data, f"image/{ext}")
    return key, sha


async def ingest_items(
    request: Request,
    caller: Caller,
    uploads: list[tuple[str, bytes]],
    urls: list[str],
    site: str = "",
    folder: str = "",
) -> dict[str, Any]:
    deps = request.app.state.deps
    urls = [u.strip() for u in urls if u.strip()]
    if not uploads and not urls:
        raise bad_request("give photos (files) or URLs (urls)")
    if len(uploads) + len(urls) > MAX_ITEMS:
        raise bad_request(f"at most {MAX_ITEMS} photos and URLs per request")
    await check_writer(request, caller)
    batch_id = uuid.uuid4().hex
    common = {"tenant_id": caller.tenant, "site": site, "batch_id": batch_id, "folder": folder}
    queued: list[dict[str, Any]] = []
    errors: list[dict[str, str]] = []
    requests: list[tuple[str, pipeline_pb2.IngestRequest]] = []
    for name, data in uploads:
        try:
            key, sha = await to_thread(store_upload, deps.objects, caller.tenant, data)
        except ValueError as exc:
            errors.append({"source": name, "error": str(exc)})
            continue
        requests.append(
            (
                name,
                pipeline_pb2.IngestRequest(
                    bucket=RAW_IMAGES_BUCKET, key=key, image_sha256=sha, url=f"upload:{name}", **common
                ),
            )
        )
    requests += [(url, pipeline_pb2.IngestRequest(url=url, **common)) for url in urls]
    for source, req in requests:
        req.message_id = uuid.uuid4().hex
        try:
            resp = await deps.extractor().Ingest(req, **deps.call_options(caller.key))
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.INVALID_ARGUMENT:
                raise
            errors.append({"source": source, "error": exc.details() or "invalid"})
            continue
        queued.append({"source": source, "message_id": resp.message_id, "image_sha256": req.image_sha256})
    return {"tenant": caller.tenant, "batch_id": batch_id, "queued": queued, "errors": errors}


@router.post("/ingest", summary="Ingest photos or URLs")
async def ingest(
    request: Request,
    files: list[UploadFile] = File(default_factory=list, description="Photos to ingest."),
    urls: list[str] = Form(default_factory=list, description="http(s) URLs of photos to ingest."),
    site: str = Form("", description="Site name recorded with the faces."),
    folder: str = Form("", description="Folder name recorded with the photos."),
    caller: Caller = CallerDep,
) -> dict[str, Any]:
    """Queues each photo and URL for detection, embedding and indexing (role writer).
    Completion is asynchronous: search finds the faces once they are indexed."""
    uploads = [(f.filename or "upload", await f.read()) for f in files]
    return await ingest_items(request, caller, uploads, urls, site, folder)

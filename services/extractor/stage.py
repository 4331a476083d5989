"""The extractor's stage: ``facepipe.ingest`` (IngestRequest) in, a validated,
hashed and stored image out on ``facepipe.images.stored`` (ImageRecord).
Exact duplicates (same tenant, same sha256) end in a DUPLICATE done event."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from nats.aio.msg import Msg
from PIL import Image

from facepipe import bus
from facepipe.auth import object_tenant
from facepipe.dedup import ImageStates, phash_hex
from facepipe.echo import echo
from facepipe.imaging import EXTENSIONS, ImageError, probe_image
from facepipe.netguard import BlockedTargetError, InvalidTargetError, target_host
from facepipe.photos import clean_folder, image_thumb_key, photo_info_and_thumbnail
from facepipe.pipeline import Opened, Stage, StageOutput, check_tenant
from facepipe.runtime import metrics
from facepipe.storage import FACE_THUMBS_BUCKET, RAW_IMAGES_BUCKET, ObjectNotFound, ObjectStore
from facepipe.storage.objects import validate_bucket, validate_key
from facepipe.v1 import common_pb2, pipeline_pb2

from .fetch import ImageFetcher

log = logging.getLogger("facepipe.extractor")

# Batch ids become a subject token (facepipe.events.done.<batch_id>).
BATCH_ID_RE = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
MAX_ID_CHARS = 256
# Camera JPEGs with an embedded preview decode as MPO; they are JPEGs to everyone else.
FORMAT_ALIASES = {"MPO": "JPEG"}


def parse_ingest(data: bytes) -> pipeline_pb2.IngestRequest:
    """Protobuf, or its JSON mapping (for ``nats pub`` users) when it starts with ``{``."""
    request = pipeline_pb2.IngestRequest()
    if not data.strip():
        raise bus.PermanentError("empty ingest message", reason="malformed")
    if data.lstrip()[:1] == b"{":
        try:
            json_format.Parse(data, request, ignore_unknown_fields=True)
        except (json_format.ParseError, UnicodeDecodeError) as exc:
            raise bus.PermanentError(f"malformed IngestRequest JSON: {exc}", reason="malformed") from exc
        return request
    try:
        request.ParseFromString(data)
    except DecodeError as exc:
        raise bus.PermanentError(f"malformed IngestRequest protobuf: {exc}", reason="malformed") from exc
    if not request.ListFields():  # bytes that parse, but as nothing we know
        raise bus.PermanentError(
            "malformed IngestRequest: neither JSON nor a protobuf with known fields", reason="malformed"
        )
    return request


def derived_message_id(msg: Msg) -> str:
    """Stable across redeliveries: the stream sequence and the time the stream stored it."""
    meta = msg.metadata
    return f"ingest-{meta.sequence.stream}-{int(meta.timestamp.timestamp() * 1e6)}"


def missing_fields(request: pipeline_pb2.IngestRequest) -> list[str]:
    missing = [] if request.tenant_id else ["tenant_id"]
    if request.bucket or request.key:
        missing += [name for name in ("bucket", "key") if not getattr(request, name)]
    elif not request.url:
        missing.append("url (or bucket and key)")
    elif request.url.startswith("file:"):
        # file:// URLs only label local files that the CLI stored under bucket + key.
        missing.append("bucket and key (file:// URLs are not fetched)")
    return missing


def validate(request: pipeline_pb2.IngestRequest) -> None:
    """Raises PermanentError for a request that can never succeed: fields missing or
    out of bounds, a URL that is not a well-formed http(s) URL."""
    missing = missing_fields(request)
    if missing:
        raise bus.PermanentError(f"missing required fields: {', '.join(missing)}", reason="missing_fields")
    check_tenant(request.tenant_id)
    if request.bucket:
        try:
            validate_bucket(request.bucket)
            validate_key(request.key)
        except ValueError as exc:
            raise bus.PermanentError(str(exc), reason="invalid_object_ref") from exc
    if request.bucket and object_tenant(request.bucket, request.key) != request.tenant_id:
        # A stored object may only be ingested by its own tenant: no copying another's photos.
        raise bus.PermanentError(
            f"{request.bucket}/{request.key[:128]} is not an object of tenant {request.tenant_id}: "
            f"give one under {RAW_IMAGES_BUCKET}/{request.tenant_id}/",
            reason="foreign_object",
        )
    if request.batch_id and (len(request.batch_id) > MAX_ID_CHARS or not BATCH_ID_RE.match(request.batch_id)):
        raise bus.PermanentError(
            f"invalid batch_id {echo(request.batch_id)}: at most {MAX_ID_CHARS} letters, digits, "
            "'_', '-' and single dots",
            reason="invalid_batch_id",
        )
    mid = request.message_id
    if mid and (len(mid) > MAX_ID_CHARS or not mid.isprintable()):
        raise bus.PermanentError(
            f"invalid message_id {echo(mid)}: at most {MAX_ID_CHARS} printable characters",
            reason="invalid_message_id",
        )
    try:
        request.folder = clean_folder(request.folder)
    except ValueError as exc:
        raise bus.PermanentError(f"invalid folder: {exc}", reason="invalid_folder") from exc
    if request.url and not (request.bucket and request.key):
        # Checked here, so a malformed URL is dead-lettered at once instead of retried.
        try:
            target_host(request.url)
        except InvalidTargetError as exc:
            raise bus.PermanentError(str(exc), reason="invalid_url") from exc
        except BlockedTargetError as exc:
            raise bus.PermanentError(str(exc), reason="blocked_target") from exc


@dataclass(frozen=True)
class InspectedImage:
    sha256: str
    phash: str
    width: int
    height: int
    format: str
    content_type: str
    extension: str


def inspect_image(data: bytes, max_pixels: int, max_bytes: int, sha256: str | None = None) -> InspectedImage:
    """Validates by decoding (pixel guard included) and hashes (``sha256`` when the
    caller has it already); CPU-bound, run in a thread."""
    try:
        probe = probe_image(data, max_pixels=max_pixels, max_bytes=max_bytes)
    except ImageError as exc:
        metrics.IMAGES.labels("extractor", exc.code).inc()
        raise bus.PermanentError(str(exc), reason=exc.code.lower()) from exc
    fmt = probe.format.upper()
    fmt = FORMAT_ALIASES.get(fmt, fmt)
    return InspectedImage(
        sha256=sha256 or hashlib.sha256(data).hexdigest(),
        phash=phash_hex(probe.preview),
        width=probe.width,
        height=probe.height,
        format=fmt,
        content_type=Image.MIME.get(fmt, "application/octet-stream"),
        extension=EXTENSIONS.get(fmt, fmt.lower() or "bin"),
    )


@dataclass(frozen=True)
class ExtractorDeps:
    objects: ObjectStore
    fetcher: ImageFetcher
    # Exact-duplicate claims in NATS KV; None without NATS.
    states: ImageStates | None
    max_pixels: int
    max_image_bytes: int
    output: StageOutput


async def open_deps(opened: Opened) -> ExtractorDeps:
    settings = opened.settings
    js = opened.output.js
    states = await ImageStates.open(js) if js is not None else None
    assert opened.objects is not None  # declared in main.py
    fetcher = ImageFetcher(settings.max_image_bytes, allow_private=settings.netguard.allow_private_networks)
    return ExtractorDeps(
        opened.objects, fetcher, states, settings.max_pixels, settings.max_image_bytes, opened.output
    )


async def close_deps(deps: ExtractorDeps) -> None:
    await deps.fetcher.aclose()


def subject_tenant(subject: str) -> str:
    """The tenant of a ``facepipe.ingest.<tenant>`` subject; '' for ``facepipe.ingest``."""
    prefix = bus.SUBJECT_INGEST + "."
    return subject[len(prefix) :] if subject.startswith(prefix) else ""


def decode(msg: Msg) -> pipeline_pb2.IngestRequest:
    request = parse_ingest(msg.data)
    # A tenant's producer may only publish on its tenant's subject: that tenant wins.
    if tenant := subject_tenant(msg.subject or ""):
        request.tenant_id = tenant
    mid = request.message_id
    if not mid or len(mid) > MAX_ID_CHARS or not mid.isprintable():
        request.message_id = derived_message_id(msg)
    return request


async def handle(deps: ExtractorDeps, delivery: bus.Delivery) -> None:
    request: pipeline_pb2.IngestRequest = delivery.payload
    validate(request)
    data, image = await _load_and_inspect(deps, request)
    if request.aligned and image.width != image.height:
        raise bus.PermanentError(
            f"an aligned face crop is square, this image is {image.width}x{image.height}",
            reason="not_aligned_crop",
        )
    metrics.IMAGES.labels("extractor", "ok").inc()
    # on_dead reads the sha from the payload to release the claim.
    request.image_sha256 = image.sha256
    tenant = request.tenant_id
    output = deps.output
    assert deps.states is not None  # the stage only runs with NATS

    claim = await deps.states.claim(tenant, image.sha256, request.message_id)
    if claim.state == "duplicate":
        metrics.DEDUP.labels(output.service, "exact", "hit").inc()
        await output.emit_done(request, pipeline_pb2.IMAGE_STATUS_DUPLICATE, faces_known=claim.faces)
        output.count_faces("dup_skipped", claim.faces)
        log.info(
            "duplicate image",
            extra={"tenant": tenant, "sha256": image.sha256, "first_message": claim.owner},
        )
        return
    if claim.state == "new":
        metrics.DEDUP.labels(output.service, "exact", "miss").inc()

    raw_key = f"{tenant}/{image.sha256}.{image.extension}"
    objects = deps.objects
    # An object read from this very key (the CLI stores images there) is not looked up again.
    stored_here = (request.bucket, request.key) == (RAW_IMAGES_BUCKET, raw_key)
    if not stored_here and not await asyncio.to_thread(objects.exists, RAW_IMAGES_BUCKET, raw_key):
        await asyncio.to_thread(objects.put, RAW_IMAGES_BUCKET, raw_key, data, image.content_type)
    photo, image_thumb = await asyncio.to_thread(_photo_and_thumb, objects, tenant, image.sha256, data)
    photo.folder = request.folder
    record = pipeline_pb2.ImageRecord(
        tenant_id=tenant,
        site=request.site,
        url=request.url,
        page_url=request.page_url,
        alt_text=request.alt_text,
        image_sha256=image.sha256,
        phash=image.phash,
        raw=common_pb2.ObjectRef(bucket=RAW_IMAGES_BUCKET, key=raw_key),
        content_type=image.content_type,
        width=image.width,
        height=image.height,
        size_bytes=len(data),
        batch_id=request.batch_id,
        message_id=request.message_id,
        face_hints=request.face_hints,
        ingested_at_ms=int(time.time() * 1000),
        photo=photo,
        image_thumb=image_thumb,
        aligned=request.aligned,
    )
    await output.publish(
        bus.SUBJECT_STORED, record.SerializeToString(), msg_id=f"stored.{request.message_id}"
    )


def _photo_and_thumb(
    objects: ObjectStore, tenant: str, sha256: str, data: bytes
) -> tuple[pipeline_pb2.PhotoMetadata, common_pb2.ObjectRef]:
    """The photo's EXIF facts, and its whole-image thumbnail, stored once per image.
    An image whose thumbnail cannot be made still goes on, without one."""
    key = image_thumb_key(tenant, sha256)
    try:
        info, thumb = photo_info_and_thumbnail(data)
    except Exception as exc:  # noqa: BLE001 - the faces matter more than the thumbnail
        log.warning("no image thumbnail", extra={"tenant": tenant, "sha256": sha256, "error": str(exc)})
        return pipeline_pb2.PhotoMetadata(), common_pb2.ObjectRef()
    if not objects.exists(FACE_THUMBS_BUCKET, key):
        objects.put(FACE_THUMBS_BUCKET, key, thumb, "image/jpeg")
    photo = pipeline_pb2.PhotoMetadata(
        taken_at_ms=info.taken_at_ms,
        has_gps=info.has_gps,
        latitude=info.latitude,
        longitude=info.longitude,
        camera_make=info.camera_make,
        camera_model=info.camera_model,
    )
    return photo, common_pb2.ObjectRef(bucket=FACE_THUMBS_BUCKET, key=key)


async def _load_and_inspect(
    deps: ExtractorDeps, request: pipeline_pb2.IngestRequest
) -> tuple[bytes, InspectedImage]:
    """The image's bytes and what they are. A stored object is read, hashed once and
    inspected in one worker-thread hop."""
    if request.bucket and request.key:

        def read_and_inspect() -> tuple[bytes, InspectedImage]:
            data, sha = _read_object(deps.objects, request)
            return data, inspect_image(data, deps.max_pixels, deps.max_image_bytes, sha)

        return await asyncio.to_thread(read_and_inspect)
    fetched = await deps.fetcher.fetch(request.url)
    if fetched.url != request.url:
        log.debug("followed redirects", extra={"url": request.url, "final_url": fetched.url})
    image = await asyncio.to_thread(inspect_image, fetched.data, deps.max_pixels, deps.max_image_bytes)
    return fetched.data, image


def _read_object(objects: ObjectStore, request: pipeline_pb2.IngestRequest) -> tuple[bytes, str]:
    """The stored bytes and their sha256, checked against the one the request gives."""
    try:
        data = objects.get(request.bucket, request.key)
    except ObjectNotFound as exc:
        raise bus.PermanentError(str(exc), reason="not_found") from exc
    except ValueError as exc:  # an invalid bucket name or key
        raise bus.PermanentError(str(exc), reason="invalid_object_ref") from exc
    actual = hashlib.sha256(data).hexdigest()
    given = request.image_sha256.lower()
    if given and given != actual:
        raise bus.PermanentError(
            f"image_sha256 {given} does not match {request.bucket}/{request.key} (sha256 {actual})",
            reason="sha_mismatch",
        )
    return data, actual


async def on_dead(deps: ExtractorDeps, msg: Msg, payload: Any, error: str, reason: str) -> None:
    """A dead-lettered ingest still ends in an ImageDone, and releases its claim."""
    if isinstance(payload, pipeline_pb2.IngestRequest):
        request = pipeline_pb2.IngestRequest()
        request.CopyFrom(payload)
    else:
        request = pipeline_pb2.IngestRequest(message_id=derived_message_id(msg))
    if request.batch_id and not BATCH_ID_RE.match(request.batch_id):
        request.batch_id = ""  # not a valid subject token: report under "none"
    # Released before the event, so whoever waits on the event may ingest it again.
    if request.image_sha256 and deps.states is not None:
        try:
            await deps.states.mark_failed(request.tenant_id, request.image_sha256, request.message_id)
        except ValueError:
            pass  # no valid tenant or sha: nothing was claimed
        except Exception as exc:  # noqa: BLE001 - a stale claim is taken over later
            log.warning("could not release claim", extra={"sha256": request.image_sha256, "error": str(exc)})
    await deps.output.emit_done(request, pipeline_pb2.IMAGE_STATUS_FAILED, error=error, reason=reason)


STAGE: Stage[ExtractorDeps] = Stage(
    bus.STAGES["extractor"], pipeline_pb2.IngestRequest, handle, decode=decode, on_dead=on_dead
)

"""Pipeline commands: ingest, batch, search, erase, stats and dead letters."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from facepipe.cli import addresses
from facepipe.cli.errors import FAILURE, CliError, UsageError, image_file, rpc_failure

# `search` exit status when the query image has no face (no matches is 0 with an empty list).
NO_FACE = 3
# Files listed one by one in the human ingest summary; --json lists all.
LISTED = 20


def _indexer(args: argparse.Namespace, method: str, request: Any) -> Any:
    """Calls one Indexer method on the indexer the command is aimed at."""
    import grpc

    from facepipe.auth.client import channel as key_channel
    from facepipe.v1 import indexer_pb2_grpc

    addr = addresses.indexer_addr(args)
    key = addresses.api_key(args, addr)
    try:
        with key_channel(addr, key, tls=addresses.tls_settings(args)) as channel:
            return getattr(indexer_pb2_grpc.IndexerStub(channel), method)(request, timeout=args.timeout)
    except grpc.RpcError as exc:
        raise rpc_failure(exc, "indexer", addr) from None


def _data_dir_hint(args: argparse.Namespace) -> str:
    return f" --data-dir {addresses.data_dir(args)}" if args.data_dir else ""


# -- ingest and batch ----------------------------------------------------------------
def _counted(counts: dict[str, int]) -> str:
    return ", ".join(f"{reason} {n}" for reason, n in counts.items())


def print_summary(doc: dict, verb: str, tenant: str = "") -> None:
    """The human summary of an ingest run: each image in exactly one outcome."""
    whose = f" for tenant {tenant}" if tenant else ""
    print(f"{verb} {doc['images']} image(s){whose} (batch {doc['batch_id']})")
    rejected = f" ({_counted(doc['rejected_reasons'])})" if doc["rejected_reasons"] else ""
    optout = doc.get("faces_optout_skipped", 0)
    opted_out = f"{optout} opted-out face(s) skipped, " if optout else ""
    print(
        f"  indexed {doc['images_indexed']} image(s): {doc['faces_indexed']} face(s) indexed, "
        f"{doc['faces_dup_skipped']} near-duplicate face(s) skipped, {opted_out}"
        f"{doc['faces_rejected']} face(s) rejected{rejected}"
    )
    print(
        f"  no face in {len(doc['no_face'])} image(s); already ingested {doc['duplicates']}; "
        f"failed {doc['failed']}; pending {doc['pending']}"
    )
    for item in doc["no_face"][:LISTED]:
        print(f"  no face: {item['source']}")
    for item in doc["rejected"][:LISTED]:
        print(f"  rejected: {item['source']}: {_counted(item['reasons'])}")
    for err in doc["errors"]:
        reason = f"{err['reason']}: " if err.get("reason") else ""
        print(f"  failed: {err.get('source', '')}: {reason}{err['error']}")
    hidden = max(0, len(doc["no_face"]) - LISTED) + max(0, len(doc["rejected"]) - LISTED)
    if hidden:
        print(f"  ... and {hidden} more (--json lists every image)")


def cmd_ingest(args: argparse.Namespace) -> int:
    from facepipe.client import ImportOptions, ingest, progress_bar
    from facepipe.importlog import ImportLog

    nats_url, objects = addresses.pipeline_env(args)
    log = ImportLog.in_data_dir(addresses.data_dir(args))

    async def run() -> Any:
        stop = asyncio.Event()
        if args.watch:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            print(
                f"watching {', '.join(args.sources)} for new images (polling every {args.watch_every:g} s); "
                "Ctrl-C stops",
                file=sys.stderr,
            )
        options = ImportOptions(log, args.rescan, args.watch_every if args.watch else 0.0, stop)
        return await ingest(
            nats_url,
            objects,
            args.sources,
            args.tenant,
            args.site,
            wait=args.wait,
            wait_s=args.timeout,
            progress=None if args.json else progress_bar(),
            aligned=args.aligned,
            options=options,
        )

    try:
        summary = asyncio.run(run())
    finally:
        log.close()
    doc = summary.as_dict()
    check_later = f"facepipe batch {doc['batch_id']}{_data_dir_hint(args)}"
    if args.json:
        print(json.dumps(doc, indent=2))
    elif args.wait or args.watch:
        print_summary(doc, "processed", args.tenant)
    else:
        print(f"published {doc['images']} image(s) for tenant {args.tenant} (batch {doc['batch_id']})")
        for err in doc["errors"]:
            print(f"  failed: {err['source']}: {err['error']}")
        print(f"  follow it with `{check_later}`")
    if doc["skipped"] and not args.json:
        print(f"  skipped {doc['skipped']} file(s) unchanged since imported (--rescan reads them again)")
    if doc["pending"] and not args.watch:
        print(
            f"warning: {doc['pending']} of {doc['images']} image(s) not done after {args.timeout:g} s; "
            f"the work goes on in the background. Check it later with `{check_later}`",
            file=sys.stderr,
        )
    return FAILURE if doc["errors"] or (doc["pending"] and not args.watch) else 0


def cmd_batch(args: argparse.Namespace) -> int:
    from facepipe.client import batch_summary

    nats_url, _ = addresses.pipeline_env(args)
    try:
        summary = asyncio.run(batch_summary(nats_url, args.batch_id))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    doc = summary.as_dict()
    if args.json:
        print(json.dumps(doc, indent=2))
    elif summary.images:
        print_summary(doc, "done:")
    if not summary.images:
        raise CliError(
            f"no image of batch {args.batch_id} is done yet (or the batch is unknown; "
            "completion events are kept for a day)"
        )
    return FAILURE if doc["errors"] else 0


# -- search ----------------------------------------------------------------------------
def parse_taken(value: str) -> int:
    """An ISO date (its midnight) or date and time, UTC when no zone is given, as Unix
    milliseconds; photos without a zone in their EXIF are read as UTC too, so a naive
    time here compares with the photo's own clock."""
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value[:64]!r} is not an ISO date or date and time (2021-06-01 or 2021-06-01T12:00)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def _iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _photo_doc(args: argparse.Namespace, m: Any) -> dict:
    """The photo-library facts of a match's image."""
    photo = m.photo
    return {
        "taken_at": _iso_ms(photo.taken_at_ms) if photo.taken_at_ms else "",
        "taken_at_ms": photo.taken_at_ms,
        "gps": {"lat": photo.latitude, "lon": photo.longitude} if photo.has_gps else None,
        "camera_make": photo.camera_make,
        "camera_model": photo.camera_model,
        "folder": photo.folder,
        "width": m.image_width,
        "height": m.image_height,
        "thumb": (
            addresses.thumb_location(args, m.image_thumb.bucket, m.image_thumb.key)
            if m.image_thumb.key
            else ""
        ),
    }


def active_min_score() -> float | None:
    """The calibrated search minimum score of the active model pack, or None."""
    from facepipe.config import Settings
    from facepipe.models.registry import pack_thresholds

    return pack_thresholds(Settings.from_env("cli").resolved_models_dir).get("search_min_score")


def _face_doc(args: argparse.Namespace, m: Any) -> dict:
    """A stored face (a SearchMatch) as JSON."""
    return {
        "url": m.url,
        "tenant_id": m.tenant_id,
        "site": m.site,
        "page_url": m.page_url,
        "alt_text": m.alt_text,
        "image_sha256": m.image_sha256,
        "face_index": m.face_index,
        "bbox": [round(v, 1) for v in (m.bbox.x1, m.bbox.y1, m.bbox.x2, m.bbox.y2)],
        "thumb": addresses.thumb_location(args, m.thumb.bucket, m.thumb.key) if m.thumb.key else "",
        "point_id": m.point_id,
        "person_id": m.person_id,
        "person_name": m.person_name,
        "photo": _photo_doc(args, m),
    }


def _match_doc(args: argparse.Namespace, m: Any, query_face: int) -> dict:
    return {"query_face": query_face, "score": round(m.score, 4), **_face_doc(args, m)}


def _box(face: Any) -> list[float]:
    b = face.box
    return [round(v, 1) for v in (b.x1, b.y1, b.x2, b.y2)]


def cmd_search(args: argparse.Namespace) -> int:
    from facepipe.locators import site_forms
    from facepipe.v1 import indexer_pb2

    if args.image is None:
        if not args.person:
            raise UsageError("give a query image, or --person to list a person's photos")
        return _person_photos(args)
    image_file(args.image)
    path = Path(args.image)
    min_score, source = args.min_score, "--min-score"
    if min_score is None:
        min_score, source = active_min_score(), "model pack"
        if min_score is None:
            min_score, source = 0.0, "none"
    data = path.read_bytes()
    site = site_forms(args.site)[0][0] if args.site else ""
    if (
        args.taken_after is not None
        and args.taken_before is not None
        and args.taken_after >= args.taken_before
    ):
        raise UsageError("--taken-after must be earlier than --taken-before")
    folder = Path(args.folder).expanduser().resolve().as_posix() if args.folder else ""

    def search(face: int) -> Any:
        request = indexer_pb2.SearchRequest(
            tenant_id=args.tenant,
            image=data,
            top_k=args.top_k,
            min_score=min_score,
            query_face_index=face,
            filter=indexer_pb2.SearchFilter(
                site=site,
                taken_after_ms=args.taken_after or 0,
                taken_before_ms=args.taken_before or 0,
                folder=folder,
                person_id=args.person or "",
            ),
        )
        return _indexer(args, "Search", request)

    first = search(args.face)
    if source == "none":  # said once the search worked, so a failure stays one line
        print(
            "warning: the model pack has no calibrated search threshold; every nearest "
            "neighbour is listed (give --min-score, or see `python -m facepipe.calibrate`)",
            file=sys.stderr,
        )
    found = first.query_faces_found
    doc: dict[str, Any] = {
        "query": str(path),
        "query_faces": found,
        "min_score": min_score,
        "min_score_from": source,
        "searched": [],
        "matches": [],
    }
    if found == 0:
        doc["error"] = "no face in the query image"
        if args.json:
            print(json.dumps(doc, indent=2))
        else:
            print(f"error: no face found in {path}", file=sys.stderr)
        return NO_FACE
    responses = [first] + ([search(i) for i in range(1, found)] if args.all_faces else [])
    for resp in responses:
        face = resp.query_face_index
        doc["searched"].append({"query_face": face, "box": _box(resp.query_face)})
        doc["matches"] += [_match_doc(args, m, face) for m in resp.matches]
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(f"{path}: {found} face(s) found; min score {min_score:.3f} (from {source})")
    for searched in doc["searched"]:
        face = searched["query_face"]
        which = " (largest)" if face == 0 else ""
        box = ",".join(f"{v:.0f}" for v in searched["box"])
        hits = [m for m in doc["matches"] if m["query_face"] == face]
        print(f"query face {face}{which} box=({box}): {len(hits)} match(es) in tenant {args.tenant}")
        for i, m in enumerate(hits, 1):
            mbox = ",".join(f"{v:.0f}" for v in m["bbox"])
            alt = f'  alt="{m["alt_text"]}"' if m["alt_text"] else ""
            print(f"  {i:2}. {m['score']:.3f}  {m['url']}  face {m['face_index']} box=({mbox}){alt}")
            if m["thumb"]:
                print(f"      thumb={m['thumb']}")
            if photo := _photo_line(m["photo"]):
                print(f"      {photo}")
    return 0


def _person_photos(args: argparse.Namespace) -> int:
    """``search --person P`` without an image: every face of the person, newest first."""
    from facepipe.locators import site_forms
    from facepipe.v1 import indexer_pb2

    faces: list[Any] = []
    token = ""
    while True:
        request = indexer_pb2.ListFacesRequest(
            tenant_id=args.tenant, person_id=args.person, page_size=1000, page_token=token
        )
        response = _indexer(args, "ListFaces", request)
        faces += list(response.faces)
        token = response.next_page_token
        if not token:
            break
    site = args.site and site_forms(args.site)[0][0]
    faces = [f for f in faces if not site or f.site == site]
    # A photo without a capture time never matches a time bound, as in search.
    if args.taken_after is not None:
        faces = [f for f in faces if f.photo.taken_at_ms and f.photo.taken_at_ms >= args.taken_after]
    if args.taken_before is not None:
        faces = [f for f in faces if f.photo.taken_at_ms and f.photo.taken_at_ms < args.taken_before]
    faces.sort(key=lambda f: (-f.photo.taken_at_ms, -f.indexed_at_ms, f.point_id))
    doc = {"person_id": args.person, "matches": [_match_doc(args, m, -1) for m in faces]}
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(f"person {args.person}: {len(faces)} face(s) in tenant {args.tenant}")
    for i, m in enumerate(doc["matches"], 1):
        print(f"  {i:2}. {m['url']}  face {m['face_index']}")
        if m["thumb"]:
            print(f"      thumb={m['thumb']}")
    return 0


def _photo_line(photo: dict) -> str:
    """The photo facts of a match as one line of text; '' when there are none."""
    parts = []
    if photo["taken_at"]:
        parts.append(f"taken {photo['taken_at']}")
    if photo["gps"]:
        parts.append(f"gps {photo['gps']['lat']:.5f},{photo['gps']['lon']:.5f}")
    camera = " ".join(x for x in (photo["camera_make"], photo["camera_model"]) if x)
    if camera:
        parts.append(f"camera {camera}")
    if photo["width"]:
        parts.append(f"{photo['width']}x{photo['height']}")
    if photo["folder"]:
        parts.append(f"folder {photo['folder']}")
    if photo["thumb"]:
        parts.append(f"image thumb={photo['thumb']}")
    return "  ".join(parts)


# -- erase ----------------------------------------------------------------------------
def _tenant_sites(args: argparse.Namespace) -> set[str]:
    """Every site label of the tenant's faces, read page by page."""
    from facepipe.v1 import indexer_pb2

    sites: set[str] = set()
    token = ""
    while True:
        page = _indexer(
            args,
            "ListFaces",
            indexer_pb2.ListFacesRequest(tenant_id=args.tenant, page_size=1000, page_token=token),
        )
        sites.update(f.site for f in page.faces if f.site)
        token = page.next_page_token
        if not token:
            return sites


def _erase_targets(args: argparse.Namespace) -> tuple[str, list[str]]:
    """The selector and the stored forms to erase for what the user gave."""
    from facepipe.locators import site_forms, site_host, url_forms

    if args.url:
        return "url", url_forms(args.url)
    if args.site:
        forms, host_only = site_forms(args.site)
        if host_only:  # a bare host means every port of it
            forms += sorted(s for s in _tenant_sites(args) if site_host(s) == host_only and s not in forms)
        return "site", forms
    if args.sha256:
        return "image_sha256", [args.sha256.lower()]
    return "all", [""]


def cmd_erase(args: argparse.Namespace) -> int:
    from facepipe.v1 import indexer_pb2

    selector = {"url": args.url, "site": args.site, "image_sha256": args.sha256}
    chosen = {k: v for k, v in selector.items() if v}
    if len(chosen) + int(args.all) != 1:
        raise UsageError("give exactly one of --url, --site, --sha256 or --all")
    field, forms = _erase_targets(args)
    points = objects = 0
    for form in forms:
        request = (
            indexer_pb2.DeleteFacesRequest(tenant_id=args.tenant, all=True)
            if field == "all"
            else indexer_pb2.DeleteFacesRequest(tenant_id=args.tenant, **{field: form})
        )
        resp = _indexer(args, "DeleteFaces", request)
        points += resp.points_deleted
        objects += resp.objects_deleted
    doc = {"points_deleted": points, "objects_deleted": objects, "matched": [f for f in forms if f]}
    subjects = _erase_subjects(args) if field == "all" else None
    if subjects is not None:
        doc["subjects_deleted"], doc["subject_faces_deleted"], subject_objects = subjects
        objects += subject_objects
        doc["objects_deleted"] = objects
    if args.json:
        print(json.dumps(doc))
    elif points or objects or doc.get("subjects_deleted"):
        more = f", {doc['subjects_deleted']} enrolled subject(s)" if doc.get("subjects_deleted") else ""
        print(f"erased {points} face(s), {objects} object(s){more}")
    if not points and not objects and not doc.get("subjects_deleted"):
        given = "--all" if field == "all" else f"--{field.replace('image_', '')} {chosen[field]}"
        looked = f" (looked for {field} {', '.join(forms)})" if field != "all" else ""
        raise CliError(f"nothing matched {given} in tenant {args.tenant}{looked}")
    return 0


def _erase_subjects(args: argparse.Namespace) -> tuple[int, int, int] | None:
    """Tenant erasure reaches the recognizer's enrolled subjects too (their gallery is
    apart from the indexed faces): (subjects, faces, objects) deleted, or None when the
    command knows no recognizer (a stack without one, or --addr with no
    FACEPIPE_RECOGNIZER_ADDR), which is said on stderr."""
    from facepipe.cli.recognize_cmds import recognizer_call
    from facepipe.v1 import recognizer_pb2

    # --addr names the indexer: the recognizer is the stack's or FACEPIPE_RECOGNIZER_ADDR.
    aimed = argparse.Namespace(**{**vars(args), "addr": None})
    try:
        addr = addresses.service_addr(aimed, "recognizer")
    except CliError:
        addr = ""
    if not addr:
        print(
            "note: no recognizer to erase enrolled subjects from (set FACEPIPE_RECOGNIZER_ADDR "
            "where one runs)",
            file=sys.stderr,
        )
        return None
    request = recognizer_pb2.DeleteSubjectRequest(tenant_id=args.tenant, all_subjects=True)
    resp = recognizer_call(aimed, "DeleteSubject", request, addr=addr)
    return resp.subjects_deleted, resp.faces_deleted, resp.objects_deleted


# -- stats ----------------------------------------------------------------------------
def cmd_stats(args: argparse.Namespace) -> int:
    from facepipe.v1 import indexer_pb2

    stats = _indexer(args, "GetStats", indexer_pb2.GetStatsRequest(tenant_id=args.tenant, count_images=True))
    doc: dict[str, Any] = {
        "tenant_id": args.tenant,
        "faces": stats.points,
        "images": stats.images,
        "model": stats.model,
        "dim": stats.dim,
        "collection": stats.collection,
    }
    page = None
    if args.list:
        page = _indexer(
            args,
            "ListFaces",
            indexer_pb2.ListFacesRequest(
                tenant_id=args.tenant, page_size=args.page_size, page_token=args.page_token
            ),
        )
        doc["list"] = [_face_doc(args, f) for f in page.faces]
        doc["next_page_token"] = page.next_page_token
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(
        f"tenant {args.tenant}: {doc['faces']} face(s) in {doc['images']} image(s) "
        f"(model {doc['model']}, collection {doc['collection']})"
    )
    if page is not None:
        for item in doc["list"]:
            box = ",".join(f"{v:.0f}" for v in item["bbox"])
            site = f"  site={item['site']}" if item["site"] else ""
            print(f"  {item['url']}  face {item['face_index']} box=({box}){site}")
        if page.next_page_token:
            print(
                f"  next page: facepipe stats --tenant {args.tenant} --list "
                f"--page-token {page.next_page_token}{_data_dir_hint(args)}"
            )
    return 0


# -- dead letters -----------------------------------------------------------------------
def cmd_dlq(args: argparse.Namespace) -> int:
    from facepipe import dlq

    nats_url, _ = addresses.pipeline_env(args)
    if args.dlq_cmd == "list":
        letters = asyncio.run(dlq.list_dead(nats_url, args.stage, args.limit))
        if args.json:
            print(json.dumps([d.as_dict() for d in letters], indent=2))
            return 0
        if not letters:
            print("no dead letters")
        for d in letters:
            print(f"{d.seq:6}  {d.time[:19]}  {d.stage:9} {d.reason}: {d.error}  ({d.subject})")
        return 0
    if not args.seqs and not args.all:
        raise UsageError("give the sequence numbers to replay (from `facepipe dlq list`) or --all")
    if args.seqs and args.all:
        raise UsageError("give sequence numbers or --all, not both")
    replayed, missing = asyncio.run(
        dlq.replay(nats_url, None if args.all else set(args.seqs), stage=args.stage)
    )
    if args.json:
        print(json.dumps({"replayed": [d.as_dict() for d in replayed], "not_found": missing}, indent=2))
    else:
        print(f"replayed {len(replayed)} dead letter(s)")
        for d in replayed:
            print(f"  {d.seq} -> {d.subject}")
    if missing:
        raise CliError(f"no dead letter with sequence number {', '.join(map(str, missing))}")
    return 0

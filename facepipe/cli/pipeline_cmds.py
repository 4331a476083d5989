"""Pipeline commands: ingest, search and erase."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from facepipe.cli import addresses
from facepipe.cli.errors import UsageError, image_file, rpc_failure


def cmd_ingest(args: argparse.Namespace) -> int:
    from facepipe.client import ingest, progress_bar

    nats_url, objects = addresses.pipeline_env(args)
    summary = asyncio.run(
        ingest(
            nats_url,
            objects,
            args.sources,
            args.tenant,
            args.site,
            wait=args.wait,
            wait_s=args.timeout,
            progress=None if args.json else progress_bar(),
        )
    )
    doc = summary.as_dict()
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        verb = "processed" if args.wait else "published"
        print(f"{verb} {doc['images']} image(s) for tenant {args.tenant} (batch {doc['batch_id']})")
        if args.wait:
            print(
                f"  faces indexed {doc['faces_indexed']}, duplicates skipped {doc['faces_dup_skipped']}, "
                f"rejected {doc['faces_rejected']}; images already known {doc['duplicates']}, "
                f"failed {doc['failed']}, pending {doc['pending']}  ({doc['seconds']} s)"
            )
        for err in doc["errors"]:
            print(f"  error: {err.get('source', '')}: {err['error']}")
    return 1 if doc["errors"] or doc["pending"] else 0


def cmd_search(args: argparse.Namespace) -> int:
    import grpc

    from facepipe.v1 import indexer_pb2, indexer_pb2_grpc

    image_file(args.image)
    path = Path(args.image)
    request = indexer_pb2.SearchRequest(
        tenant_id=args.tenant, image=path.read_bytes(), top_k=args.top_k, min_score=args.min_score
    )
    addr = addresses.indexer_addr(args)
    try:
        with grpc.insecure_channel(addr) as channel:
            resp = indexer_pb2_grpc.IndexerStub(channel).Search(request, timeout=args.timeout)
    except grpc.RpcError as exc:
        raise rpc_failure(exc, "indexer", addr) from None
    matches = [
        {
            "score": round(m.score, 4),
            "url": m.url,
            "tenant_id": m.tenant_id,
            "site": m.site,
            "page_url": m.page_url,
            "image_sha256": m.image_sha256,
            "face_index": m.face_index,
            "bbox": [m.bbox.x1, m.bbox.y1, m.bbox.x2, m.bbox.y2],
            "thumb": addresses.thumb_location(args, m.thumb.bucket, m.thumb.key) if m.thumb.key else "",
            "point_id": m.point_id,
        }
        for m in resp.matches
    ]
    if args.json:
        print(json.dumps(matches, indent=2))
    elif resp.query_faces_found == 0:
        print(f"{path}: no face found")
    else:
        print(f"{len(matches)} match(es) for {path} in tenant {args.tenant}:")
        for i, m in enumerate(matches, 1):
            print(f"  {i:2}. {m['score']:.3f}  {m['url']}  thumb={m['thumb']}")
    return 0


def cmd_erase(args: argparse.Namespace) -> int:
    import grpc

    from facepipe.v1 import indexer_pb2, indexer_pb2_grpc

    selector = {"url": args.url, "site": args.site, "image_sha256": args.sha256}
    chosen = {k: v for k, v in selector.items() if v}
    if len(chosen) + int(args.all) != 1:
        raise UsageError("give exactly one of --url, --site, --sha256 or --all")
    request = indexer_pb2.DeleteFacesRequest(tenant_id=args.tenant, all=args.all, **chosen)
    addr = addresses.indexer_addr(args)
    try:
        with grpc.insecure_channel(addr) as channel:
            resp = indexer_pb2_grpc.IndexerStub(channel).DeleteFaces(request, timeout=args.timeout)
    except grpc.RpcError as exc:
        raise rpc_failure(exc, "indexer", addr) from None
    doc = {"points_deleted": resp.points_deleted, "objects_deleted": resp.objects_deleted}
    print(
        json.dumps(doc)
        if args.json
        else f"erased {doc['points_deleted']} face(s), {doc['objects_deleted']} object(s)"
    )
    return 0

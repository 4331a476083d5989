"""``facepipe reindex``: move a tenant to the active model pack through the indexer.

The indexer embeds the tenant's faces again from their stored aligned crops into the
active model's collection, then switches the tenant's search over (facepipe.v1.Indexer/Reindex)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from facepipe.cli.errors import FAILURE, CliError
from facepipe.cli.pipeline_cmds import _data_dir_hint, _indexer


def _doc(resp: Any, tenant: str) -> dict:
    return {
        "tenant_id": tenant,
        "state": resp.state,
        "from_collection": resp.from_collection,
        "to_collection": resp.to_collection,
        "model": resp.model,
        "faces_total": resp.faces_total,
        "faces_reindexed": resp.faces_reindexed,
        "faces_skipped": resp.faces_skipped,
        "faces_missing": resp.faces_missing,
        "faces_realigned": resp.faces_realigned,
        "points_dropped": resp.points_dropped,
        "error": resp.error,
        "optouts_of_other_models": resp.optouts_of_other_models,
    }


def cmd_reindex(args: argparse.Namespace) -> int:
    from facepipe.v1 import indexer_pb2

    request = indexer_pb2.ReindexRequest(
        tenant_id=args.tenant,
        from_collection=args.from_collection or "",
        drop_old=args.drop_old,
        wait=args.wait,
    )
    doc = _doc(_indexer(args, "Reindex", request), args.tenant)
    if args.json:
        print(json.dumps(doc, indent=2))
    elif not doc["from_collection"]:
        print(f"tenant {args.tenant}: every face is already in {doc['to_collection']}; nothing to move")
    else:
        moved = doc["faces_reindexed"] + doc["faces_skipped"] + doc["faces_missing"]
        print(
            f"tenant {args.tenant}: {doc['state']}: {moved} of {doc['faces_total']} face(s) from "
            f"{doc['from_collection']} to {doc['to_collection']} (model {doc['model']}): "
            f"{doc['faces_reindexed']} embedded again, {doc['faces_skipped']} already there, "
            f"{doc['faces_missing']} without a stored crop"
        )
        if doc["faces_realigned"]:
            print(f"  {doc['faces_realigned']} crop(s) re-aligned to the recognizer's input size")
        if doc["points_dropped"]:
            print(f"  dropped {doc['points_dropped']} point(s) from {doc['from_collection']}")
        if doc["state"] == "running":
            print(
                f"  search of the tenant resumes when it is done; "
                f"`facepipe reindex --tenant {args.tenant} --wait{_data_dir_hint(args)}` waits for it"
            )
    if doc["faces_missing"] and doc["state"] == "done":
        print(
            f"warning: {doc['faces_missing']} face(s) had no stored crop and are not searchable "
            "with the active model; ingest their images again",
            file=sys.stderr,
        )
    if doc["optouts_of_other_models"]:
        print(
            f"warning: {doc['optouts_of_other_models']} opt-out(s) of tenant {args.tenant} were "
            "registered with another model and cannot match faces of the active one: register "
            f"each person again with `facepipe optout add --tenant {args.tenant} PHOTO...`",
            file=sys.stderr,
        )
    if doc["state"] == "failed":
        raise CliError(f"reindex of tenant {args.tenant} failed: {doc['error']}; run it again to resume it")
    return FAILURE if args.wait and doc["state"] != "done" else 0

"""Switching model packs on the local stack, through the CLI: a tenant indexed with one
pack is refused a search once the stack runs another pack (its faces are in the old
model's collection), `facepipe reindex` moves it from the stored crops, and then the
held-out identities are found top-1 again; the new model's collection holds no vector
of the old model; re-running skips what is there; `--drop-old` empties the old
collection of the tenant; and erasure reaches both collections."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import EVAL_FACES, EVAL_LFW, SHARED_FACES, SHARED_MODELS, launch_stack, run_facepipe, stop_stack

from facepipe.config import Settings
from facepipe.models.registry import install_local
from facepipe.storage import EdgeVectorStore
from facepipe.storage.objects import FACE_CROPS_BUCKET, LocalObjectStore
from facepipe.storage.vectors.collections import MODEL_COLLECTION_RE, active_collection, active_recognizer

EVAL = EVAL_FACES
# Held out from calibration (../shared/eval/CALIBRATION.md) and found by both packs' detectors:
# the LFW part of the eval set.
HELD_OUT = EVAL_LFW
PACK_A = "local"
PACK_B = "opencv"


def install_pack(name: str, home: Path) -> None:
    """Installs pack ``name`` in ``home`` as `facepipe models pull` does."""
    run_facepipe("models", "pull", name, env={**os.environ, "FACEPIPE_HOME": str(home)}, timeout=600)


def query_photos(home: Path) -> dict[str, Path]:
    """Per identity, its first photo with a face that pack A accepts (some are turned too far)."""
    photos = [p for name in HELD_OUT for p in sorted((EVAL / name).glob("*.jpg"))]
    env = {**os.environ, "FACEPIPE_HOME": str(home), "FACEPIPE_MODEL_PACK": PACK_A}
    found = json.loads(run_facepipe("detect", *map(str, photos), "--json", env=env).stdout)
    accepted = [Path(item["id"]) for item in found if item["faces"]]
    return {name: next(p for p in accepted if p.parent.name == name) for name in HELD_OUT}


def cli(stack: dict, *args: str, check: bool = True):
    return run_facepipe(*args, "--data-dir", str(stack["dir"]), env=stack["env"], check=check)


def centre_face_top1(stack: dict, tenant: str, photo: Path) -> str:
    """The identity (gallery folder) of the best match of the face nearest the photo's
    centre: LFW photos may show people in the background."""
    result = cli(stack, "search", str(photo), "--tenant", tenant, "--all-faces", "--top-k", "1", "--json")
    doc = json.loads(result.stdout)
    assert doc["query_faces"] >= 1, f"no face in {photo}"

    def off_centre(searched: dict) -> float:
        x1, y1, x2, y2 = searched["box"]
        return ((x1 + x2) / 2 - 125) ** 2 + ((y1 + y2) / 2 - 125) ** 2  # LFW photos are 250x250

    face = min(doc["searched"], key=off_centre)["query_face"]
    best = [m for m in doc["matches"] if m["query_face"] == face]
    return Path(best[0]["url"].removeprefix("file://")).parent.name if best else ""


def vectors(store: EdgeVectorStore, tenant: str) -> dict[str, np.ndarray]:
    ids = [p.id for p in store.scroll(tenant, limit=10_000)]
    return {str(r.id): np.asarray(r.vector, np.float32) for r in store._shard.retrieve(ids, False, True)}


@pytest.mark.parametrize("pack_b", [PACK_B])
def test_reindex_moves_a_tenant_to_another_pack(tmp_path_factory, pack_b) -> None:
    if not EVAL.is_dir() or not SHARED_MODELS.is_dir():
        pytest.skip("../shared/eval or ../shared/models is not present")
    # A home of its own: the other tests' packs stay as they are.
    facepipe_home = tmp_path_factory.mktemp("switch-home")
    install_local(PACK_A, SHARED_MODELS, facepipe_home)
    install_pack(pack_b, facepipe_home)
    data_dir = tmp_path_factory.mktemp("switch-stack")
    started: list[dict] = []
    tenant, dropped = "switch", "switchdrop"
    queries = query_photos(facepipe_home)
    gallery = [p for name in HELD_OUT for p in sorted((EVAL / name).glob("*.jpg")) if p != queries[name]]

    def start(pack: str) -> dict:
        return launch_stack(data_dir, facepipe_home, started, FACEPIPE_MODEL_PACK=pack)

    def stop(stack: dict) -> None:
        problems = stop_stack(stack["dir"], stack["env"])
        started.remove(stack)
        assert not problems, problems

    settings_a, settings_b = (
        Settings.from_env("cli", env={"FACEPIPE_MODEL_PACK": pack}, home=facepipe_home)
        for pack in (PACK_A, pack_b)
    )
    old, new = active_collection(settings_a), active_collection(settings_b)
    assert old != new and MODEL_COLLECTION_RE.match(old) and MODEL_COLLECTION_RE.match(new)
    model_b = active_recognizer(settings_b)
    try:
        # Pack A indexes the gallery; each held-out identity is found top-1.
        stack = start(PACK_A)
        cli(stack, "ingest", *map(str, gallery), "--tenant", tenant, "--wait", "--json")
        cli(stack, "ingest", *map(str, gallery[:9]), "--tenant", dropped, "--wait", "--json")
        # Someone not in that tenant's photos opts out, with pack A's embeddings.
        cli(stack, "optout", "add", "--tenant", dropped, str(SHARED_FACES / "brad_pitt" / "brad_1.jpg"))
        stats = json.loads(cli(stack, "stats", "--tenant", tenant, "--json").stdout)
        faces = stats["faces"]
        assert faces >= len(gallery) * 0.9, stats
        assert {name: centre_face_top1(stack, tenant, q) for name, q in queries.items()} == {
            name: name for name in HELD_OUT
        }
        stop(stack)

        # Pack B: the tenant's faces are in pack A's collection, and search says so.
        stack = start(pack_b)
        refused = cli(stack, "search", str(queries[HELD_OUT[0]]), "--tenant", tenant, check=False)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert old in refused.stderr and f"facepipe reindex --tenant {tenant}" in refused.stderr
        assert "Traceback" not in refused.stderr
        # Its faces are still listed (erasure by site reads the sites there).
        listed = json.loads(cli(stack, "stats", "--tenant", tenant, "--list", "--json").stdout)
        assert listed["faces"] == 0 and len(listed["list"]) == 50, listed

        moved = json.loads(cli(stack, "reindex", "--tenant", tenant, "--wait", "--json").stdout)
        assert moved["state"] == "done" and (moved["from_collection"], moved["to_collection"]) == (old, new)
        assert moved["faces_total"] == faces and moved["faces_reindexed"] == faces, moved
        assert moved["faces_missing"] == 0 and moved["points_dropped"] == 0, moved
        assert {name: centre_face_top1(stack, tenant, q) for name, q in queries.items()} == {
            name: name for name in HELD_OUT
        }
        stats = json.loads(cli(stack, "stats", "--tenant", tenant, "--json").stdout)
        assert stats["faces"] == faces, stats

        # Running it again moves nothing: every face is already there.
        again = json.loads(cli(stack, "reindex", "--tenant", tenant, "--wait", "--json").stdout)
        assert (again["faces_skipped"], again["faces_reindexed"]) == (faces, 0), again

        # --drop-old empties the old collection of a tenant once it is moved.
        gone = json.loads(cli(stack, "reindex", "--tenant", dropped, "--drop-old", "--wait", "--json").stdout)
        assert gone["state"] == "done" and gone["points_dropped"] == gone["faces_total"] > 0, gone
        # Pack A's opt-out cannot match pack B's faces: the person must opt out again.
        assert gone["optouts_of_other_models"] == 1 and again["optouts_of_other_models"] == 0, gone
        text = cli(stack, "reindex", "--tenant", dropped).stdout
        assert "nothing to move" in text
        stop(stack)

        # No vector of the old model is in the new collection: each point there was made by
        # pack B, and none equals (or, at the same size, nearly equals) the old point of its face.
        vector_dir = data_dir / "vectors"
        with EdgeVectorStore(vector_dir, old) as old_store, EdgeVectorStore(vector_dir, new) as new_store:
            before, after = vectors(old_store, tenant), vectors(new_store, tenant)
            assert set(after) == set(before) and len(after) == faces
            for p in new_store.scroll(tenant, limit=10_000):
                assert (p.payload["model"], p.payload["dim"]) == (model_b.file, model_b.dim)
                assert "reindexed_at" in p.payload
            for pid, vector in after.items():
                assert vector.size == model_b.dim, pid
                if vector.size == before[pid].size:
                    # Another model's vector of the same face is no near-copy of the old one.
                    assert abs(float(vector @ before[pid])) < 0.9, pid
            assert old_store.count(dropped) == 0 and new_store.count(dropped) == gone["faces_total"]

        # Erasure reaches both models' collections, and the crops both used.
        stack = start(pack_b)
        erased = json.loads(cli(stack, "erase", "--tenant", tenant, "--all", "--json").stdout)
        assert erased["points_deleted"] == faces, erased
        stop(stack)
        with EdgeVectorStore(vector_dir, old) as old_store, EdgeVectorStore(vector_dir, new) as new_store:
            assert old_store.count(tenant) == 0 and new_store.count(tenant) == 0
        objects = LocalObjectStore(data_dir / "objects")
        assert not list(objects.list(FACE_CROPS_BUCKET, f"{tenant}/"))
    finally:
        for stack in reversed(started):
            stop_stack(stack["dir"], stack["env"])

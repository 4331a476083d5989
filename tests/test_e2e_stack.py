"""Issue acceptance, end to end with real processes: `facepipe up` (nats-server
and every service), ingest, search, nats pub, dedup, crash safety, erasure."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import grpc
import httpx
import pytest
from conftest import SHARED_FACES, VENV_BIN, run_facepipe

from facepipe.v1 import indexer_pb2, indexer_pb2_grpc

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(start_stack) -> dict:
    return start_stack("stack", FACEPIPE_ALLOW_PRIVATE_NETWORKS="1")


def run_cli(stack, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run_facepipe(*args, "--data-dir", str(stack["dir"]), env=stack["env"], check=check)


def points(stack, tenant: str) -> int:
    addr = f"127.0.0.1:{stack['state']['components']['indexer']['grpc_port']}"
    with grpc.insecure_channel(addr) as ch:
        return indexer_pb2_grpc.IndexerStub(ch).GetStats(indexer_pb2.GetStatsRequest(tenant_id=tenant)).points


def http_json(stack, service: str, path: str) -> dict:
    port = stack["state"]["components"][service]["http_port"]
    return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=10).json()


def metric(stack, service: str, name: str) -> float:
    port = stack["state"]["components"][service]["http_port"]
    total = 0.0
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.fixture(scope="module")
def split_faces(tmp_path_factory) -> tuple[Path, list[Path]]:
    """../shared/faces minus one photo per identity, and the held-out photos."""
    root = tmp_path_factory.mktemp("faces")
    held_out = []
    for person in sorted(p for p in SHARED_FACES.iterdir() if p.is_dir()):
        photos = sorted(p for p in person.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        held_out.append(photos[0])
        (root / person.name).mkdir()
        for photo in photos[1:]:
            shutil.copy(photo, root / person.name / photo.name)
    return root, held_out


def test_status_lists_every_component(stack) -> None:
    rows = json.loads(run_cli(stack, "status", "--json").stdout)
    names = {r["name"] for r in rows}
    assert {"nats", "extractor", "detector", "embedder", "indexer"} <= names
    assert all(r["healthy"] for r in rows), rows
    for service in ("extractor", "detector", "embedder", "indexer"):
        ready = httpx.get(
            f"http://127.0.0.1:{stack['state']['components'][service]['http_port']}/readyz"
        ).json()
        assert ready["ready"], ready
        assert ready["checks"]["nats"] == "ok"


def test_ingest_and_search_identities(stack, split_faces) -> None:
    folder, held_out = split_faces
    out = run_cli(stack, "ingest", str(folder), "--tenant", "acme", "--wait", "--json")
    summary = json.loads(out.stdout)
    n_images = sum(1 for _ in folder.rglob("*.*"))
    assert summary["images"] == n_images
    assert summary["errors"] == [] and summary["pending"] == 0
    assert summary["faces_indexed"] >= n_images - summary["faces_dup_skipped"] - 1
    assert points(stack, "acme") == summary["faces_indexed"]

    for photo in held_out:
        matches = json.loads(run_cli(stack, "search", str(photo), "--tenant", "acme", "--json").stdout)[
            "matches"
        ]
        assert matches, f"no match for {photo}"
        best = matches[0]
        assert best["url"].startswith("file://")
        assert Path(best["url"][len("file://") :]).parent.name == photo.parent.name, (photo, matches[:3])
        assert {"score", "tenant_id", "image_sha256", "bbox", "thumb"} <= set(best)
        assert best["tenant_id"] == "acme" and Path(best["thumb"]).is_file()

    # Another tenant sees nothing of acme's faces.
    other = json.loads(run_cli(stack, "search", str(held_out[0]), "--tenant", "other", "--json").stdout)
    assert other["query_faces"] == 1 and other["matches"] == []


def test_reingest_is_idempotent_and_near_duplicates_are_caught(stack, split_faces, tmp_path) -> None:
    folder, _ = split_faces
    before = points(stack, "acme")
    summary = json.loads(run_cli(stack, "ingest", str(folder), "--tenant", "acme", "--wait", "--json").stdout)
    assert summary["faces_indexed"] == 0
    # Known images are counted as such, their faces not again as near-duplicates.
    assert summary["duplicates"] == summary["images"] and summary["faces_dup_skipped"] == 0
    assert points(stack, "acme") == before
    dup_counter = http_json(stack, "extractor", "/stats")["faces_dup_skipped"]
    assert dup_counter >= before

    # A resized and recompressed copy has a new sha256 but the same face.
    from PIL import Image

    original = next(p for p in sorted(folder.rglob("*.jpg")))
    img = Image.open(original).convert("RGB")
    img = img.resize((int(img.width * 0.8), int(img.height * 0.8)))
    copy = tmp_path / "copy.jpg"
    img.save(copy, "JPEG", quality=70)
    summary = json.loads(run_cli(stack, "ingest", str(copy), "--tenant", "acme", "--wait", "--json").stdout)
    assert summary["faces_dup_skipped"] >= 1 and summary["faces_indexed"] == 0, summary
    assert points(stack, "acme") == before


def test_nats_pub_seed_schema_and_dead_letters(stack, split_faces) -> None:
    import nats

    from facepipe import bus

    folder, _ = split_faces
    photo = sorted(folder.rglob("*.jpg"))[0]
    data = photo.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    objects_dir = Path(stack["state"]["env"]["FACEPIPE_OBJECT_DIR"])
    (objects_dir / "raw-images" / "pubtenant").mkdir(parents=True, exist_ok=True)
    (objects_dir / "raw-images" / "pubtenant" / f"{sha}.jpg").write_bytes(data)
    dlq_before = metric(stack, "extractor", "facepipe_dlq_total")

    async def publish() -> list:
        nc = await nats.connect(stack["state"]["nats_url"])
        js = nc.jetstream()
        seed = {
            "image_sha256": sha,
            "bucket": "raw-images",
            "key": f"pubtenant/{sha}.jpg",
            "tenant_id": "pubtenant",
            "site": "example.org",
            "url": "https://example.org/photo.jpg",
            "image_phash": "",
            "face_hints": [],
        }
        dlq = await js.subscribe(f"{bus.SUBJECT_DLQ}.extractor", stream=bus.DLQ_STREAM, ordered_consumer=True)
        await nc.publish(bus.SUBJECT_INGEST, json.dumps(seed).encode())
        await nc.publish(
            bus.SUBJECT_INGEST, b'{"site": "example.org", "url": ""}'
        )  # valid JSON, missing fields
        await nc.publish(bus.SUBJECT_INGEST, b"\x00\x01 not a message")
        await nc.flush()
        got = []
        deadline = time.monotonic() + 60
        while len(got) < 2 and time.monotonic() < deadline:
            try:
                got.append(await dlq.next_msg(timeout=5))
            except Exception:  # noqa: BLE001 - keep polling until the deadline
                continue
        await nc.close()
        return got

    dead = asyncio.run(publish())
    reasons = {m.headers.get(bus.HDR_REASON): m for m in dead}
    assert "missing_fields" in reasons and "malformed" in reasons, [m.headers for m in dead]
    error = reasons["missing_fields"].headers[bus.HDR_ERROR]
    assert "tenant_id" in error
    assert reasons["missing_fields"].headers[bus.HDR_STAGE] == "extractor"

    deadline = time.monotonic() + 60
    while points(stack, "pubtenant") == 0 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert points(stack, "pubtenant") >= 1
    assert metric(stack, "extractor", "facepipe_dlq_total") >= dlq_before + 2
    assert http_json(stack, "extractor", "/stats")["msgs_dlq"] >= 2


def test_crash_safety_embedder_sigkill(stack, split_faces, tmp_path) -> None:
    folder, _ = split_faces
    # Fresh copies under a new tenant, enough to have work in flight when the embedder dies.
    state = json.loads((stack["dir"] / "stack.json").read_text())
    pid = state["components"]["embedder"]["pid"]
    proc = subprocess.Popen(
        [
            str(VENV_BIN / "facepipe"),
            "ingest",
            str(folder),
            "--tenant",
            "crash",
            "--wait",
            "--json",
            "--data-dir",
            str(stack["dir"]),
        ],
        env=stack["env"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if http_json(stack, "embedder", "/stats").get("msgs_acked", 0) >= 2:
            break
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    summary = json.loads(out)
    assert summary["pending"] == 0 and summary["failed"] == 0
    restarted = json.loads((stack["dir"] / "stack.json").read_text())["components"]["embedder"]
    assert restarted["restarts"] >= 1 and restarted["pid"] != pid
    expected = points(stack, "acme")  # the same folder, fully indexed once for acme
    assert summary["faces_indexed"] == expected
    assert points(stack, "crash") == expected


def test_erase_by_url_and_tenant(stack, split_faces) -> None:
    folder, _ = split_faces
    photo = sorted(folder.rglob("*.jpg"))[0].resolve()
    url = photo.as_uri()
    objects_dir = Path(stack["state"]["env"]["FACEPIPE_OBJECT_DIR"])
    before = points(stack, "crash")
    crops_before = list((objects_dir / "face-crops" / "crash").rglob("*.jpg"))
    out = json.loads(run_cli(stack, "erase", "--tenant", "crash", "--url", url, "--json").stdout)
    assert out["points_deleted"] >= 1 and out["objects_deleted"] >= 3
    assert points(stack, "crash") == before - out["points_deleted"]
    crops_after = list((objects_dir / "face-crops" / "crash").rglob("*.jpg"))
    assert len(crops_after) == len(crops_before) - out["points_deleted"]

    out = json.loads(run_cli(stack, "erase", "--tenant", "crash", "--all", "--json").stdout)
    assert points(stack, "crash") == 0
    for bucket in ("raw-images", "face-crops", "face-thumbs"):
        left = [p for p in (objects_dir / bucket).rglob("*") if p.is_file() and "crash" in p.parts]
        assert left == [], left
    assert points(stack, "acme") > 0  # other tenants untouched

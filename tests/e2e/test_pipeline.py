"""Issue acceptance, end to end with real processes: `facepipe up` (nats-server
and every service), ingest, search, nats pub, dedup, erasure, and
`make run`'s demo script. Every test works in tenants of its own and ingests what
it checks, so the tests pass alone and in any order."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from conftest import ROOT, SHARED_FACES, run_facepipe, stack_channel, stack_nats_url

from facepipe.v1 import indexer_pb2, indexer_pb2_grpc

pytestmark = pytest.mark.slow

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")
# A generous deadline for what takes seconds, so a loaded machine cannot fail a test.
DEADLINE_S = 60.0


@pytest.fixture(scope="module")
def stack(shared_stack) -> dict:
    return shared_stack


# -- talking to the stack ------------------------------------------------------------
def run_cli(stack, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run_facepipe(*args, "--data-dir", str(stack["dir"]), env=stack["env"], check=check)


def ingest(stack, path: Path, tenant: str, *extra: str) -> dict:
    """``facepipe ingest PATH --wait --json``: the batch summary."""
    return json.loads(
        run_cli(stack, "ingest", str(path), "--tenant", tenant, "--wait", "--json", *extra).stdout
    )


def search(stack, photo: Path, tenant: str) -> list[dict]:
    """The matches of ``facepipe search PHOTO --json``, after checking it found a query face."""
    result = json.loads(run_cli(stack, "search", str(photo), "--tenant", tenant, "--json").stdout)
    assert result["query_faces"] >= 1, result
    return result["matches"]


def points(stack, tenant: str) -> int:
    with stack_channel(stack, "indexer") as ch:
        return indexer_pb2_grpc.IndexerStub(ch).GetStats(indexer_pb2.GetStatsRequest(tenant_id=tenant)).points


def wait_for_points(stack, tenant: str, at_least: int) -> int:
    deadline = time.monotonic() + DEADLINE_S
    while (count := points(stack, tenant)) < at_least and time.monotonic() < deadline:
        time.sleep(0.5)
    return count


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


def objects_dir(stack) -> Path:
    return Path(stack["state"]["env"]["FACEPIPE_OBJECT_DIR"])


# -- sample photos -----------------------------------------------------------------------
def photos_of(person: Path) -> list[Path]:
    return sorted(p for p in person.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)


def people() -> list[Path]:
    return sorted(p for p in SHARED_FACES.iterdir() if p.is_dir())


@pytest.fixture(scope="module")
def split_faces(tmp_path_factory) -> tuple[Path, list[Path]]:
    """../shared/faces minus one photo per identity, and the held-out photos."""
    root = tmp_path_factory.mktemp("faces")
    held_out = []
    for person in people():
        photos = photos_of(person)
        held_out.append(photos[0])
        (root / person.name).mkdir()
        for photo in photos[1:]:
            shutil.copy(photo, root / person.name / photo.name)
    return root, held_out


@pytest.fixture
def one_person(tmp_path) -> Path:
    """A small folder: every photo of the person with the fewest (for tests that need some
    faces, not all)."""
    person = min(people(), key=lambda p: len(photos_of(p)))
    root = tmp_path / "one-person"
    (root / person.name).mkdir(parents=True)
    for photo in photos_of(person):
        shutil.copy(photo, root / person.name / photo.name)
    return root


@dataclass(frozen=True)
class IndexedLibrary:
    """The split folder ingested once into a tenant that no test changes."""

    tenant: str
    folder: Path
    held_out: list[Path]
    summary: dict


@pytest.fixture(scope="module")
def indexed_library(stack, split_faces) -> IndexedLibrary:
    folder, held_out = split_faces
    return IndexedLibrary("library", folder, held_out, ingest(stack, folder, "library"))


# -- status ----------------------------------------------------------------------------
def test_status_lists_every_component(stack) -> None:
    rows = json.loads(run_cli(stack, "status", "--json").stdout)
    names = {r["name"] for r in rows}
    assert {"nats", "extractor", "detector", "embedder", "indexer"} <= names
    assert all(r["healthy"] for r in rows), rows
    for service in ("extractor", "detector", "embedder", "indexer"):
        ready = http_json(stack, service, "/readyz")
        assert ready["ready"], ready
        assert ready["checks"]["nats"] == "ok"


# -- ingest and search -------------------------------------------------------------------
def assert_first_ingest_indexed_every_image(stack, library: IndexedLibrary) -> None:
    summary = library.summary
    n_images = sum(1 for _ in library.folder.rglob("*.*"))
    assert summary["images"] == n_images
    assert summary["errors"] == [] and summary["pending"] == 0
    assert summary["faces_indexed"] >= n_images - summary["faces_dup_skipped"] - 1
    assert points(stack, library.tenant) == summary["faces_indexed"]


def assert_best_match_is_the_same_person(stack, photo: Path, tenant: str) -> None:
    matches = search(stack, photo, tenant)
    assert matches, f"no match for {photo}"
    best = matches[0]
    assert best["url"].startswith("file://")
    assert Path(best["url"][len("file://") :]).parent.name == photo.parent.name, (photo, matches[:3])
    assert {"score", "tenant_id", "image_sha256", "bbox", "thumb"} <= set(best)
    assert best["tenant_id"] == tenant and Path(best["thumb"]).is_file()


def test_ingest_and_search_identities(stack, indexed_library) -> None:
    assert_first_ingest_indexed_every_image(stack, indexed_library)
    for photo in indexed_library.held_out:
        assert_best_match_is_the_same_person(stack, photo, indexed_library.tenant)
    # Another tenant sees nothing of the library's faces.
    assert search(stack, indexed_library.held_out[0], "stranger") == []


# -- dedup -------------------------------------------------------------------------------
def resized_recompressed_copy(photo: Path, dest: Path) -> Path:
    """A new sha256 for the same face: 80% size, JPEG quality 70."""
    from PIL import Image

    img = Image.open(photo).convert("RGB")
    img = img.resize((int(img.width * 0.8), int(img.height * 0.8)))
    img.save(dest, "JPEG", quality=70)
    return dest


def assert_reingest_adds_nothing(stack, folder: Path, tenant: str) -> None:
    before = points(stack, tenant)
    dup_counter_before = http_json(stack, "extractor", "/stats")["faces_dup_skipped"]
    # --rescan: the files are read again, so the stack's own duplicate check is what answers.
    summary = ingest(stack, folder, tenant, "--rescan")
    assert summary["faces_indexed"] == 0
    # Known images are counted as such, their faces not again as near-duplicates.
    assert summary["duplicates"] == summary["images"] and summary["faces_dup_skipped"] == 0
    assert points(stack, tenant) == before
    assert http_json(stack, "extractor", "/stats")["faces_dup_skipped"] >= dup_counter_before + before


def assert_near_duplicate_is_skipped(stack, photo: Path, tenant: str, workdir: Path) -> None:
    before = points(stack, tenant)
    copy = resized_recompressed_copy(photo, workdir / "copy.jpg")
    summary = ingest(stack, copy, tenant)
    assert summary["faces_dup_skipped"] >= 1 and summary["faces_indexed"] == 0, summary
    assert points(stack, tenant) == before


def test_reingest_is_idempotent_and_near_duplicates_are_caught(stack, one_person, tmp_path) -> None:
    tenant = "reingest"
    first = ingest(stack, one_person, tenant)
    assert points(stack, tenant) == first["faces_indexed"] > 0
    assert_reingest_adds_nothing(stack, one_person, tenant)
    assert_near_duplicate_is_skipped(stack, sorted(one_person.rglob("*.jpg"))[0], tenant, tmp_path)


# -- messages published straight to NATS -----------------------------------------------------
def store_raw_image(stack, tenant: str, photo: Path) -> dict:
    """Puts ``photo`` where the crawler would, and returns the ingest message that names it."""
    data = photo.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    (objects_dir(stack) / "raw-images" / tenant).mkdir(parents=True, exist_ok=True)
    (objects_dir(stack) / "raw-images" / tenant / f"{sha}.jpg").write_bytes(data)
    return {
        "image_sha256": sha,
        "bucket": "raw-images",
        "key": f"{tenant}/{sha}.jpg",
        "tenant_id": tenant,
        "site": "example.org",
        "url": "https://example.org/photo.jpg",
        "image_phash": "",
        "face_hints": [],
    }


async def publish_and_collect_dead_letters(nats_url: str, bodies: list[bytes], expected: int) -> list:
    """Publishes ``bodies`` on facepipe.ingest; returns the extractor's dead letters that follow."""
    import nats
    from nats.js.api import ConsumerConfig, DeliverPolicy

    from facepipe import bus

    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        # Only letters from now on, and only of these bodies: other tests share the stack.
        dlq = await js.subscribe(
            f"{bus.SUBJECT_DLQ}.extractor",
            stream=bus.DLQ_STREAM,
            ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.NEW),
        )
        for body in bodies:
            await nc.publish(bus.SUBJECT_INGEST, body)
        await nc.flush()
        got = []
        deadline = time.monotonic() + DEADLINE_S
        while len(got) < expected and time.monotonic() < deadline:
            try:
                letter = await dlq.next_msg(timeout=5)
            except Exception:  # noqa: BLE001 - keep polling until the deadline
                continue
            if letter.data in bodies:
                got.append(letter)
        return got
    finally:
        await nc.close()


def test_nats_pub_seed_schema_and_dead_letters(stack, split_faces) -> None:
    from facepipe import bus

    folder, _ = split_faces
    tenant = "pubtenant"
    seed = store_raw_image(stack, tenant, sorted(folder.rglob("*.jpg"))[0])
    dlq_before = metric(stack, "extractor", "facepipe_dlq_total")
    dlq_stat_before = http_json(stack, "extractor", "/stats")["msgs_dlq"]

    bodies = [
        json.dumps(seed).encode(),
        b'{"site": "example.org", "url": ""}',  # valid JSON, missing fields
        b"\x00\x01 not a message",
    ]
    dead = asyncio.run(publish_and_collect_dead_letters(stack_nats_url(stack), bodies, expected=2))
    reasons = {m.headers.get(bus.HDR_REASON): m for m in dead}
    assert "missing_fields" in reasons and "malformed" in reasons, [m.headers for m in dead]
    error = reasons["missing_fields"].headers[bus.HDR_ERROR]
    assert "tenant_id" in error
    assert reasons["missing_fields"].headers[bus.HDR_STAGE] == "extractor"

    assert wait_for_points(stack, tenant, at_least=1) >= 1
    assert metric(stack, "extractor", "facepipe_dlq_total") >= dlq_before + 2
    assert http_json(stack, "extractor", "/stats")["msgs_dlq"] >= dlq_stat_before + 2


# -- crash safety: tests/e2e/test_faults.py kills stages holding messages, and nats-server ----


# -- erasure -------------------------------------------------------------------------------
def files_of(stack, tenant: str, bucket: str, pattern: str = "*") -> list[Path]:
    return [p for p in (objects_dir(stack) / bucket).rglob(pattern) if p.is_file() and tenant in p.parts]


def test_erase_by_url_and_tenant(stack, one_person, indexed_library) -> None:
    tenant = "erase"
    ingest(stack, one_person, tenant)

    photo = sorted(one_person.rglob("*.jpg"))[0].resolve()
    before = points(stack, tenant)
    crops_before = files_of(stack, tenant, "face-crops", "*.jpg")
    out = json.loads(run_cli(stack, "erase", "--tenant", tenant, "--url", photo.as_uri(), "--json").stdout)
    assert out["points_deleted"] >= 1 and out["objects_deleted"] >= 3
    assert points(stack, tenant) == before - out["points_deleted"]
    assert len(files_of(stack, tenant, "face-crops", "*.jpg")) == len(crops_before) - out["points_deleted"]

    run_cli(stack, "erase", "--tenant", tenant, "--all", "--json")
    assert points(stack, tenant) == 0
    for bucket in ("raw-images", "face-crops", "face-thumbs"):
        left = files_of(stack, tenant, bucket)
        assert left == [], left
    # Other tenants untouched (the library holds the same person's faces too).
    assert points(stack, indexed_library.tenant) == indexed_library.summary["faces_indexed"]


# -- make run ----------------------------------------------------------------------------------
DEMO_LINE = re.compile(r"^\s*(\S+) -> (\S+)\s+score ", re.M)


def run_demo(stack, tenant: str) -> subprocess.CompletedProcess:
    """scripts/demo.sh (what `make run` runs after setup) against this stack."""
    env = {
        **stack["env"],
        "SAMPLES": "../shared/faces",
        "TENANT": tenant,
        "FACEPIPE_DATA_DIR": str(stack["dir"]),
    }
    result = subprocess.run(
        ["bash", "scripts/demo.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    return result


def demo_matches(output: str) -> dict[str, str]:
    """Each held-out photo's person -> the person of its best match, as the demo prints them."""
    return dict(DEMO_LINE.findall(output))


def test_demo_finds_every_held_out_person_and_is_idempotent(stack) -> None:
    tenant = "demo"
    expected = {person.name: person.name for person in people() if len(photos_of(person)) >= 2}

    first = run_demo(stack, tenant)
    assert "the local stack is already running" in first.stdout
    # The web UI's address, from `facepipe status --json`, and nothing on stderr about it.
    assert re.search(r"^== web UI: http://127\.0\.0\.1:\d+/ \(tenant 'demo'", first.stdout, re.M), (
        first.stdout
    )
    assert "Error" not in first.stderr, first.stderr
    assert demo_matches(first.stdout) == expected, first.stdout
    indexed = points(stack, tenant)
    assert indexed > 0

    second = run_demo(stack, tenant)
    assert demo_matches(second.stdout) == expected, second.stdout
    assert points(stack, tenant) == indexed  # re-ingesting added nothing

"""Storage layer: the same behaviour checked on every implementation.

Object store: a local folder, and S3 against a real moto server on a free port.
Vector store: Qdrant Edge in-process, and qdrant-client's local mode (server API).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from moto.server import ThreadedMotoServer

from facepipe.storage import objects
from facepipe.storage.objects import (
    LocalObjectStore,
    ObjectNotFound,
    ObjectStore,
    S3ObjectStore,
    object_store_from_env,
)
from facepipe.storage.vectors import (
    CollectionMissing,
    DimensionMismatch,
    EdgeVectorStore,
    FacePoint,
    QdrantServerVectorStore,
    StoreLocked,
    VectorStore,
    vector_store_from_env,
)
from facepipe.storage.vectors.base import Range

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- object store ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalObjectStore(tmp_path / "objects")
    endpoint = request.getfixturevalue("moto_endpoint")
    return S3ObjectStore(endpoint, access_key="testing", secret_key="testing")


@pytest.fixture
def bucket() -> str:
    # One fresh bucket per test keeps tests on the shared moto server apart.
    return f"t-{uuid.uuid4().hex[:12]}"


def test_put_get_exists_list_delete(store: ObjectStore, bucket: str) -> None:
    blob = bytes(range(256)) * 40
    store.put(bucket, "img/ab/cd.jpg", blob, content_type="image/jpeg")
    store.put(bucket, "img/ab/ef.jpg", b"second")
    store.put(bucket, "top.bin", bytearray(b"top"))

    assert store.get(bucket, "img/ab/cd.jpg") == blob
    assert store.exists(bucket, "img/ab/ef.jpg")
    assert not store.exists(bucket, "img/ab")  # a prefix is not an object
    assert sorted(store.list(bucket)) == ["img/ab/cd.jpg", "img/ab/ef.jpg", "top.bin"]
    assert sorted(store.list(bucket, "img/")) == ["img/ab/cd.jpg", "img/ab/ef.jpg"]
    assert sorted(store.list(bucket, "img/ab/e")) == ["img/ab/ef.jpg"]

    store.put(bucket, "img/ab/ef.jpg", b"overwritten")
    assert store.get(bucket, "img/ab/ef.jpg") == b"overwritten"

    assert store.delete(bucket, "img/ab/cd.jpg") is True
    assert store.delete(bucket, "img/ab/cd.jpg") is False
    assert not store.exists(bucket, "img/ab/cd.jpg")
    assert sorted(store.list(bucket)) == ["img/ab/ef.jpg", "top.bin"]


def test_missing_objects(store: ObjectStore, bucket: str) -> None:
    with pytest.raises(ObjectNotFound, match="no-such-bucket-x/k"):
        store.get("no-such-bucket-x", "k")
    store.put(bucket, "present", b"1")
    with pytest.raises(ObjectNotFound) as err:
        store.get(bucket, "absent")
    assert (err.value.bucket, err.value.key) == (bucket, "absent")
    assert isinstance(err.value, LookupError)
    assert not store.exists(bucket, "absent")
    assert store.delete(bucket, "absent") is False
    assert list(store.list("no-such-bucket-x")) == []
    assert store.delete_prefix("no-such-bucket-x", "") == 0


def test_delete_prefix(store: ObjectStore, bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(objects, "_DELETE_BATCH", 4)  # several S3 batches with few objects
    keys = [f"tenant-a/img{i}/crop{j}.jpg" for i in range(3) for j in range(4)]
    keys += ["tenant-ab/x.jpg", "tenant-b/y.jpg"]
    for k in keys:
        store.put(bucket, k, k.encode())

    # String-prefix semantics, as in S3: "tenant-a" also matches "tenant-ab".
    assert store.delete_prefix(bucket, "tenant-a/img1/") == 4
    assert store.delete_prefix(bucket, "tenant-a/img1/") == 0
    assert store.delete_prefix(bucket, "tenant-a/") == 8
    assert sorted(store.list(bucket)) == ["tenant-ab/x.jpg", "tenant-b/y.jpg"]
    assert store.delete_prefix(bucket, "tenant-a") == 1
    assert list(store.list(bucket)) == ["tenant-b/y.jpg"]
    assert store.get(bucket, "tenant-b/y.jpg") == b"tenant-b/y.jpg"


@pytest.mark.parametrize("key", ["", "../escape", "a/../../b", "/etc/passwd", "a//b", "./a", "a\\b", "C:/x"])
def test_invalid_keys_rejected(store: ObjectStore, bucket: str, key: str) -> None:
    with pytest.raises(ValueError, match="invalid object key"):
        store.put(bucket, key, b"x")
    with pytest.raises(ValueError, match="invalid object key"):
        store.get(bucket, key)


@pytest.mark.parametrize("name", ["UPPER", "ab", "under_score", "-dash", "a..b", "../up"])
def test_invalid_buckets_rejected(store: ObjectStore, name: str) -> None:
    with pytest.raises(ValueError, match="invalid bucket name"):
        store.put(name, "k", b"x")


def test_non_bytes_rejected(store: ObjectStore, bucket: str) -> None:
    with pytest.raises(TypeError, match="bytes"):
        store.put(bucket, "k", "text")  # type: ignore[arg-type]
    assert not store.exists(bucket, "k")


def test_ping_and_describe(store: ObjectStore) -> None:
    store.ping()
    assert store.describe().startswith(("local:/", "s3://127.0.0.1:"))


def test_s3_ping_fails_when_unreachable() -> None:
    dead = S3ObjectStore(f"127.0.0.1:{free_port()}", "testing", "testing", timeout_s=2)
    with pytest.raises(Exception, match="127.0.0.1"):
        dead.ping()


def test_local_layout_and_empty_dir_cleanup(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    store.put("face-crops", "t1/aa/bb/face.jpg", b"x")
    assert (tmp_path / "face-crops" / "t1" / "aa" / "bb" / "face.jpg").read_bytes() == b"x"
    store.put("face-crops", "t1/keep.jpg", b"y")
    assert store.delete("face-crops", "t1/aa/bb/face.jpg")
    assert not (tmp_path / "face-crops" / "t1" / "aa").exists()
    assert (tmp_path / "face-crops" / "t1" / "keep.jpg").exists()
    assert store.delete_prefix("face-crops", "t1/") == 1
    assert (tmp_path / "face-crops").is_dir()  # the bucket itself stays
    assert list((tmp_path / "face-crops").iterdir()) == []
    assert list((tmp_path / ".staging").iterdir()) == []


def test_local_key_clash_fails_cleanly(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    store.put("raw-images", "a", b"file")
    with pytest.raises(ValueError, match="clashes"):
        store.put("raw-images", "a/b", b"under a file")
    store.put("raw-images", "dir/x", b"1")
    with pytest.raises(ValueError, match="clashes"):
        store.put("raw-images", "dir", b"onto a folder")
    assert store.get("raw-images", "a") == b"file"
    assert sorted(store.list("raw-images")) == ["a", "dir/x"]
    assert list((tmp_path / ".staging").iterdir()) == []


def test_local_readers_never_see_partial_writes(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    versions = [bytes([i]) * (2 * 1024 * 1024) for i in range(1, 5)]
    store.put("raw-images", "big.bin", versions[0])
    stop = threading.Event()
    reads, torn = [0], [0]

    def reader() -> None:
        while not stop.is_set():
            reads[0] += 1
            torn[0] += store.get("raw-images", "big.bin") not in versions

    t = threading.Thread(target=reader)
    t.start()
    try:
        for _ in range(5):
            for v in versions:
                store.put("raw-images", "big.bin", v)
    finally:
        stop.set()
        t.join()
    assert reads[0] > 0 and torn[0] == 0


def test_local_sweeps_stale_staging_files(tmp_path: Path) -> None:
    LocalObjectStore(tmp_path).put("raw-images", "k", b"v")
    staging = tmp_path / ".staging"
    stale, fresh = staging / "put-stale", staging / "put-fresh"
    stale.write_bytes(b"left by a crash")
    fresh.write_bytes(b"a write in progress")
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    LocalObjectStore(tmp_path)
    assert not stale.exists() and fresh.exists()


def test_local_crash_mid_write_leaves_old_or_new_object(tmp_path: Path) -> None:
    # A real writer process killed with SIGKILL while it rewrites one key in a loop.
    script = textwrap.dedent(
        f"""
        import sys
        from facepipe.storage.objects import LocalObjectStore
        store = LocalObjectStore({str(tmp_path)!r})
        i = 0
        while True:
            i = i % 250 + 1
            store.put("raw-images", "obj.bin", bytes([i]) * (8 * 1024 * 1024))
            if i == 1:
                print("wrote", flush=True)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "wrote"
        time.sleep(0.3)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    data = LocalObjectStore(tmp_path).get("raw-images", "obj.bin")
    assert len(data) == 8 * 1024 * 1024 and data == data[:1] * len(data)
    assert sorted(LocalObjectStore(tmp_path).list("raw-images")) == ["obj.bin"]


def test_object_store_from_env(tmp_path: Path, moto_endpoint: str) -> None:
    local = object_store_from_env({"FACEPIPE_HOME": str(tmp_path)})
    assert isinstance(local, LocalObjectStore) and local.root == tmp_path / "objects"
    local = object_store_from_env({"FACEPIPE_OBJECT_DIR": str(tmp_path / "o")})
    assert local.describe() == f"local:{tmp_path / 'o'}"

    s3 = object_store_from_env(
        {
            "FACEPIPE_OBJECT_STORE": "s3",
            "FACEPIPE_S3_ENDPOINT": moto_endpoint,
            "FACEPIPE_S3_ACCESS_KEY": "testing",
            "FACEPIPE_S3_SECRET_KEY": "testing",
            "FACEPIPE_S3_SECURE": "false",
        }
    )
    assert isinstance(s3, S3ObjectStore)
    s3.put(objects.FACE_THUMBS_BUCKET, "k", b"v")
    assert s3.get(objects.FACE_THUMBS_BUCKET, "k") == b"v"
    with pytest.raises(ValueError, match="FACEPIPE_S3_ENDPOINT"):
        object_store_from_env({"FACEPIPE_OBJECT_STORE": "s3"})
    with pytest.raises(ValueError, match="expected 'local' or 's3'"):
        object_store_from_env({"FACEPIPE_OBJECT_STORE": "ftp"})


# --- vector store ----------------------------------------------------------------------------

DIM = 64
Opener = Callable[[], VectorStore]


@pytest.fixture(params=["edge", "qdrant-local"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    opened: list[VectorStore] = []

    def opener() -> VectorStore:
        if request.param == "edge":
            s: VectorStore = EdgeVectorStore(tmp_path / "vectors")
        else:
            s = QdrantServerVectorStore(path=str(tmp_path / "qdrant"))
        opened.append(s)
        return s

    yield opener
    for s in opened:
        s.close()


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def make_points(rng: np.random.Generator, tenant: str, n: int) -> list[FacePoint]:
    return [
        FacePoint(
            id=str(uuid.uuid4()),
            vector=unit(rng.standard_normal(DIM)).astype(np.float32),
            payload={
                "tenant_id": tenant,
                "site": f"site{i % 2}.example",
                "url": f"https://site{i % 2}.example/{tenant}/{i}.jpg",
                "image_sha256": f"{tenant}-{i // 2:04d}",
                "face_index": i % 2,
            },
        )
        for i in range(n)
    ]


@pytest.fixture
def filled(open_store: Opener) -> tuple[VectorStore, list[FacePoint], list[FacePoint]]:
    store = open_store()
    store.ensure_collection(DIM)
    rng = np.random.default_rng(7)
    a, b = make_points(rng, "tenant-a", 40), make_points(rng, "tenant-b", 20)
    store.upsert(a + b)
    return store, a, b


def test_nearest_neighbour_of_noisy_copy(filled) -> None:
    store, a, _ = filled
    rng = np.random.default_rng(1)
    for p in a[:10]:
        noisy = np.asarray(p.vector) + 0.15 * rng.standard_normal(DIM) / np.sqrt(DIM)
        hits = store.search(noisy, "tenant-a", top_k=5)
        assert hits[0].id == p.id and hits[0].payload == p.payload
        assert hits[0].score > 0.95 > hits[1].score
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_tenants_are_isolated(filled) -> None:
    store, a, b = filled
    b_ids = {p.id for p in b}
    for p in a[:5]:
        hits = store.search(p.vector, "tenant-b", top_k=100)
        assert {h.id for h in hits} <= b_ids and len(hits) == len(b)
        assert p.id not in {h.id for h in store.scroll("tenant-b")}
    assert store.search(a[0].vector, "tenant-c", top_k=100) == []
    assert store.count("tenant-a") == 40 and store.count("tenant-b") == 20 and store.count() == 60
    assert store.delete("tenant-b", {"url": a[0].payload["url"]}) == []
    assert store.count("tenant-a") == 40
    for bad in ("", None):
        with pytest.raises(ValueError, match="tenant_id is required"):
            store.search(a[0].vector, bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="tenant_id is required"):
            store.delete(bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="tenant_id is required"):
            store.scroll(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not in filters"):
        store.search(a[0].vector, "tenant-b", filters={"tenant_id": "tenant-a"})


def test_min_score_cuts(filled) -> None:
    store, a, _ = filled
    hits = store.search(a[3].vector, "tenant-a", top_k=40, min_score=0.999)
    assert [h.id for h in hits] == [a[3].id]
    loose = store.search(a[3].vector, "tenant-a", top_k=40, min_score=0.1)
    assert 1 < len(loose) < 40 and all(h.score >= 0.1 for h in loose)
    away = -np.asarray(a[3].vector)
    assert store.search(away, "tenant-a", top_k=40, min_score=0.99) == []


def test_filters(filled) -> None:
    store, a, _ = filled
    hits = store.search(a[0].vector, "tenant-a", top_k=100, filters={"site": "site1.example"})
    assert len(hits) == 20 and all(h.payload["site"] == "site1.example" for h in hits)
    assert a[0].id not in {h.id for h in hits}
    hits = store.search(a[5].vector, "tenant-a", filters={"url": a[5].payload["url"]})
    assert [h.id for h in hits] == [a[5].id]
    both = store.search(a[0].vector, "tenant-a", filters={"image_sha256": "tenant-a-0003", "face_index": 1})
    assert [h.id for h in both] == [a[7].id]
    assert len(store.scroll("tenant-a", {"site": "site0.example"})) == 20
    assert len(store.scroll("tenant-a", limit=7)) == 7


def test_search_many_matches_search_one_by_one(filled) -> None:
    store, a, b = filled
    queries = np.stack([np.asarray(p.vector) for p in a[:6] + b[:2]])
    batched = store.search_many(queries, "tenant-a", top_k=5)
    assert len(batched) == len(queries)
    for query, hits in zip(queries, batched, strict=True):
        single = store.search(query, "tenant-a", top_k=5)
        assert [h.id for h in hits] == [h.id for h in single]
        assert [h.payload for h in hits] == [h.payload for h in single]
        assert [h.score for h in hits] == pytest.approx([h.score for h in single], abs=1e-5)
    wide = store.search_many(queries, "tenant-a", top_k=5, hnsw_ef=128)
    assert [[h.id for h in hits] for hits in wide] == [[h.id for h in hits] for hits in batched]
    with pytest.raises(ValueError, match="hnsw_ef"):
        store.search_many(queries, "tenant-a", hnsw_ef=0)
    bare = store.search_many(queries[:2], "tenant-a", top_k=3, with_payload=False)
    assert [h.id for h in bare[0]] == [h.id for h in batched[0][:3]] and bare[0][0].payload == {}
    assert store.search_many(queries[:1], "tenant-b", top_k=50, filters={"site": "site0.example"})[0]
    assert store.search_many(np.zeros((0, DIM)), "tenant-a") == []
    with pytest.raises(ValueError, match="tenant_id is required"):
        store.search_many(queries, "")
    with pytest.raises(ValueError, match="two-dimensional"):
        store.search_many(queries[0], "tenant-a")


def test_vector_pages_list_every_vector_of_the_tenant(filled) -> None:
    store, a, _ = filled
    pages = list(store.vector_pages("tenant-a", page=7))
    assert [len(p.ids) for p in pages][:-1] == [7] * (len(pages) - 1)
    ids = [i for p in pages for i in p.ids]
    assert sorted(ids) == sorted(p.id for p in a)
    stored = {i: v for p in pages for i, v in zip(p.ids, p.vectors, strict=True)}
    for p in a:
        assert np.allclose(stored[p.id], p.vector, atol=1e-5)  # the points are unit vectors
    site1 = [i for p in store.vector_pages("tenant-a", {"site": "site1.example"}) for i in p.ids]
    assert len(site1) == 20
    assert list(store.vector_pages("tenant-c")) == []
    with pytest.raises(ValueError, match="tenant_id is required"):
        list(store.vector_pages(""))


def test_range_filters_on_capture_time(filled) -> None:
    """Photos carry ``taken_at`` (ms); a range finds those inside it and never one without."""
    store, a, _ = filled
    dated = [FacePoint(p.id, p.vector, {**p.payload, "taken_at": 1_000 * i}) for i, p in enumerate(a[:10])]
    store.upsert(dated)
    inside = store.search(
        a[0].vector, "tenant-a", top_k=100, filters={"taken_at": Range(gte=3_000, lt=6_000)}
    )
    assert {h.id for h in inside} == {p.id for p in a[3:6]}
    after = store.scroll("tenant-a", {"taken_at": Range(gte=8_000)})
    assert {p.id for p in after} == {p.id for p in a[8:10]}
    before = store.scroll("tenant-a", {"taken_at": Range(lt=1_000), "site": "site0.example"})
    assert [p.id for p in before] == [a[0].id]
    assert len(store.scroll("tenant-a", {"taken_at": Range()})) == 10  # undated points never match


def test_upsert_is_idempotent(filled) -> None:
    store, a, _ = filled
    changed = [FacePoint(p.id, p.vector, {**p.payload, "site": "moved.example"}) for p in a[:5]]
    store.upsert(changed)
    store.upsert(changed)
    assert store.count() == 60 and store.count("tenant-a") == 40
    moved = store.scroll("tenant-a", {"site": "moved.example"})
    assert {p.id for p in moved} == {p.id for p in a[:5]}


def test_delete_returns_payloads_and_erases(filled) -> None:
    store, a, b = filled
    target = a[4]
    gone = store.delete("tenant-a", {"url": target.payload["url"]})
    assert gone == [target.payload]
    assert store.count("tenant-a") == 39
    assert target.id not in {h.id for h in store.search(target.vector, "tenant-a", top_k=100)}
    assert store.delete("tenant-a", {"url": target.payload["url"]}) == []

    site0 = store.delete("tenant-a", {"site": "site0.example"})
    assert len(site0) == 19 and all(p["site"] == "site0.example" for p in site0)
    assert store.count("tenant-a") == 20

    rest = store.delete("tenant-a")
    assert sorted(p["url"] for p in rest) == sorted(
        p.payload["url"] for p in a if p.payload["site"] == "site1.example"
    )
    assert store.count("tenant-a") == 0
    assert store.search(a[1].vector, "tenant-a", top_k=10) == []
    assert store.scroll("tenant-a") == []
    assert store.count("tenant-b") == len(b)  # the other tenant is untouched
    assert store.search(b[0].vector, "tenant-b", top_k=1)[0].id == b[0].id


def test_reopen_keeps_points(open_store: Opener) -> None:
    store = open_store()
    store.ensure_collection(DIM)
    points = make_points(np.random.default_rng(3), "t", 12)
    store.upsert(points)
    store.delete("t", {"url": points[0].payload["url"]})
    store.flush()
    store.close()

    again = open_store()
    assert again.count("t") == 11
    assert again.search(points[5].vector, "t", top_k=1)[0].id == points[5].id
    again.ensure_collection(DIM)  # existing collection, same dim: fine
    again.upsert(make_points(np.random.default_rng(4), "t", 1))
    assert again.count() == 12


def test_dimension_mismatch(open_store: Opener) -> None:
    store = open_store()
    store.ensure_collection(DIM)
    with pytest.raises(DimensionMismatch, match="vector size|not 65"):
        store.ensure_collection(DIM + 1)
    good, bad = make_points(np.random.default_rng(5), "t", 2)
    bad.vector = np.ones(DIM + 1)
    with pytest.raises(DimensionMismatch, match="65 dimensions"):
        store.upsert([good, bad])
    assert store.count() == 0  # nothing of the bad batch was written
    with pytest.raises(ValueError, match="not a UUID"):
        store.upsert([FacePoint("face-1", np.ones(DIM), {"tenant_id": "t"})])
    with pytest.raises(ValueError, match="NaN"):
        store.upsert([FacePoint(str(uuid.uuid4()), np.full(DIM, np.nan), {"tenant_id": "t"})])
    with pytest.raises(ValueError, match="positive"):
        store.ensure_collection(0)


def test_before_collection_exists(open_store: Opener) -> None:
    store = open_store()
    assert store.count() == 0 and store.count("t") == 0
    assert store.search(np.ones(DIM), "t") == []
    assert store.scroll("t") == [] and store.delete("t") == []
    store.ping()
    with pytest.raises(CollectionMissing, match="ensure_collection"):
        store.upsert(make_points(np.random.default_rng(6), "t", 1))


def test_concurrent_threads(open_store: Opener) -> None:
    store = open_store()
    store.ensure_collection(DIM)
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            pts = make_points(np.random.default_rng(100 + n), f"t{n}", 25)
            for chunk in range(0, 25, 5):
                store.upsert(pts[chunk : chunk + 5])
                store.search(pts[chunk].vector, f"t{n}", top_k=3)
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.count() == 100 and all(store.count(f"t{n}") == 25 for n in range(4))


def test_edge_second_opener_is_refused(tmp_path: Path) -> None:
    first = EdgeVectorStore(tmp_path)
    first.ensure_collection(8)
    try:
        with pytest.raises(StoreLocked, match=f"pid {os.getpid()}"):
            EdgeVectorStore(tmp_path)
        script = (
            "from facepipe.storage.vectors import EdgeVectorStore, StoreLocked\n"
            f"try:\n    EdgeVectorStore({str(tmp_path)!r})\n"
            "except StoreLocked as e:\n    print('locked:', e)\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60
        )
        assert out.stdout.startswith("locked:") and "another process" in out.stdout, out.stderr
    finally:
        first.close()
    with EdgeVectorStore(tmp_path) as second:  # released on close
        assert second.count() == 0
    with pytest.raises(RuntimeError, match="closed"):
        second.count()


def test_edge_optimize_builds_index(tmp_path: Path) -> None:
    with EdgeVectorStore(tmp_path) as store:
        store.ensure_collection(DIM)
        points = make_points(np.random.default_rng(8), "t", 30)
        store.upsert(points)
        store.delete("t", {"site": "site0.example"})
        store.optimize()
        assert store.count("t") == 15
        assert store.search(points[1].vector, "t", top_k=1)[0].id == points[1].id


def test_vector_store_from_env(tmp_path: Path) -> None:
    with vector_store_from_env({"FACEPIPE_HOME": str(tmp_path)}) as store:
        assert isinstance(store, EdgeVectorStore)
        assert store.describe() == f"qdrant-edge:{tmp_path / 'vectors' / 'faces'}"
    env = {"FACEPIPE_VECTOR_DIR": str(tmp_path / "v"), "FACEPIPE_QDRANT_COLLECTION": "faces_v2"}
    with vector_store_from_env(env) as store:
        assert store.describe() == f"qdrant-edge:{tmp_path / 'v' / 'faces_v2'}"
    with pytest.raises(ValueError, match="FACEPIPE_QDRANT_URL"):
        vector_store_from_env({"FACEPIPE_VECTOR_STORE": "qdrant"})
    with pytest.raises(ValueError, match="expected 'edge' or 'qdrant'"):
        vector_store_from_env({"FACEPIPE_VECTOR_STORE": "milvus"})


def test_set_payload_retrieve_and_vectors_stay_in_the_tenant(filled) -> None:
    store, a, b = filled
    person = {"person_id": "p" * 32, "person_pinned": True}
    # Points of another tenant and unknown points are skipped, never changed.
    unknown = "00000000-0000-0000-0000-000000000001"
    changed = store.set_payload(
        "tenant-a", {a[0].id: person, a[1].id: person, b[0].id: person, unknown: person}
    )
    assert changed == 2
    assert {p.id for p in store.scroll("tenant-a", {"person_id": "p" * 32})} == {a[0].id, a[1].id}
    assert store.scroll("tenant-b", {"person_id": "p" * 32}) == []
    [got] = store.retrieve("tenant-a", [a[0].id])
    assert got.payload["person_pinned"] is True and got.payload["site"] == a[0].payload["site"]
    assert store.retrieve("tenant-b", [a[0].id]) == []
    vectors = store.vectors("tenant-a", [a[2].id, b[1].id])
    assert list(vectors) == [a[2].id] and np.allclose(vectors[a[2].id], a[2].vector, atol=1e-5)
    # Other keys may change one point at a time; a point never moves to another tenant.
    store.set_payload("tenant-a", {a[0].id: {"person_id": ""}})
    assert store.retrieve("tenant-a", [a[0].id])[0].payload["person_id"] == ""
    with pytest.raises(ValueError, match="another tenant"):
        store.set_payload("tenant-a", {a[0].id: {"tenant_id": "tenant-b"}})

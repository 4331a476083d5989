"""The indexer as a real process: real NATS, real faces, a real gRPC client.

Faces of ../shared/faces are detected and embedded in-process, stored under the
object layout the embedder writes (crop, sidecar, thumbnail, raw image) and
published as EmbeddedImage messages; the indexer consumes them into its Qdrant
Edge shard and answers Search, GetStats and DeleteFaces.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import nats
import numpy as np
import pytest

from facepipe import bus
from facepipe.dedup import FaceHashIndex, ImageStates, phash_hex
from facepipe.faces import FaceEngine
from facepipe.imaging import decode_image, encode_jpeg
from facepipe.pipeline import point_id
from facepipe.protoconv import embedding_to_proto, face_to_proto
from facepipe.storage import (
    FACE_CROPS_BUCKET,
    FACE_THUMBS_BUCKET,
    RAW_IMAGES_BUCKET,
    EdgeVectorStore,
    LocalObjectStore,
)
from facepipe.storage.vectors.collections import active_collection
from facepipe.v1 import common_pb2, indexer_pb2, indexer_pb2_grpc, pipeline_pb2

PAYLOAD_KEYS = {
    "tenant_id",
    "site",
    "url",
    "page_url",
    "alt_text",
    "image_sha256",
    "phash",
    "phash_prefix",
    "face_phash",
    "face_index",
    "bbox",
    "score",
    "quality",
    "crop_key",
    "thumb_key",
    "crop_bucket",
    "thumb_bucket",
    "model",
    "dim",
    "indexed_at",
    # The photo library's (taken_at, lat and lon only when the photo gives them).
    "has_gps",
    "camera_make",
    "camera_model",
    "folder",
    "folders",
    "width",
    "height",
    "image_thumb_key",
}


@dataclass
class FaceData:
    face: common_pb2.Face
    vector: np.ndarray
    crop_jpg: bytes
    thumb_jpg: bytes
    face_phash: str


@dataclass
class Photo:
    path: Path
    identity: str
    data: bytes
    sha: str
    phash: str
    width: int
    height: int
    faces: list[FaceData]

    @property
    def site(self) -> str:
        return f"{self.identity.replace('_', '-')}.example"

    @property
    def url(self) -> str:
        return f"https://{self.site}/photos/{self.path.name}"


@pytest.fixture(scope="module")
def photos(settings, face_files) -> dict[str, list[Photo]]:
    """Every photo of ../shared/faces with its accepted faces, by identity (first one held out)."""

    async def analyse() -> list[Photo]:
        engine = FaceEngine.load(settings, "test")
        try:
            out = []
            for path in face_files:
                data = path.read_bytes()
                image = decode_image(data)
                found = await engine.detector.detect(image, engine.detector.params())
                vectors, crops = await engine.embedder.embed_faces(image.bgr, [f.landmarks for f in found])
                faces = []
                for f, vector, crop in zip(found, vectors, crops, strict=True):
                    x1, y1, x2, y2 = (int(v) for v in f.box)
                    thumb = image.bgr[max(0, y1) : y2, max(0, x1) : x2]
                    faces.append(
                        FaceData(
                            face_to_proto(f), vector, encode_jpeg(crop), encode_jpeg(thumb), phash_hex(crop)
                        )
                    )
                out.append(
                    Photo(
                        path,
                        path.parent.name,
                        data,
                        hashlib.sha256(data).hexdigest(),
                        phash_hex(image.bgr),
                        image.width,
                        image.height,
                        faces,
                    )
                )
            return out
        finally:
            await engine.close()

    by_identity: dict[str, list[Photo]] = {}
    for photo in asyncio.run(analyse()):
        by_identity.setdefault(photo.identity, []).append(photo)
    assert all(p.faces for ps in by_identity.values() for p in ps), "every shared photo has a face"
    return by_identity


def training(photos: dict[str, list[Photo]]) -> list[Photo]:
    return [p for ps in photos.values() for p in ps[1:]]


def held_out(photos: dict[str, list[Photo]]) -> list[Photo]:
    return [ps[0] for ps in photos.values()]


def build(
    photo: Photo, tenant: str, objects: LocalObjectStore, batch: str, message_id: str, model: str
) -> pipeline_pb2.EmbeddedImage:
    """Stores the photo's raw image, crops, sidecars and thumbnails as the pipeline does."""
    ext = photo.path.suffix.lower().lstrip(".").replace("jpeg", "jpg")
    raw_key = f"{tenant}/{photo.sha}.{ext}"
    objects.put(RAW_IMAGES_BUCKET, raw_key, photo.data)
    record = pipeline_pb2.ImageRecord(
        tenant_id=tenant,
        site=photo.site,
        url=photo.url,
        page_url=f"https://{photo.site}/",
        image_sha256=photo.sha,
        phash=photo.phash,
        raw=common_pb2.ObjectRef(bucket=RAW_IMAGES_BUCKET, key=raw_key),
        width=photo.width,
        height=photo.height,
        size_bytes=len(photo.data),
        batch_id=batch,
        message_id=message_id,
    )
    msg = pipeline_pb2.EmbeddedImage(image=record, faces_rejected=1, faces_dup_skipped=0)
    for index, f in enumerate(photo.faces):
        key = f"{tenant}/{photo.sha}/{index}.jpg"
        objects.put(FACE_CROPS_BUCKET, key, f.crop_jpg)
        objects.put(FACE_CROPS_BUCKET, key[:-4] + ".json", json.dumps({"face_index": index}).encode())
        objects.put(FACE_THUMBS_BUCKET, key, f.thumb_jpg)
        msg.faces.append(
            pipeline_pb2.EmbeddedFace(
                face_index=index,
                face=f.face,
                embedding=embedding_to_proto(f.vector, model),
                crop=common_pb2.ObjectRef(bucket=FACE_CROPS_BUCKET, key=key),
                thumb=common_pb2.ObjectRef(bucket=FACE_THUMBS_BUCKET, key=key),
                face_phash=f.face_phash,
            )
        )
    return msg


def object_files(root: Path, tenant: str, sha: str) -> list[Path]:
    """Every stored file of one image: raw, and per face crop, sidecar and thumbnail."""
    return sorted(
        [*(root / RAW_IMAGES_BUCKET / tenant).glob(f"{sha}.*")]
        + [*(root / FACE_CROPS_BUCKET / tenant / sha).glob("*")]
        + [*(root / FACE_THUMBS_BUCKET / tenant / sha).glob("*")]
    )


class Pipeline:
    """The test's side of NATS: publishes embedded images, collects completion events."""

    def __init__(self, url: str, model: str) -> None:
        self.url = url
        self.model = model
        self.nc = None
        self.js = None

    async def __aenter__(self) -> Pipeline:
        self.nc = await nats.connect(self.url)
        self.js = self.nc.jetstream()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.nc.close()

    async def publish(self, msg: pipeline_pb2.EmbeddedImage, msg_id: str | None = "") -> None:
        if msg_id == "":
            msg_id = f"embedded.{msg.image.message_id}"
        await bus.publish(self.js, bus.SUBJECT_EMBEDDED, msg.SerializeToString(), msg_id=msg_id)

    async def done(self, batch: str, expected: int, wait_s: float = 30) -> list[pipeline_pb2.ImageDone]:
        sub = await self.js.subscribe(
            f"{bus.SUBJECT_DONE}.{batch}", stream=bus.EVENTS_STREAM, ordered_consumer=True
        )
        out = []
        deadline = time.monotonic() + wait_s
        try:
            while len(out) < expected and time.monotonic() < deadline:
                try:
                    m = await sub.next_msg(timeout=1)
                except nats.errors.TimeoutError:
                    continue
                event = pipeline_pb2.ImageDone()
                event.ParseFromString(m.data)
                out.append(event)
        finally:
            await sub.unsubscribe()
        assert len(out) == expected, f"{len(out)} of {expected} done events for {batch}"
        return out

    async def drained(self, wait_s: float = 20) -> None:
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            info = await self.js.consumer_info(bus.STREAM, "indexer")
            if not info.num_pending and not info.num_ack_pending:
                return
            await asyncio.sleep(0.1)
        raise AssertionError("the indexer consumer did not drain")


def env_for(tmp_path: Path, nats_url: str) -> dict[str, str]:
    return {
        "FACEPIPE_NATS_URL": nats_url,
        "FACEPIPE_OBJECT_DIR": str(tmp_path / "objects"),
        "FACEPIPE_VECTOR_DIR": str(tmp_path / "vectors"),
        # Low enough that the background optimize runs during the test.
        "FACEPIPE_OPTIMIZE_EVERY": "10",
    }


async def index_all(
    pipe: Pipeline, objects: LocalObjectStore, photos: list[Photo], tenant: str, batch: str
) -> list[pipeline_pb2.EmbeddedImage]:
    msgs = [build(p, tenant, objects, batch, f"{batch}-{i}", pipe.model) for i, p in enumerate(photos)]
    for m in msgs:
        await pipe.publish(m)
    events = await pipe.done(batch, len(msgs))
    by_id = {e.message_id: e for e in events}
    for m in msgs:
        e = by_id[m.image.message_id]
        assert e.status == pipeline_pb2.IMAGE_STATUS_INDEXED and e.stage == "indexer", e
        assert (e.faces_indexed, e.faces_rejected) == (len(m.faces), 1)
        assert (e.tenant_id, e.image_sha256, e.url) == (tenant, m.image.image_sha256, m.image.url)
    return msgs


def search_vector(tenant: str, vector, **kw) -> indexer_pb2.SearchRequest:
    return indexer_pb2.SearchRequest(
        tenant_id=tenant, vector=common_pb2.Embedding(vector=[float(v) for v in vector]), **kw
    )


async def expect_invalid(call, request, words: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value
    assert words in err.value.details(), err.value.details()


async def test_index_search_and_stats(tmp_path, nats_server, start_service, photos, settings) -> None:
    indexer = start_service("indexer", env=env_for(tmp_path, nats_server.url))
    objects = LocalObjectStore(tmp_path / "objects")
    train = training(photos)
    n_faces = sum(len(p.faces) for p in train)
    obama = photos["barack_obama"]

    async with grpc.aio.insecure_channel(indexer.addr) as channel:
        stub = indexer_pb2_grpc.IndexerStub(channel)
        empty = await stub.GetStats(indexer_pb2.GetStatsRequest())
        assert empty.points == 0 and empty.dim > 0 and empty.model
        async with Pipeline(nats_server.url, empty.model) as pipe:
            acme = await index_all(pipe, objects, train, "acme", "b1")
            await index_all(pipe, objects, obama[1:2], "beta", "b2")

            # The done event goes out before the ack is counted: wait for the count.
            deadline = time.monotonic() + 60
            while True:
                stats = await stub.GetStats(indexer_pb2.GetStatsRequest(tenant_id="acme"))
                if stats.counters["msgs_acked"] >= len(train) + 1 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            assert stats.points == n_faces
            assert stats.counters["msgs_acked"] == len(train) + 1
            assert stats.counters["faces_processed"] == n_faces + len(obama[1].faces)
            assert stats.counters["faces_rejected"] == len(train) + 1
            # The kinds of store, never the server's paths.
            assert (stats.vector_store, stats.object_store) == ("qdrant-edge", "local")
            total = await stub.GetStats(indexer_pb2.GetStatsRequest())
            assert total.points == n_faces + len(obama[1].faces)
            assert (await stub.GetStats(indexer_pb2.GetStatsRequest(tenant_id="nobody"))).points == 0

            # A redelivery and a republish under a new message id both upsert the same point ids.
            await pipe.publish(acme[0], msg_id=None)
            again = pipeline_pb2.EmbeddedImage()
            again.CopyFrom(acme[0])
            again.image.message_id = "b1-again"
            await pipe.publish(again)
            await pipe.done("b1", len(acme) + 1)
            await pipe.drained()
            assert (await stub.GetStats(indexer_pb2.GetStatsRequest(tenant_id="acme"))).points == n_faces

            # A face of another dimension can never be indexed: dead-lettered, and reported FAILED.
            bad = pipeline_pb2.EmbeddedImage()
            bad.CopyFrom(acme[1])
            bad.image.batch_id, bad.image.message_id = "b3", "b3-0"
            del bad.faces[0].embedding.vector[3:]
            await pipe.publish(bad)
            (failed,) = await pipe.done("b3", 1)
            assert failed.status == pipeline_pb2.IMAGE_STATUS_FAILED and "index holds" in failed.error
            assert (await stub.GetStats(indexer_pb2.GetStatsRequest(tenant_id="acme"))).points == n_faces

        # By vector: the face itself comes first, with everything the payload holds.
        photo = train[0]
        res = await stub.Search(search_vector("acme", photo.faces[0].vector, top_k=5))
        assert len(res.matches) == 5
        top = res.matches[0]
        assert top.point_id == point_id("acme", photo.sha, 0) and top.score > 0.99
        assert (top.tenant_id, top.site, top.url, top.image_sha256) == (
            "acme",
            photo.site,
            photo.url,
            photo.sha,
        )
        assert top.page_url == f"https://{photo.site}/" and top.face_index == 0 and top.model == empty.model
        box = photo.faces[0].face.box
        assert [top.bbox.x1, top.bbox.y2] == pytest.approx([box.x1, box.y2], abs=1e-3)
        assert top.det_score == pytest.approx(photo.faces[0].face.score, abs=1e-5)
        assert top.quality == pytest.approx(photo.faces[0].face.quality.score, abs=1e-5)
        assert top.crop == common_pb2.ObjectRef(bucket=FACE_CROPS_BUCKET, key=f"acme/{photo.sha}/0.jpg")
        assert (
            top.thumb.bucket == FACE_THUMBS_BUCKET
            and (tmp_path / "objects" / "face-thumbs" / top.thumb.key).is_file()
        )
        assert abs(top.indexed_at_ms / 1000 - time.time()) < 120
        assert [m.score for m in res.matches] == sorted((m.score for m in res.matches), reverse=True)
        # Unnormalised queries are normalised; min_score and filters restrict.
        res = await stub.Search(search_vector("acme", photo.faces[0].vector * 7.5, min_score=0.99))
        assert [m.point_id for m in res.matches] == [point_id("acme", photo.sha, 0)]
        other = photos["nicole_kidman"][1]
        res = await stub.Search(
            search_vector("acme", photo.faces[0].vector, filter=indexer_pb2.SearchFilter(site=other.site))
        )
        assert res.matches and {m.site for m in res.matches} == {other.site}
        res = await stub.Search(
            search_vector("acme", photo.faces[0].vector, filter=indexer_pb2.SearchFilter(url=other.url))
        )
        assert {m.image_sha256 for m in res.matches} == {other.sha}

        # By image: a held-out photo finds its own identity first.
        for query in held_out(photos):
            res = await stub.Search(indexer_pb2.SearchRequest(tenant_id="acme", image=query.data))
            assert res.query_faces_found >= 1 and res.query_face.quality.accepted
            own = {p.sha for p in photos[query.identity][1:]}
            assert res.matches[0].image_sha256 in own, (query.path, res.matches[0].url)
        faceless = encode_jpeg(np.full((200, 300, 3), 128, np.uint8))
        res = await stub.Search(indexer_pb2.SearchRequest(tenant_id="acme", image=faceless))
        assert res.query_faces_found == 0 and not res.matches

        # Tenants are isolated: beta sees only its own face, whatever the query.
        res = await stub.Search(search_vector("beta", photo.faces[0].vector, top_k=100))
        assert [m.point_id for m in res.matches] == [point_id("beta", obama[1].sha, 0)]
        res = await stub.Search(indexer_pb2.SearchRequest(tenant_id="gamma", image=obama[0].data))
        assert res.query_faces_found >= 1 and not res.matches

        dim = len(photo.faces[0].vector)
        await expect_invalid(stub.Search, search_vector("", photo.faces[0].vector), "tenant_id")
        await expect_invalid(stub.Search, search_vector("no/such tenant", photo.faces[0].vector), "tenant_id")
        await expect_invalid(stub.Search, search_vector("acme", [0.1] * (dim + 1)), f"{dim + 1} dimensions")
        await expect_invalid(stub.Search, search_vector("acme", [0.0] * dim), "all zeros")
        await expect_invalid(
            stub.Search,
            indexer_pb2.SearchRequest(tenant_id="acme", image=b"\xff\xd8 not a jpeg"),
            "not a recognised",
        )
        await expect_invalid(stub.Search, indexer_pb2.SearchRequest(tenant_id="acme", image=b""), "empty")
        await expect_invalid(stub.Search, search_vector("acme", photo.faces[0].vector, top_k=1001), "top_k")
        await expect_invalid(stub.Search, indexer_pb2.SearchRequest(tenant_id="acme"), "give a query")
        await expect_invalid(stub.GetStats, indexer_pb2.GetStatsRequest(tenant_id="a b"), "tenant_id")

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{indexer.http_port}", timeout=5) as http:
        for _ in range(200):  # the optimize runs in the background
            stats = (await http.get("/stats")).json()
            if stats["optimizations"] >= 1:
                break
            await asyncio.sleep(0.1)
        ready = (await http.get("/readyz")).json()
    assert stats["points"] == n_faces + len(obama[1].faces) and stats["msgs_dlq"] == 1
    assert stats["optimizations"] >= 1  # every 10 changed points here
    assert ready["ready"] and {"nats", "vector_store", "object_store", "models"} <= set(ready["checks"])


async def test_erasure_shutdown_and_restart(tmp_path, nats_server, start_service, photos, settings) -> None:
    env = env_for(tmp_path, nats_server.url)
    indexer = start_service("indexer", env=env)
    root = tmp_path / "objects"
    objects = LocalObjectStore(root)
    train = training(photos)
    brad, nicole, kit = photos["brad_pitt"][1:], photos["nicole_kidman"][1:], photos["kit_harington"][1:]

    # Only this process may open the shard: a second indexer on the same directory refuses to start.
    second = start_service("indexer", env=env, wait=False)
    assert second.proc.wait(60) != 0 and "open in another process" in second.log()

    async with grpc.aio.insecure_channel(indexer.addr) as channel:
        stub = indexer_pb2_grpc.IndexerStub(channel)
        model = (await stub.GetStats(indexer_pb2.GetStatsRequest())).model

        async def points(tenant: str) -> int:
            return (await stub.GetStats(indexer_pb2.GetStatsRequest(tenant_id=tenant))).points

        async def found(tenant: str, photo: Photo) -> set[str]:
            res = await stub.Search(search_vector(tenant, photo.faces[0].vector, top_k=1000))
            return {m.point_id for m in res.matches if m.image_sha256 == photo.sha}

        async with Pipeline(nats_server.url, model) as pipe:
            await index_all(pipe, objects, train, "acme", "e1")
            await index_all(pipe, objects, brad[:1], "beta", "e2")
            images = await ImageStates.open(pipe.js)
            hashes = await FaceHashIndex.open(pipe.js)
            for p in train:  # as the embedder records them
                for i, f in enumerate(p.faces):
                    await hashes.add("acme", f.face_phash, point_id("acme", p.sha, i))
            state = await images.get("acme", brad[0].sha)
            assert state is not None and state.state == "indexed" and state.faces == len(brad[0].faces)

            total = await points("acme")
            # By url: that image's points, files and dedup state go; the same image in beta stays.
            target = brad[0]
            assert len(object_files(root, "acme", target.sha)) == 1 + 3 * len(target.faces)
            resp = await stub.DeleteFaces(indexer_pb2.DeleteFacesRequest(tenant_id="acme", url=target.url))
            assert (resp.points_deleted, resp.objects_deleted) == (
                len(target.faces),
                1 + 3 * len(target.faces),
            )
            assert object_files(root, "acme", target.sha) == [] and not await found("acme", target)
            assert await points("acme") == total - len(target.faces)
            assert await images.get("acme", target.sha) is None
            assert await hashes.find("acme", target.faces[0].face_phash, 0) is None
            assert object_files(root, "beta", target.sha) and await found("beta", target)
            assert object_files(root, "acme", brad[1].sha) and await found("acme", brad[1])

            # By site: every image of the site.
            gone = sum(len(p.faces) for p in nicole)
            resp = await stub.DeleteFaces(
                indexer_pb2.DeleteFacesRequest(tenant_id="acme", site=nicole[0].site)
            )
            assert (resp.points_deleted, resp.objects_deleted) == (gone, len(nicole) + 3 * gone)
            for p in nicole:
                assert object_files(root, "acme", p.sha) == [] and not await found("acme", p)
                assert await images.get("acme", p.sha) is None
            assert await points("acme") == total - len(target.faces) - gone

            # By sha.
            resp = await stub.DeleteFaces(
                indexer_pb2.DeleteFacesRequest(tenant_id="acme", image_sha256=kit[0].sha)
            )
            assert resp.points_deleted == len(kit[0].faces) and resp.objects_deleted == 1 + 3 * len(
                kit[0].faces
            )
            assert object_files(root, "acme", kit[0].sha) == [] and not await found("acme", kit[0])
            assert await found("acme", kit[1])
            remaining = await points("acme")
            assert remaining == total - len(target.faces) - gone - len(kit[0].faces)

            # Nothing matches: nothing happens. Bad requests are refused.
            resp = await stub.DeleteFaces(
                indexer_pb2.DeleteFacesRequest(tenant_id="acme", url="https://nowhere/x")
            )
            assert (resp.points_deleted, resp.objects_deleted) == (0, 0)
            for request, words in [
                (indexer_pb2.DeleteFacesRequest(site="x"), "tenant_id"),
                (indexer_pb2.DeleteFacesRequest(tenant_id="acme"), "give what to delete"),
                (indexer_pb2.DeleteFacesRequest(tenant_id="acme", all=False), "give what to delete"),
                (indexer_pb2.DeleteFacesRequest(tenant_id="acme", image_sha256="../x"), "64 lowercase hex"),
            ]:
                await expect_invalid(stub.DeleteFaces, request, words)
            assert await points("acme") == remaining

            # Re-ingesting an erased image works again.
            await index_all(pipe, objects, [target], "acme", "e3")
            assert await found("acme", target) and await points("acme") == remaining + len(target.faces)
            remaining += len(target.faces)

    # SIGTERM: a clean exit that flushes and releases the shard.
    assert indexer.stop() == 0, indexer.log()
    # The indexer wrote to the active model's own collection.
    with EdgeVectorStore(tmp_path / "vectors", active_collection(settings)) as store:
        stored = store.scroll("acme", limit=1000)
        assert len(stored) == remaining
        for p in stored:
            assert set(p.payload) == PAYLOAD_KEYS
            assert p.payload["phash_prefix"] == p.payload["phash"][:4] and len(p.payload["phash"]) == 16
            assert p.payload["dim"] == len(train[0].faces[0].vector) and p.payload["model"] == model

    restarted = start_service("indexer", env=env)
    async with grpc.aio.insecure_channel(restarted.addr) as channel:
        stub = indexer_pb2_grpc.IndexerStub(channel)
        assert await points("acme") == remaining and await points("beta") == len(brad[0].faces)
        assert await found("acme", brad[1])

        # Everything of a tenant: points, all three buckets and its dedup state; beta is untouched.
        resp = await stub.DeleteFaces(indexer_pb2.DeleteFacesRequest(tenant_id="acme", all=True))
        assert resp.points_deleted == remaining and resp.objects_deleted > remaining
        assert await points("acme") == 0 and not await found("acme", brad[1])
        for bucket in (RAW_IMAGES_BUCKET, FACE_CROPS_BUCKET, FACE_THUMBS_BUCKET):
            assert not list((root / bucket).glob("acme/**/*.*")), bucket
        assert await points("beta") == len(brad[0].faces) and object_files(root, "beta", brad[0].sha)
    async with Pipeline(nats_server.url, model) as pipe:
        images = await ImageStates.open(pipe.js)
        assert await images.get("acme", brad[1].sha) is None
        assert await images.get("beta", brad[0].sha) is not None
    assert restarted.stop() == 0, restarted.log()

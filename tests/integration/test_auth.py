"""API keys on every gRPC method of every service, against real service processes
sharing one real nats-server (the key store) and a service credential.

The method list comes from the proto descriptors, so a method added without an
access rule, or without a case here, fails ``test_every_method_has_a_rule_and_a_case``.
Each method is called with no key, a key of another tenant, a key whose role is too
weak and the right key."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import nats
import pytest
from conftest import SHARED_FACES, VENV_BIN, ServiceProcess, free_port, run_facepipe, wait_serving
from google.protobuf import message_factory
from google.protobuf.message import Message

from facepipe import auth
from facepipe.auth.client import channel
from facepipe.auth.keys import ROLES, KeyStore, make_record, new_key
from facepipe.v1 import (
    common_pb2,
    crawler_pb2,
    detector_pb2,
    embedder_pb2,
    extractor_pb2,
    indexer_pb2,
    indexer_pb2_grpc,
    inference_pb2,
    persons_pb2,
    persons_pb2_grpc,
    pipeline_pb2,
    recognizer_pb2,
)

PROTO_MODULES = (
    crawler_pb2,
    detector_pb2,
    embedder_pb2,
    extractor_pb2,
    indexer_pb2,
    inference_pb2,
    persons_pb2,
    recognizer_pb2,
)
SERVICE_OF = {
    "facepipe.v1.Crawler": "crawler",
    "facepipe.v1.Detector": "detector",
    "facepipe.v1.Embedder": "embedder",
    "facepipe.v1.Extractor": "extractor",
    "facepipe.v1.Indexer": "indexer",
    "facepipe.v1.InferenceNode": "node",
    "facepipe.v1.Persons": "persons",
    "facepipe.v1.Recognizer": "recognizer",
}
OURS, THEIRS = "acme", "other"
# An object of our tenant; it need not exist (a missing image is a per-image error, not a refusal).
SHA = hashlib.sha256(b"no such image").hexdigest()
OUR_OBJECT = ("raw-images", f"{OURS}/{SHA}.jpg")
DIM = 128  # the bundled recognizer's
PHOTO = (SHARED_FACES / "brad_pitt" / "brad_1.jpg").read_bytes()


def all_methods() -> dict[str, object]:
    """Every gRPC method of every facepipe service, by full path, from the descriptors."""
    found = {}
    for module in PROTO_MODULES:
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                found[f"/{service.full_name}/{method.name}"] = method
    return found


METHODS = all_methods()


@dataclass
class Deployment:
    nats_url: str
    service_key: str
    services: dict[str, ServiceProcess]
    keys: dict[tuple[str, str], str]  # (tenant, role) -> key
    env: dict[str, str]
    job_id: str = ""
    optout_id: str = ""
    # Two persons of our tenant, one face each.
    person_a: str = ""
    person_b: str = ""
    face_a: str = ""
    face_b: str = ""
    subject_id: str = ""  # with two faces, one of them removed by RemoveSubjectFaces
    face_id: str = ""
    doomed_subject_id: str = ""  # for DeleteSubject

    def key(self, tenant: str, role: str) -> str:
        return self.service_key if role == "service" else self.keys[(tenant, role)]


async def _make_keys(nats_url: str) -> dict[tuple[str, str], str]:
    nc = await nats.connect(nats_url)
    try:
        store = await KeyStore.open(nc.jetstream())
        keys = {}
        for tenant in (OURS, THEIRS, auth.ANY_TENANT):
            for role in ("reader", "writer", "admin"):
                key, _ = await store.create(tenant, role)
                keys[(tenant, role)] = key
        return keys
    finally:
        await nc.close()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, facepipe_home) -> Iterator[Deployment]:
    from facepipe.natsd import NatsServer

    work = tmp_path_factory.mktemp("auth")
    nats = NatsServer(port=free_port(), http_port=free_port(), store_dir=work / "nats")
    nats.start(log_path=work / "nats.log")
    service_key = new_key()[1]
    (work / "service.key").write_text(service_key)
    env = {
        **os.environ,
        "FACEPIPE_HOME": str(facepipe_home),
        "FACEPIPE_NATS_URL": nats.url,
        "FACEPIPE_AUTH": "on",
        "FACEPIPE_SERVICE_KEY_FILE": str(work / "service.key"),
        "FACEPIPE_OBJECT_DIR": str(work / "objects"),
        "FACEPIPE_VECTOR_DIR": str(work / "vectors"),
        "FACEPIPE_GRPC_HOST": "127.0.0.1",
        "FACEPIPE_DRAIN_SECONDS": "2",
        "FACEPIPE_CRAWL_RETRIES": "0",
        "PYTHONUNBUFFERED": "1",
    }
    services: dict[str, ServiceProcess] = {}
    ports = {name: (free_port(), free_port()) for name in sorted(set(SERVICE_OF.values()))}
    env["FACEPIPE_PERSONS_INDEXER_ADDR"] = f"127.0.0.1:{ports['indexer'][0]}"
    try:
        for name in sorted(set(SERVICE_OF.values())):
            grpc_port, http_port = ports[name]
            log_path = work / f"{name}.log"
            proc = subprocess.Popen(
                [str(VENV_BIN / "facepipe"), "serve", name, "--port", str(grpc_port)]
                + ["--http-port", str(http_port)],
                env=env,
                stdout=open(log_path, "wb"),  # noqa: SIM115 - closed with the process
                stderr=subprocess.STDOUT,
            )
            services[name] = ServiceProcess(name, grpc_port, http_port, proc, log_path, env)
        for sp in services.values():
            try:
                wait_serving(sp.addr, timeout=120, proc=sp.proc)
            except Exception:
                raise RuntimeError(f"{sp.name} failed to start:\n{sp.log()}") from None
        keys = asyncio.run(_make_keys(nats.url))
        deployment = Deployment(nats.url, service_key, services, keys, env)
        # A crawl job of our tenant, for GetCrawl and CancelCrawl.
        with channel(services["crawler"].addr, keys[(OURS, "writer")]) as ch:
            start = ch.unary_unary(
                "/facepipe.v1.Crawler/StartCrawl",
                request_serializer=crawler_pb2.StartCrawlRequest.SerializeToString,
                response_deserializer=crawler_pb2.StartCrawlResponse.FromString,
            )
            deployment.job_id = start(
                crawler_pb2.StartCrawlRequest(seeds=["https://example.invalid/"], tenant_id=OURS), timeout=30
            ).job_id
        # An opt-out of our tenant, for RemoveOptOut.
        with channel(services["indexer"].addr, keys[(OURS, "admin")]) as ch:
            optout = ch.unary_unary(
                "/facepipe.v1.Indexer/OptOut",
                request_serializer=indexer_pb2.OptOutRequest.SerializeToString,
                response_deserializer=indexer_pb2.OptOutResponse.FromString,
            )
            deployment.optout_id = optout(
                indexer_pb2.OptOutRequest(tenant_id=OURS, images=[PHOTO]), timeout=60
            ).optout_id
        _make_persons(deployment)
        # Subjects of our tenant, for the Recognizer's methods that name one.
        with channel(services["recognizer"].addr, keys[(OURS, "writer")]) as ch:
            enrol = ch.unary_unary(
                "/facepipe.v1.Recognizer/EnrolSubject",
                request_serializer=recognizer_pb2.EnrolSubjectRequest.SerializeToString,
                response_deserializer=recognizer_pb2.EnrolSubjectResponse.FromString,
            )
            subject = enrol(
                recognizer_pb2.EnrolSubjectRequest(tenant_id=OURS, name="kept", images=[PHOTO, PHOTO]),
                timeout=60,
            ).subject
            deployment.subject_id, deployment.face_id = subject.subject_id, subject.faces[0].face_id
            deployment.doomed_subject_id = enrol(
                recognizer_pb2.EnrolSubjectRequest(tenant_id=OURS, name="doomed", images=[PHOTO]), timeout=60
            ).subject.subject_id
        yield deployment
    finally:
        for sp in services.values():
            sp.stop()
        nats.stop()


def _make_persons(d: Deployment) -> None:
    """Two persons of our tenant, from two photos ingested through the pipeline."""
    photos = [SHARED_FACES / "barack_obama" / "obama.jpg", SHARED_FACES / "nicole_kidman" / "nicole_1.jpg"]
    run_facepipe("ingest", *map(str, photos), "--tenant", OURS, "--wait", env=d.env)
    request = persons_pb2.ListPersonsRequest(tenant_id=OURS, with_faces=True)
    deadline = time.monotonic() + 60
    with channel(d.services["persons"].addr, d.keys[(OURS, "reader")]) as ch:
        while True:
            found = persons_pb2_grpc.PersonsStub(ch).ListPersons(request, timeout=30).persons
            if len(found) == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert len(found) == 2, found
    (d.person_a, d.face_a), (d.person_b, d.face_b) = sorted((p.person_id, p.faces[0].point_id) for p in found)


def _ref_image() -> common_pb2.ImageInput:
    return common_pb2.ImageInput(id="ref", ref=common_pb2.ObjectRef(bucket=OUR_OBJECT[0], key=OUR_OBJECT[1]))


# What each method is called with: a request the right key may make, touching tenant OURS.
REQUESTS: dict[str, Callable[[Deployment], object]] = {
    "/facepipe.v1.Indexer/Search": lambda d: indexer_pb2.SearchRequest(
        tenant_id=OURS, vector=common_pb2.Embedding(vector=[1.0] + [0.0] * (DIM - 1))
    ),
    "/facepipe.v1.Indexer/GetStats": lambda d: indexer_pb2.GetStatsRequest(tenant_id=OURS),
    "/facepipe.v1.Indexer/ListFaces": lambda d: indexer_pb2.ListFacesRequest(tenant_id=OURS),
    "/facepipe.v1.Indexer/DeleteFaces": lambda d: indexer_pb2.DeleteFacesRequest(
        tenant_id=OURS, image_sha256=SHA
    ),
    "/facepipe.v1.Indexer/OptOut": lambda d: indexer_pb2.OptOutRequest(tenant_id=OURS, images=[PHOTO]),
    "/facepipe.v1.Indexer/ListOptOuts": lambda d: indexer_pb2.ListOptOutsRequest(tenant_id=OURS),
    "/facepipe.v1.Indexer/RemoveOptOut": lambda d: indexer_pb2.RemoveOptOutRequest(
        tenant_id=OURS, optout_id=d.optout_id
    ),
    "/facepipe.v1.Indexer/ListAuditRecords": lambda d: indexer_pb2.ListAuditRecordsRequest(tenant_id=OURS),
    "/facepipe.v1.Indexer/Reindex": lambda d: indexer_pb2.ReindexRequest(tenant_id=OURS, wait=True),
    "/facepipe.v1.Indexer/FaceNeighbors": lambda d: indexer_pb2.FaceNeighborsRequest(
        tenant_id=OURS, point_ids=[d.face_a]
    ),
    "/facepipe.v1.Indexer/SetFacePersons": lambda d: indexer_pb2.SetFacePersonsRequest(tenant_id=OURS),
    "/facepipe.v1.Indexer/FaceGraph": lambda d: indexer_pb2.FaceGraphRequest(tenant_id=OURS, k=4),
    "/facepipe.v1.Persons/ListPersons": lambda d: persons_pb2.ListPersonsRequest(tenant_id=OURS),
    "/facepipe.v1.Persons/GetPerson": lambda d: persons_pb2.GetPersonRequest(
        tenant_id=OURS, person_id=d.person_a
    ),
    "/facepipe.v1.Persons/RenamePerson": lambda d: persons_pb2.RenamePersonRequest(
        tenant_id=OURS, person_id=d.person_a, name="A"
    ),
    "/facepipe.v1.Persons/MergePersons": lambda d: persons_pb2.MergePersonsRequest(
        tenant_id=OURS, into_person_id=d.person_a, person_ids=[d.person_b]
    ),
    "/facepipe.v1.Persons/SplitPerson": lambda d: persons_pb2.SplitPersonRequest(
        tenant_id=OURS, person_id=d.person_a, point_ids=[d.face_a]
    ),
    "/facepipe.v1.Persons/HidePerson": lambda d: persons_pb2.HidePersonRequest(
        tenant_id=OURS, person_id=d.person_a
    ),
    "/facepipe.v1.Persons/UnassignFace": lambda d: persons_pb2.UnassignFaceRequest(
        tenant_id=OURS, point_id=d.face_b
    ),
    "/facepipe.v1.Persons/Recluster": lambda d: persons_pb2.ReclusterRequest(tenant_id=OURS, wait=True),
    "/facepipe.v1.Extractor/Ingest": lambda d: pipeline_pb2.IngestRequest(
        tenant_id=OURS, bucket=OUR_OBJECT[0], key=OUR_OBJECT[1]
    ),
    "/facepipe.v1.Crawler/StartCrawl": lambda d: crawler_pb2.StartCrawlRequest(
        seeds=["https://example.invalid/"], tenant_id=OURS
    ),
    "/facepipe.v1.Crawler/GetCrawl": lambda d: crawler_pb2.GetCrawlRequest(job_id=d.job_id),
    "/facepipe.v1.Crawler/CancelCrawl": lambda d: crawler_pb2.CancelCrawlRequest(job_id=d.job_id),
    "/facepipe.v1.Detector/DetectBatch": lambda d: detector_pb2.DetectBatchRequest(images=[_ref_image()]),
    "/facepipe.v1.Detector/DetectStream": lambda d: detector_pb2.DetectBatchRequest(images=[_ref_image()]),
    "/facepipe.v1.Embedder/EmbedBatch": lambda d: embedder_pb2.EmbedBatchRequest(
        inputs=[embedder_pb2.EmbedInput(id="ref", image=_ref_image(), faces=[common_pb2.Face()])]
    ),
    "/facepipe.v1.InferenceNode/Infer": lambda d: inference_pb2.TensorBatch(batch_id="b", model="none.onnx"),
    "/facepipe.v1.InferenceNode/ListModels": lambda d: inference_pb2.ListModelsRequest(),
    "/facepipe.v1.Recognizer/EnrolSubject": lambda d: recognizer_pb2.EnrolSubjectRequest(
        tenant_id=OURS, name="new", images=[PHOTO]
    ),
    "/facepipe.v1.Recognizer/ListSubjects": lambda d: recognizer_pb2.ListSubjectsRequest(tenant_id=OURS),
    "/facepipe.v1.Recognizer/GetSubject": lambda d: recognizer_pb2.GetSubjectRequest(
        tenant_id=OURS, subject_id=d.subject_id
    ),
    "/facepipe.v1.Recognizer/UpdateSubject": lambda d: recognizer_pb2.UpdateSubjectRequest(
        tenant_id=OURS, subject_id=d.subject_id, name="renamed"
    ),
    "/facepipe.v1.Recognizer/RemoveSubjectFaces": lambda d: recognizer_pb2.RemoveSubjectFacesRequest(
        tenant_id=OURS, subject_id=d.subject_id, face_ids=[d.face_id]
    ),
    "/facepipe.v1.Recognizer/DeleteSubject": lambda d: recognizer_pb2.DeleteSubjectRequest(
        tenant_id=OURS, subject_id=d.doomed_subject_id
    ),
    "/facepipe.v1.Recognizer/Verify": lambda d: recognizer_pb2.VerifyRequest(
        tenant_id=OURS, image_a=PHOTO, image_b=PHOTO
    ),
    "/facepipe.v1.Recognizer/Recognize": lambda d: recognizer_pb2.RecognizeRequest(
        tenant_id=OURS, image=PHOTO
    ),
    "/facepipe.v1.Recognizer/RecognizeStream": lambda d: recognizer_pb2.RecognizeFrame(
        tenant_id=OURS, camera_id="door", image=PHOTO
    ),
    "/facepipe.v1.Recognizer/ListAccessLog": lambda d: recognizer_pb2.ListAccessLogRequest(tenant_id=OURS),
}


def call(d: Deployment, path: str, key: str | None, request: Message | None = None) -> grpc.StatusCode:
    """The status of calling ``path`` with ``key`` and its request (else the one given)."""
    method = METHODS[path]
    service = SERVICE_OF[path.split("/")[1]]
    response_type = message_factory.GetMessageClass(method.output_type)
    request = REQUESTS[path](d) if request is None else request
    with channel(d.services[service].addr, key) as ch:
        try:
            if method.client_streaming:
                stub = ch.stream_stream(
                    path,
                    request_serializer=type(request).SerializeToString,
                    response_deserializer=response_type.FromString,
                )
                list(stub(iter([request]), timeout=60))
            elif method.server_streaming:
                stub = ch.unary_stream(
                    path,
                    request_serializer=type(request).SerializeToString,
                    response_deserializer=response_type.FromString,
                )
                list(stub(request, timeout=60))
            else:
                stub = ch.unary_unary(
                    path,
                    request_serializer=type(request).SerializeToString,
                    response_deserializer=response_type.FromString,
                )
                stub(request, timeout=60)
        except grpc.RpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


def test_every_method_has_a_rule_and_a_case() -> None:
    assert set(METHODS) == set(auth.METHOD_RULES), "every gRPC method needs an access rule"
    assert set(METHODS) == set(REQUESTS), "every gRPC method needs a case in this test"


def _weaker(role: str) -> str | None:
    rank = ROLES.index(role)
    return ROLES[rank - 1] if rank else None


# Methods whose requests name no tenant at all: a key of any tenant may call them.
TENANTLESS = {"/facepipe.v1.InferenceNode/Infer", "/facepipe.v1.InferenceNode/ListModels"}


@pytest.mark.parametrize("path", sorted(REQUESTS))
def test_access_matrix(deployment: Deployment, path: str) -> None:
    rule = auth.METHOD_RULES[path]
    d = deployment
    outcomes = {"no key": call(d, path, None)}
    if rule.role == "service":
        outcomes["right key"] = call(d, path, d.service_key)
        outcomes["too weak a role"] = call(d, path, d.keys[(auth.ANY_TENANT, "admin")])
    else:
        outcomes["right key"] = call(d, path, d.key(OURS, rule.role))
        outcomes["another tenant's key"] = call(d, path, d.key(THEIRS, rule.role))
        weaker = _weaker(rule.role)
        if weaker is not None:
            outcomes["too weak a role"] = call(d, path, d.key(OURS, weaker))
    expected = {
        "no key": grpc.StatusCode.UNAUTHENTICATED,
        "right key": grpc.StatusCode.OK,
        "another tenant's key": grpc.StatusCode.PERMISSION_DENIED,
        "too weak a role": grpc.StatusCode.PERMISSION_DENIED,
    }
    assert outcomes == {case: expected[case] for case in outcomes}
    if path not in TENANTLESS and rule.role != "service":
        # The service credential is every tenant's; a tenant's key is refused as too weak.
        assert "another tenant's key" in outcomes


def test_a_recluster_status_is_checked_like_a_recluster(deployment: Deployment) -> None:
    """``status_only`` starts nothing, but goes through the method's rule all the same."""
    d, path = deployment, "/facepipe.v1.Persons/Recluster"
    role = auth.METHOD_RULES[path].role
    weaker = _weaker(role)
    assert weaker is not None
    status = persons_pb2.ReclusterRequest(tenant_id=OURS, status_only=True)
    keys = {
        "no key": None,
        "right key": d.key(OURS, role),
        "another tenant's key": d.key(THEIRS, role),
        "too weak a role": d.key(OURS, weaker),
    }
    assert {case: call(d, path, key, status) for case, key in keys.items()} == {
        "no key": grpc.StatusCode.UNAUTHENTICATED,
        "right key": grpc.StatusCode.OK,
        "another tenant's key": grpc.StatusCode.PERMISSION_DENIED,
        "too weak a role": grpc.StatusCode.PERMISSION_DENIED,
    }


def test_unknown_malformed_and_expired_keys_are_unauthenticated(deployment: Deployment) -> None:
    path = "/facepipe.v1.Indexer/GetStats"
    unknown = new_key()[1]
    assert call(deployment, path, unknown) == grpc.StatusCode.UNAUTHENTICATED
    assert call(deployment, path, "not-a-key") == grpc.StatusCode.UNAUTHENTICATED
    key = new_key()[1]
    expired = make_record(key, OURS, "admin", expires_at=time.time() - 1)

    async def put() -> None:
        nc = await nats.connect(deployment.nats_url)
        try:
            await (await KeyStore.open(nc.jetstream())).put(expired)
        finally:
            await nc.close()

    asyncio.run(put())
    assert call(deployment, path, key) == grpc.StatusCode.UNAUTHENTICATED


def _code_and_details(fn) -> tuple[grpc.StatusCode, str]:
    try:
        fn()
    except grpc.RpcError as exc:
        return exc.code(), exc.details()
    return grpc.StatusCode.OK, ""


def test_refs_to_another_tenants_objects_are_refused(deployment: Deployment) -> None:
    d = deployment
    theirs = common_pb2.ImageInput(
        id="x", ref=common_pb2.ObjectRef(bucket="raw-images", key=f"{THEIRS}/{SHA}.jpg")
    )
    sneaky = common_pb2.ImageInput(
        id="y", ref=common_pb2.ObjectRef(bucket="raw-images", key=f"{OURS}/../{THEIRS}/{SHA}.jpg")
    )
    key = d.key(OURS, "admin")
    with channel(d.services["detector"].addr, key) as ch:
        detect = ch.unary_unary(
            "/facepipe.v1.Detector/DetectBatch",
            request_serializer=detector_pb2.DetectBatchRequest.SerializeToString,
            response_deserializer=detector_pb2.DetectBatchResponse.FromString,
        )
        for image in (theirs, sneaky):
            # One foreign reference among good ones refuses the whole batch.
            request = detector_pb2.DetectBatchRequest(images=[_ref_image(), image])
            code, details = _code_and_details(lambda request=request: detect(request, timeout=30))
            assert code == grpc.StatusCode.PERMISSION_DENIED, details
    with channel(d.services["embedder"].addr, key) as ch:
        embed = ch.unary_unary(
            "/facepipe.v1.Embedder/EmbedBatch",
            request_serializer=embedder_pb2.EmbedBatchRequest.SerializeToString,
            response_deserializer=embedder_pb2.EmbedBatchResponse.FromString,
        )
        request = embedder_pb2.EmbedBatchRequest(
            inputs=[embedder_pb2.EmbedInput(id="x", image=theirs, faces=[common_pb2.Face()])]
        )
        code, details = _code_and_details(lambda: embed(request, timeout=30))
        assert code == grpc.StatusCode.PERMISSION_DENIED and THEIRS in details, details
    # A stream is checked message by message: the second, foreign one ends it.
    with channel(d.services["detector"].addr, key) as ch:
        stream = ch.stream_stream(
            "/facepipe.v1.Detector/DetectStream",
            request_serializer=detector_pb2.DetectBatchRequest.SerializeToString,
            response_deserializer=detector_pb2.DetectBatchResponse.FromString,
        )
        requests = [
            detector_pb2.DetectBatchRequest(images=[_ref_image()]),
            detector_pb2.DetectBatchRequest(images=[theirs]),
        ]
        code, details = _code_and_details(lambda: list(stream(iter(requests), timeout=30)))
        assert code == grpc.StatusCode.PERMISSION_DENIED, details


def test_crawl_jobs_are_scoped_to_their_tenant(deployment: Deployment) -> None:
    d = deployment
    for path in ("/facepipe.v1.Crawler/GetCrawl", "/facepipe.v1.Crawler/CancelCrawl"):
        assert call(d, path, d.key(THEIRS, "admin")) == grpc.StatusCode.PERMISSION_DENIED
        assert call(d, path, d.key(auth.ANY_TENANT, "admin")) == grpc.StatusCode.OK


def test_ingest_of_another_tenants_object_is_refused(deployment: Deployment) -> None:
    d = deployment
    victim = pipeline_pb2.IngestRequest(tenant_id="attacker", bucket="raw-images", key=f"victim/{SHA}.jpg")
    for key in (d.key(THEIRS, "writer"), d.key(auth.ANY_TENANT, "admin")):
        with channel(d.services["extractor"].addr, key) as ch:
            ingest = ch.unary_unary(
                "/facepipe.v1.Extractor/Ingest",
                request_serializer=pipeline_pb2.IngestRequest.SerializeToString,
                response_deserializer=extractor_pb2.IngestResponse.FromString,
            )
            code, details = _code_and_details(lambda ingest=ingest: ingest(victim, timeout=30))
            assert code == grpc.StatusCode.PERMISSION_DENIED, details


def test_get_stats_without_a_tenant_is_the_keys_tenant_and_names_no_path(deployment: Deployment) -> None:
    d = deployment
    with channel(d.services["indexer"].addr, d.key(OURS, "reader")) as ch:
        stats = ch.unary_unary(
            "/facepipe.v1.Indexer/GetStats",
            request_serializer=indexer_pb2.GetStatsRequest.SerializeToString,
            response_deserializer=indexer_pb2.GetStatsResponse.FromString,
        )(indexer_pb2.GetStatsRequest(), timeout=30)
    assert "/" not in stats.vector_store and "/" not in stats.object_store
    assert not stats.counters  # the stage's counters span every tenant
    assert str(Path(d.env["FACEPIPE_VECTOR_DIR"])) not in str(stats)


def test_revoked_key_is_refused_at_once(deployment: Deployment) -> None:
    d = deployment
    env = {**d.env, "FACEPIPE_NATS_URL": d.nats_url}
    made = run_facepipe("keys", "create", "--tenant", OURS, "--role", "reader", "--json", env=env)
    doc = json.loads(made.stdout)
    path = "/facepipe.v1.Indexer/ListFaces"
    assert call(d, path, doc["key"]) == grpc.StatusCode.OK  # usable at once
    run_facepipe("keys", "revoke", doc["key_id"], env=env)
    deadline = time.monotonic() + 2.0
    while (
        code := call(d, path, doc["key"])
    ) != grpc.StatusCode.UNAUTHENTICATED and time.monotonic() < deadline:
        time.sleep(0.05)
    assert code == grpc.StatusCode.UNAUTHENTICATED


async def eventually(condition, wait_s: float = 5.0) -> None:
    deadline = time.monotonic() + wait_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_the_key_store_follows_changes_and_rereads_when_the_watch_stops(nats_server) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        watched = await KeyStore.open(nc.jetstream(), resync_seconds=0.3)
        manager = await KeyStore.open(nc.jetstream())
        await watched.start_watch()
        key, record = await manager.create(OURS, "reader")
        await eventually(lambda: record.key_id in watched.records)
        assert watched.records[record.key_id].key_sha256 == auth.hash_key(key)
        # With the watch gone, the periodic re-read still drops a revoked key.
        watched._tasks[0].cancel()
        await manager.revoke(record.key_id)
        await eventually(lambda: record.key_id not in watched.records)
        assert await watched.lookup(record.key_id) is None
        await watched.stop()
    finally:
        await nc.close()


def _audit_records(d: Deployment, key: str, tenant: str) -> list[indexer_pb2.AuditRecord]:
    with channel(d.services["indexer"].addr, key) as ch:
        read = ch.unary_unary(
            "/facepipe.v1.Indexer/ListAuditRecords",
            request_serializer=indexer_pb2.ListAuditRecordsRequest.SerializeToString,
            response_deserializer=indexer_pb2.ListAuditRecordsResponse.FromString,
        )
        return list(
            read(indexer_pb2.ListAuditRecordsRequest(tenant_id=tenant, limit=10000), timeout=30).records
        )


def test_refused_calls_of_audited_methods_are_recorded_with_their_key(deployment: Deployment) -> None:
    d = deployment
    tenant = "audit" + hashlib.sha256(os.urandom(8)).hexdigest()[:8]
    erase = indexer_pb2.DeleteFacesRequest(tenant_id=tenant, all=True)
    reader = d.key(auth.ANY_TENANT, "reader")
    with channel(d.services["indexer"].addr, reader) as ch:
        code, _ = _code_and_details(
            lambda: ch.unary_unary(
                "/facepipe.v1.Indexer/DeleteFaces",
                request_serializer=indexer_pb2.DeleteFacesRequest.SerializeToString,
                response_deserializer=indexer_pb2.DeleteFacesResponse.FromString,
            )(erase, timeout=30)
        )
    assert code == grpc.StatusCode.PERMISSION_DENIED
    records = _audit_records(d, d.key(auth.ANY_TENANT, "admin"), tenant)
    assert [(r.action, r.key_id, r.role, r.outcome) for r in records] == [
        ("erase", auth.key_id_of(reader), "reader", "PERMISSION_DENIED")
    ]
    # Unauthenticated calls name no key and are not recorded.
    assert call(d, "/facepipe.v1.Indexer/Search", None) == grpc.StatusCode.UNAUTHENTICATED
    # (Key changes by the command line over NATS name no key either: they hold none.)
    served = [r for r in _audit_records(d, d.key(auth.ANY_TENANT, "admin"), OURS) if r.service == "indexer"]
    assert served and all(r.key_id for r in served)


# -- bad input to the indexer methods added with keys, audit and opt-out: the message matters --
NOT_A_FACE = (SHARED_FACES.parent / "eval" / "CALIBRATION.md").read_bytes()
BAD_INDEXER_INPUT = [
    (
        "ListFaces",
        lambda: indexer_pb2.ListFacesRequest(tenant_id=OURS, page_size=5000),
        "page_size must be between 1 and 1000, got 5000",
    ),
    (
        "ListFaces",
        lambda: indexer_pb2.ListFacesRequest(tenant_id=OURS, page_token="x" * 500),
        "is not one this service gave",
    ),
    (
        "Search",
        lambda: indexer_pb2.SearchRequest(tenant_id=OURS, image=PHOTO, query_face_index=7),
        "query_face_index 7 is out of range: the image has 1 face(s)",
    ),
    ("OptOut", lambda: indexer_pb2.OptOutRequest(tenant_id=OURS), "give at least one photo of the person"),
    (
        "OptOut",
        lambda: indexer_pb2.OptOutRequest(tenant_id=OURS, images=[NOT_A_FACE]),
        "cannot use photo 1",
    ),
    (
        "RemoveOptOut",
        lambda: indexer_pb2.RemoveOptOutRequest(tenant_id=OURS, optout_id="not-an-id"),
        "optout_id 'not-an-id' is not 16 hex digits",
    ),
    (
        "ListAuditRecords",
        lambda: indexer_pb2.ListAuditRecordsRequest(tenant_id=OURS, limit=20000),
        "limit must be between 1 and 10000, got 20000",
    ),
]


@pytest.mark.parametrize(
    ("method", "request_of", "message"),
    BAD_INDEXER_INPUT,
    ids=[f"{m}-{i}" for i, (m, _, _) in enumerate(BAD_INDEXER_INPUT)],
)
def test_bad_indexer_input_is_invalid_argument_with_a_message(
    deployment: Deployment, method: str, request_of: Callable, message: str
) -> None:
    with channel(deployment.services["indexer"].addr, deployment.key(OURS, "admin")) as ch:
        stub = indexer_pb2_grpc.IndexerStub(ch)
        code, details = _code_and_details(lambda: getattr(stub, method)(request_of(), timeout=60))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)
    assert message in details, details

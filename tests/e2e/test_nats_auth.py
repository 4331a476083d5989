"""NATS locked down on the local stack: anonymous connections are refused, a producer
publishes ingest for its own tenant only, nobody but the embedder forges an embedded
face, and a producer cannot read the stack's KV buckets."""

from __future__ import annotations

import asyncio
import hashlib
import json
import stat
import uuid
from pathlib import Path

import nats
import pytest
from conftest import SHARED_FACES, run_facepipe, stack_nats_url

from facepipe import bus
from facepipe.natsauth import inbox_prefix
from facepipe.v1 import pipeline_pb2

BRAD = SHARED_FACES / "brad_pitt" / "brad_1.jpg"


@pytest.fixture(scope="module")
def stack(shared_stack) -> dict:
    return shared_stack


def producer_url(stack: dict, tenant: str | None = None) -> str:
    args = ["producer-url", "--data-dir", str(stack["dir"])] + (["--tenant", tenant] if tenant else [])
    return run_facepipe(*args, env=stack["env"]).stdout.strip()


class Client:
    """A nats-py connection that records the server's asynchronous errors."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.nc: nats.NATS | None = None

    async def connect(self, url: str, user: str = "") -> Client:
        async def on_error(exc: Exception) -> None:
            self.errors.append(str(exc))

        self.nc = await nats.connect(
            url, error_cb=on_error, inbox_prefix=inbox_prefix(user), max_reconnect_attempts=1
        )
        return self

    async def refused(self, subject: str, wait_s: float = 5.0) -> bool:
        """Whether the server reported a permissions violation for ``subject``."""
        for _ in range(int(wait_s / 0.1)):
            if any("permissions violation" in e and f'"{subject.lower()}"' in e.lower() for e in self.errors):
                return True
            await asyncio.sleep(0.1)
        return False


def user_url(stack: dict, user: str) -> str:
    return stack_nats_url(stack, user)


async def stored_count(stack: dict, subject: str) -> int:
    """Messages on ``subject`` in the work queue, as the admin sees them."""
    nc = await nats.connect(stack_nats_url(stack))
    try:
        info = await nc.jetstream().stream_info(bus.STREAM, subjects_filter=subject)
        return sum((info.state.subjects or {}).values())
    finally:
        await nc.close()


def test_anonymous_connection_is_refused(stack):
    async def attempt() -> None:
        await nats.connect(
            stack["state"]["nats_url"], allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=3
        )

    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        asyncio.run(attempt())


def test_wrong_password_is_refused(stack):
    url = stack_nats_url(stack, "embedder").replace("@", "x@", 1)

    async def attempt() -> None:
        await nats.connect(url, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=3)

    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        asyncio.run(attempt())


def test_passwords_are_readable_by_their_owner_only(stack):
    folder = Path(stack["dir"]) / "nats-auth"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    files = list(folder.glob("*.password"))
    assert {f.name for f in files} >= {f"{u}.password" for u in ("admin", "extractor", "embedder")}
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    assert stat.S_IMODE((Path(stack["dir"]) / "nats" / "nats.conf").stat().st_mode) == 0o600
    # Nothing the stack writes for everyone to read, nor any log, holds a password.
    secrets = [f.read_text().strip() for f in files]
    readable = [Path(stack["dir"]) / "stack.json", *Path(stack["dir"], "logs").glob("*.log")]
    for path in readable:
        text = path.read_text(errors="replace")
        assert not [s for s in secrets if s in text], path


def test_a_forged_embedded_face_is_refused(stack):
    """Only the embedder publishes facepipe.faces.embedded: a producer's and the
    detector's forgeries never reach the work queue."""
    forged = pipeline_pb2.EmbeddedImage(
        image=pipeline_pb2.ImageRecord(tenant_id="victim", image_sha256="0" * 64, message_id="forged")
    ).SerializeToString()
    trusted = producer_url(stack)

    async def forge() -> None:
        before = await stored_count(stack, bus.SUBJECT_EMBEDDED)
        producer = await Client().connect(trusted)
        detector = await Client().connect(user_url(stack, "detector"), "detector")
        try:
            for client in (producer, detector):
                await client.nc.publish(bus.SUBJECT_EMBEDDED, forged)
                await client.nc.flush()
                assert await client.refused(bus.SUBJECT_EMBEDDED), client.errors
            # A JetStream publish too: no ack, since the server drops it.
            with pytest.raises(nats.errors.TimeoutError):
                await detector.nc.jetstream(timeout=2).publish(bus.SUBJECT_EMBEDDED, forged)
        finally:
            await producer.nc.close()
            await detector.nc.close()
        assert await stored_count(stack, bus.SUBJECT_EMBEDDED) <= before

    asyncio.run(forge())


def test_a_tenant_producer_publishes_for_its_own_tenant_only(stack):
    """producer-<tenant> may publish facepipe.ingest.<tenant> only: another tenant's
    subject and the trusted facepipe.ingest are refused, and on its own subject the
    subject's tenant wins over the message's."""
    own, other = "p" + uuid.uuid4().hex[:10], "v" + uuid.uuid4().hex[:10]
    url = producer_url(stack, own)
    assert url.startswith(f"nats://producer-{own}:")
    batch = uuid.uuid4().hex
    # An object of the other tenant's, claimed in the body: read as the producer's own
    # tenant, it is another tenant's object, and dead-lettered as such.
    body = json.dumps(
        {"tenant_id": other, "bucket": "raw-images", "key": f"{other}/{'a' * 64}.jpg", "batch_id": batch}
    ).encode()

    async def publish() -> pipeline_pb2.ImageDone:
        admin = await nats.connect(stack_nats_url(stack))
        producer = await Client().connect(url)
        try:
            done = await admin.subscribe(f"{bus.SUBJECT_DONE}.{batch}")
            await admin.flush()  # subscribed before anything is published
            for subject in (f"{bus.SUBJECT_INGEST}.{other}", bus.SUBJECT_INGEST):
                await producer.nc.publish(subject, body)
                await producer.nc.flush()
                assert await producer.refused(subject), producer.errors
            await producer.nc.publish(f"{bus.SUBJECT_INGEST}.{own}", body)
            await producer.nc.flush()
            event = pipeline_pb2.ImageDone()
            event.ParseFromString((await done.next_msg(timeout=60)).data)
            with pytest.raises(nats.errors.TimeoutError):
                await done.next_msg(timeout=2)  # the refused ones never arrive
            return event
        finally:
            await producer.nc.close()
            await admin.close()

    event = asyncio.run(publish())
    assert event.tenant_id == own
    assert event.status == pipeline_pb2.IMAGE_STATUS_FAILED
    assert event.reason == "foreign_object", event


def test_a_tenant_producer_ingests_under_its_tenant(stack):
    own = "q" + uuid.uuid4().hex[:10]
    stored = run_facepipe(
        "ingest", str(BRAD), "--tenant", own, "--wait", "--json", "--data-dir", str(stack["dir"]),
        env=stack["env"],
    )  # fmt: skip
    assert json.loads(stored.stdout)["faces_indexed"] == 1
    url = producer_url(stack, own)
    batch = uuid.uuid4().hex
    sha = hashlib.sha256(BRAD.read_bytes()).hexdigest()
    body = json.dumps(
        {"tenant_id": "someone-else", "bucket": "raw-images", "key": f"{own}/{sha}.jpg", "batch_id": batch}
    ).encode()

    async def publish() -> pipeline_pb2.ImageDone:
        admin = await nats.connect(stack_nats_url(stack))
        producer = await Client().connect(url)
        try:
            done = await admin.subscribe(f"{bus.SUBJECT_DONE}.{batch}")
            await admin.flush()  # subscribed before anything is published
            # A JetStream publish, as `nats pub --jetstream` does: acked on the default inbox.
            await producer.nc.jetstream().publish(f"{bus.SUBJECT_INGEST}.{own}", body)
            event = pipeline_pb2.ImageDone()
            event.ParseFromString((await done.next_msg(timeout=60)).data)
            return event
        finally:
            await producer.nc.close()
            await admin.close()

    event = asyncio.run(publish())
    assert (event.tenant_id, event.status) == (own, pipeline_pb2.IMAGE_STATUS_DUPLICATE), event


def test_a_producer_cannot_read_the_image_states(stack):
    """KV facepipe-images names every tenant: a producer may not open, list or read it."""

    async def read() -> None:
        producer = await Client().connect(producer_url(stack))
        try:
            with pytest.raises(nats.errors.TimeoutError):
                await producer.nc.jetstream(timeout=2).key_value(bus.IMAGES_KV)
            assert await producer.refused(f"$JS.API.STREAM.INFO.KV_{bus.IMAGES_KV}")
            await producer.nc.publish(f"$JS.API.DIRECT.GET.KV_{bus.IMAGES_KV}.$KV.{bus.IMAGES_KV}.>", b"")
            await producer.nc.flush()
            assert await producer.refused(f"$JS.API.DIRECT.GET.KV_{bus.IMAGES_KV}.$KV.{bus.IMAGES_KV}.>")
            # Nor can it listen in on what the services are sent.
            with pytest.raises(nats.errors.Error):
                sub = await producer.nc.subscribe("_INBOX_indexer.>")
                await producer.nc.flush()
                await sub.next_msg(timeout=2)
            assert await producer.refused("_INBOX_indexer.>")
        finally:
            await producer.nc.close()

    asyncio.run(read())


def test_the_detector_cannot_read_the_image_states_nor_pull_another_stage(stack):
    async def attempt() -> None:
        detector = await Client().connect(user_url(stack, "detector"), "detector")
        try:
            js = detector.nc.jetstream(timeout=2)
            with pytest.raises(nats.errors.TimeoutError):
                await js.key_value(bus.IMAGES_KV)
            with pytest.raises(nats.errors.TimeoutError):
                await js.consumer_info(bus.STREAM, "indexer")
        finally:
            await detector.nc.close()

    asyncio.run(attempt())


def test_provision_is_for_the_supervisor_only(stack):
    """`facepipe provision` (the chart's init container) makes the topology as the
    supervisor; a service's user may not, and is told so in one line."""
    folder = Path(stack["dir"]) / "nats-auth"

    def provision(user: str, *args: str):
        env = {
            **stack["env"],
            "FACEPIPE_NATS_URL": stack["state"]["nats_url"],
            "FACEPIPE_NATS_USER": user,
            "FACEPIPE_NATS_PASSWORD_FILE": str(folder / f"{user}.password"),
        }
        return run_facepipe("provision", *args, env=env, check=False)

    made = provision("supervisor")
    assert made.returncode == 0, made.stderr
    assert "NATS topology ready" in made.stdout
    refused = provision("detector", "--timeout", "3")
    assert refused.returncode == 1
    assert "error: the topology was not made within 3s: is detector allowed to?" in refused.stderr
    assert "Traceback" not in refused.stderr

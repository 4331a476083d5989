"""NATS users and their permissions: who may publish and subscribe to what.

Every service has its own user whose permissions cover only its own subjects:
its stage consumer (pull, ack, the reconciler's look at the work queue), the
next stage's subject, its dead letters, done events and the KV buckets it uses.
So only the embedder (and the indexer itself, when it puts one of its own
orphaned messages back in its queue) can publish ``facepipe.faces.embedded``.
``admin`` (the command line) may do everything; ``supervisor`` creates the
topology and registers the stack's admin API key. Producers may only publish
ingest messages: ``producer`` to ``facepipe.ingest`` (trusted: the tenant is the
message's), ``producer-<tenant>`` to ``facepipe.ingest.<tenant>`` only.

Services and administrators reply to themselves on an inbox of their own,
``_INBOX_<user>``, so that nobody else can read their replies (pulled stage
messages and KV reads arrive there). The permissions are the one source of the
local stack's nats-server configuration and the Helm chart's (generated into the
chart by ``python -m facepipe.natsauth --write-chart``)."""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from facepipe.bus.topology import (
    ACCESS_STREAM,
    AUDIT_STREAM,
    CRAWL_KV,
    DLQ_STREAM,
    EVENTS_STREAM,
    FACES_KV,
    IMAGES_KV,
    OPTOUT_KV,
    PERSONS_KV,
    STAGES,
    STREAM,
    SUBJECT_ACCESS,
    SUBJECT_AUDIT,
    SUBJECT_DETECTED,
    SUBJECT_DLQ,
    SUBJECT_DONE,
    SUBJECT_EMBEDDED,
    SUBJECT_FACES_ERASED,
    SUBJECT_FACES_INDEXED,
    SUBJECT_INGEST,
    SUBJECT_STORED,
)

KEYS_KV = "facepipe-keys"  # facepipe.auth.keys.KEYS_KV; named here so this module loads alone
ADMIN_USER = "admin"
SUPERVISOR_USER = "supervisor"
PRODUCER_USER = "producer"
PRODUCER_PREFIX = "producer-"
SERVICE_USERS = ("extractor", "detector", "embedder", "indexer", "crawler", "persons", "recognizer")
DEFAULT_INBOX = "_INBOX"
PASSWORD_BYTES = 24
TENANT_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

# What each service publishes besides its stage's own subjects, and the KV buckets it
# reads (r) or also writes (w).
SERVICE_OUTPUTS: dict[str, tuple[str, ...]] = {
    "extractor": (SUBJECT_STORED,),
    "detector": (SUBJECT_DETECTED,),
    "embedder": (SUBJECT_EMBEDDED,),
    # The indexer tells the persons service which faces it wrote and erased.
    "indexer": (SUBJECT_FACES_INDEXED, SUBJECT_FACES_ERASED),
    # The crawler is a trusted producer: its candidates carry the job's tenant.
    "crawler": (SUBJECT_INGEST,),
    "persons": (),
    # The recognizer consumes no stage: it serves gRPC, reads the API keys and audits.
    "recognizer": (),
}
SERVICE_BUCKETS: dict[str, dict[str, str]] = {
    "extractor": {IMAGES_KV: "w"},
    "detector": {},
    # The embedder skips opted-out people; the indexer registers them.
    "embedder": {FACES_KV: "w", OPTOUT_KV: "r"},
    # The indexer reads the persons' names for search results.
    "indexer": {IMAGES_KV: "w", FACES_KV: "w", OPTOUT_KV: "w", PERSONS_KV: "r"},
    "crawler": {CRAWL_KV: "w"},
    "persons": {PERSONS_KV: "w"},
    "recognizer": {},
}


@dataclass(frozen=True)
class Permissions:
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]

    def as_dict(self) -> dict:
        return {"publish": {"allow": list(self.publish)}, "subscribe": {"allow": list(self.subscribe)}}


def inbox_prefix(user: str) -> str:
    """The reply inbox of ``user``: its own for services and administrators."""
    if not user or user == PRODUCER_USER or user.startswith(PRODUCER_PREFIX):
        return DEFAULT_INBOX
    return f"{DEFAULT_INBOX}_{user}"


def producer_user(tenant: str | None) -> str:
    """The producer user of ``tenant``, or the trusted producer for None."""
    if tenant is None:
        return PRODUCER_USER
    if not TENANT_RE.match(tenant):
        raise ValueError(f"invalid tenant {tenant[:100]!r}: 1-64 letters, digits, '_' or '-'")
    return PRODUCER_PREFIX + tenant


def kv_read(bucket: str) -> list[str]:
    """Get, list and watch a KV bucket (stream ``KV_<bucket>``)."""
    s = f"KV_{bucket}"
    return [
        f"$JS.API.STREAM.INFO.{s}",
        f"$JS.API.STREAM.MSG.GET.{s}",
        f"$JS.API.DIRECT.GET.{s}",
        f"$JS.API.DIRECT.GET.{s}.>",
        f"$JS.API.CONSUMER.CREATE.{s}",
        f"$JS.API.CONSUMER.CREATE.{s}.>",
        f"$JS.API.CONSUMER.INFO.{s}.>",
        f"$JS.API.CONSUMER.DELETE.{s}.>",
        f"$JS.FC.{s}.>",
    ]


def kv_write(bucket: str) -> list[str]:
    """Put, delete and purge keys of a KV bucket, besides reading it."""
    return [*kv_read(bucket), f"$KV.{bucket}.>", f"$JS.API.STREAM.PURGE.KV_{bucket}"]


def audit_subjects() -> list[str]:
    """Append to the audit log, keep its stream's retention, and read it back (the
    indexer serves ListAuditRecords); never delete or purge (the stream denies both)."""
    s = AUDIT_STREAM
    return [
        f"{SUBJECT_AUDIT}.>",
        *(f"$JS.API.STREAM.{verb}.{s}" for verb in ("INFO", "CREATE", "UPDATE")),
        f"$JS.API.CONSUMER.CREATE.{s}",
        f"$JS.API.CONSUMER.CREATE.{s}.>",
        f"$JS.API.CONSUMER.INFO.{s}.>",
        f"$JS.API.CONSUMER.DELETE.{s}.>",
        f"$JS.FC.{s}.>",
    ]


def access_log_subjects() -> list[str]:
    """Append to the access log, keep its stream's retention, and read it back
    (ListAccessLog); records are never deleted by hand (the stream's max age drops them)."""
    s = ACCESS_STREAM
    return [
        f"{SUBJECT_ACCESS}.>",
        *(f"$JS.API.STREAM.{verb}.{s}" for verb in ("INFO", "CREATE", "UPDATE")),
        f"$JS.API.CONSUMER.CREATE.{s}",
        f"$JS.API.CONSUMER.CREATE.{s}.>",
        f"$JS.API.CONSUMER.INFO.{s}.>",
        f"$JS.API.CONSUMER.DELETE.{s}.>",
        f"$JS.FC.{s}.>",
    ]


# Services that write the access log (the recognizer's camera streams).
ACCESS_LOG_SERVICES = ("recognizer",)

# Services whose gRPC methods are audited (facepipe.auth.access METHOD_RULES).
AUDITING_SERVICES = ("indexer", "persons", "recognizer")


def stage_subjects(stage: str) -> list[str]:
    """What a stage's worker needs on its own consumer: create it or change its
    settings, pull, ack, and the reconciler's look at the work queue."""
    c = f"{STREAM}.{stage}"
    return [
        f"$JS.API.STREAM.INFO.{STREAM}",
        f"$JS.API.STREAM.MSG.GET.{STREAM}",
        f"$JS.API.STREAM.MSG.DELETE.{STREAM}",
        f"$JS.API.CONSUMER.INFO.{c}",
        f"$JS.API.CONSUMER.CREATE.{c}",
        f"$JS.API.CONSUMER.CREATE.{c}.>",
        f"$JS.API.CONSUMER.DURABLE.CREATE.{c}",
        f"$JS.API.CONSUMER.MSG.NEXT.{c}",
        f"$JS.ACK.{c}.>",
        f"$JS.ACK.*.*.{c}.>",  # the acks' form with a domain and account hash
    ]


def service_permissions(service: str) -> Permissions:
    if service not in SERVICE_USERS:
        raise ValueError(f"unknown service {service!r}")
    stage = STAGES.get(service)
    publish = [
        *(
            [
                *stage_subjects(service),
                # Its own input: the gRPC Ingest and StartCrawl queue there, and the reconciler
                # puts an orphaned message back there.
                *stage.subjects,
                f"{SUBJECT_DLQ}.{service}",
                f"{SUBJECT_DONE}.>",
            ]
            if stage is not None
            else []
        ),
        *SERVICE_OUTPUTS[service],
        *kv_read(KEYS_KV),
    ]
    for bucket, mode in SERVICE_BUCKETS[service].items():
        publish += kv_write(bucket) if mode == "w" else kv_read(bucket)
    if OPTOUT_KV in SERVICE_BUCKETS[service]:
        # Either may be first to start on a new deployment: both may create the bucket.
        publish.append(f"$JS.API.STREAM.CREATE.KV_{OPTOUT_KV}")
    if service in AUDITING_SERVICES:
        publish += audit_subjects()
    if service in ACCESS_LOG_SERVICES:
        publish += access_log_subjects()
    return Permissions(tuple(dict.fromkeys(publish)), (f"{inbox_prefix(service)}.>",))


def supervisor_permissions() -> Permissions:
    """Creates and updates the topology, registers the stack's admin key; reads no work."""
    streams = [
        STREAM,
        DLQ_STREAM,
        EVENTS_STREAM,
        *(f"KV_{b}" for b in (IMAGES_KV, FACES_KV, CRAWL_KV, PERSONS_KV)),
    ]
    publish = [
        *(f"$JS.API.STREAM.{verb}.{s}" for s in streams for verb in ("INFO", "CREATE", "UPDATE")),
        f"$JS.API.CONSUMER.INFO.{STREAM}.*",
        f"$JS.API.CONSUMER.CREATE.{STREAM}.>",
        f"$JS.API.CONSUMER.DURABLE.CREATE.{STREAM}.*",
        f"$JS.API.STREAM.CREATE.KV_{KEYS_KV}",
        *kv_write(KEYS_KV),
    ]
    return Permissions(tuple(dict.fromkeys(publish)), (f"{inbox_prefix(SUPERVISOR_USER)}.>",))


def producer_permissions(tenant: str | None) -> Permissions:
    """Publish ingest only: the trusted producer to ``facepipe.ingest``, a tenant's to its
    own subject. The default inbox receives the acks of a JetStream publish; no service
    replies there."""
    subject = SUBJECT_INGEST if tenant is None else f"{SUBJECT_INGEST}.{tenant}"
    return Permissions((subject,), (f"{DEFAULT_INBOX}.>",))


def permissions(user: str) -> Permissions | None:
    """The permissions of ``user``; None for ``admin``, who may do everything."""
    if user == ADMIN_USER:
        return None
    if user == SUPERVISOR_USER:
        return supervisor_permissions()
    if user == PRODUCER_USER:
        return producer_permissions(None)
    if user.startswith(PRODUCER_PREFIX):
        return producer_permissions(user[len(PRODUCER_PREFIX) :])
    return service_permissions(user)


def fixed_users() -> tuple[str, ...]:
    """The users every deployment has."""
    return (*SERVICE_USERS, ADMIN_USER, SUPERVISOR_USER, PRODUCER_USER)


def authorization(passwords: dict[str, str]) -> dict:
    """The nats-server ``authorization`` block for these users. With users and no
    ``no_auth_user``, anonymous connections are refused."""
    users = []
    for user in sorted(passwords):
        entry: dict = {"user": user, "password": passwords[user]}
        perms = permissions(user)
        if perms is not None:
            entry["permissions"] = perms.as_dict()
        users.append(entry)
    return {"users": users}


def new_password() -> str:
    return secrets.token_urlsafe(PASSWORD_BYTES)


# -- a local stack's passwords: one 0600 file per user in a 0700 folder ------------------


class PasswordDir:
    """The NATS passwords of a local stack, made on first use and kept across restarts."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def file(self, user: str) -> Path:
        return self.path / f"{user}.password"

    def password(self, user: str) -> str:
        """The user's password, made (and written, owner-only) when it has none yet."""
        path = self.file(user)
        if path.exists():
            return path.read_text().strip()
        self.path.mkdir(parents=True, exist_ok=True)
        os.chmod(self.path, 0o700)
        password = new_password()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, (password + "\n").encode())
        finally:
            os.close(fd)
        return password

    def users(self) -> list[str]:
        return sorted(p.name.removesuffix(".password") for p in self.path.glob("*.password"))

    def all(self) -> dict[str, str]:
        """Every fixed user's password and every producer made so far."""
        return {user: self.password(user) for user in dict.fromkeys([*fixed_users(), *self.users()])}


def read_password_file(path: Path) -> str:
    try:
        password = Path(path).read_text().strip()
    except OSError as exc:
        raise ValueError(f"cannot read the NATS password file {path}: {exc.strerror}") from None
    if not password:
        raise ValueError(f"the NATS password file {path} is empty")
    return password


def credentials(settings) -> tuple[str, str]:
    """(user, password) a process connects with, from its settings; ("", "") for none.
    Raises ValueError for a user without a password."""
    user = settings.nats_user
    if not user:
        return "", ""
    password = settings.nats_password
    if not password and settings.nats_password_file:
        password = read_password_file(settings.nats_password_file)
    if not password:
        raise ValueError(
            "FACEPIPE_NATS_USER is set without FACEPIPE_NATS_PASSWORD or FACEPIPE_NATS_PASSWORD_FILE"
        )
    return user, password


# -- URLs -------------------------------------------------------------------------------


def url_with_credentials(url: str, user: str, password: str) -> str:
    """``url`` (every server of a comma-separated list) carrying ``user`` and ``password``."""
    out = []
    for server in url.split(","):
        server = server.strip()
        parts = urlsplit(server if "://" in server else f"nats://{server}")
        host = parts.hostname or "127.0.0.1"
        netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
        if parts.port:
            netloc += f":{parts.port}"
        out.append(urlunsplit((parts.scheme, netloc, parts.path, "", "")))
    return ",".join(out)


def url_user(url: str) -> str:
    """The user a NATS URL carries, or ''."""
    first = url.split(",")[0].strip()
    parts = urlsplit(first if "://" in first else f"nats://{first}")
    return unquote(parts.username or "")


def redact(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    out = []
    for server in url.split(","):
        server = server.strip()
        parts = urlsplit(server if "://" in server else f"nats://{server}")
        if parts.password is None:
            out.append(server)
            continue
        netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        out.append(urlunsplit((parts.scheme, netloc, parts.path, "", "")))
    return ",".join(out)


# -- the Helm chart's copy --------------------------------------------------------------

CHART_FILE = Path("deploy/helm/facepipe/charts/nats/files/permissions.json")


def chart_permissions() -> str:
    """Every fixed user's permissions (admin: none, i.e. all), for the chart to template."""
    doc = {user: (p.as_dict() if (p := permissions(user)) else None) for user in fixed_users()}
    doc["producer-TENANT"] = producer_permissions("TENANT").as_dict()
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m facepipe.natsauth", description="Print or write the NATS users' permissions."
    )
    parser.add_argument("--write-chart", metavar="PATH", nargs="?", const=str(CHART_FILE))
    args = parser.parse_args(argv)
    text = chart_permissions()
    if args.write_chart is None:
        sys.stdout.write(text)
        return 0
    path = Path(args.write_chart)
    changed = not path.exists() or path.read_text() != text
    if changed:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    print(f"{path}: {'updated' if changed else 'already up to date'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Authentication and access control of the gRPC services.

Callers send ``authorization: Bearer <key>``. :mod:`facepipe.auth.keys` holds the
keys (hashes in NATS KV), :mod:`facepipe.auth.access` the rule of every method,
:class:`Authenticator` turns call metadata into a :class:`Principal`, and
:mod:`facepipe.auth.client` makes the channels that send a key. The server
interceptor that ties them together is in :mod:`facepipe.runtime.server`.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterable
from pathlib import Path

from facepipe.auth.access import (
    METHOD_RULES,
    OPEN_PREFIXES,
    AccessDenied,
    MethodRule,
    Principal,
    audited_services,
    check_role,
    current,
    is_all_tenants,
    object_tenant,
    require_tenant,
    rule_for,
)
from facepipe.auth.keys import ANY_TENANT, KEYS_KV, ROLES, KeyRecord, KeyStore, hash_key, key_id_of, new_key

log = logging.getLogger("facepipe.auth")

SERVICE_KEY_ID = "service"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")

__all__ = [
    "ANY_TENANT",
    "KEYS_KV",
    "METHOD_RULES",
    "OPEN_PREFIXES",
    "ROLES",
    "AccessDenied",
    "Authenticator",
    "KeyRecord",
    "KeyStore",
    "MethodRule",
    "NotAuthenticated",
    "Principal",
    "audited_services",
    "check_role",
    "check_settings",
    "service_key",
    "current",
    "hash_key",
    "is_all_tenants",
    "key_id_of",
    "new_key",
    "object_tenant",
    "read_key_file",
    "require_tenant",
    "rule_for",
]


class NotAuthenticated(Exception):
    """UNAUTHENTICATED, with the one line to tell the caller."""


class StillStarting(Exception):
    """UNAVAILABLE: the keys are not loaded yet."""


def read_key_file(path: Path) -> str:
    try:
        key = Path(path).read_text().strip()
    except OSError as exc:
        raise ValueError(f"cannot read the key file {path}: {exc.strerror}") from None
    if not key:
        raise ValueError(f"the key file {path} is empty")
    return key


def bearer_key(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The key of an ``authorization: Bearer <key>`` entry, or None."""
    for name, value in metadata or ():
        if name == "authorization":
            text = value.decode(errors="replace") if isinstance(value, bytes) else value
            scheme, _, key = text.strip().partition(" ")
            return key.strip() if scheme.lower() == "bearer" and key.strip() else None
    return None


def service_key(settings) -> str | None:
    """The deployment's service credential this process sends to other services, if any."""
    path = settings.auth.service_key_file
    return read_key_file(path) if settings.auth.enabled and path else None


def check_settings(settings) -> None:
    """Raises ValueError for a configuration that would serve unprotected by mistake,
    or whose service credential cannot be read."""
    if not settings.auth.enabled and settings.grpc_host not in LOOPBACK_HOSTS:
        raise ValueError(
            f"FACEPIPE_AUTH=off is only for a server on loopback, not on {settings.grpc_host}; "
            "give callers keys instead (facepipe keys create)"
        )
    service_key(settings)


class Authenticator:
    """Checks the key of a call: the deployment's service credential, or a key of the store."""

    def __init__(self, enabled: bool, service_key: str | None = None) -> None:
        self.enabled = enabled
        self.service_key_sha256 = hash_key(service_key) if service_key else ""
        self.store: KeyStore | None = None
        self.ready = not enabled

    async def authenticate(self, metadata) -> Principal:
        key = bearer_key(metadata)
        if key is None:
            raise NotAuthenticated(
                "no API key: send the metadata 'authorization: Bearer <key>' "
                "(keys come from `facepipe keys create`)"
            )
        digest = hash_key(key)  # once per call: it is compared with the service credential and the record
        if self.service_key_sha256 and hmac.compare_digest(self.service_key_sha256, digest):
            return Principal(SERVICE_KEY_ID, ANY_TENANT, "service")
        key_id = key_id_of(key)
        if key_id is None:
            raise NotAuthenticated("the API key is not one this deployment issued")
        if self.store is None:
            if not self.ready:
                raise StillStarting("the service is still loading its keys")
            raise NotAuthenticated(
                "the API key is unknown: this service has no key store (FACEPIPE_NATS_URL)"
            )
        record = await self.store.lookup(key_id)
        if record is None or not hmac.compare_digest(record.key_sha256, digest):
            raise NotAuthenticated(f"the API key {key_id} is unknown or revoked")
        if record.expired():
            raise NotAuthenticated(f"the API key {key_id} has expired")
        return Principal(record.key_id, record.tenant, record.role)

"""TLS material from files: gRPC server and channel credentials, the NATS client's
SSL context and the local nats-server's ``tls {}`` block.

Settings come from :class:`facepipe.config.TlsSettings` (gRPC) and
:class:`facepipe.config.NatsTlsSettings` (NATS). The server reads its certificate
again when the files change, so that a rotated Kubernetes Secret takes effect
without a restart.
"""

from __future__ import annotations

import json
import logging
import ssl
from pathlib import Path

import grpc

from facepipe.config import NatsTlsSettings, Settings, TlsSettings

log = logging.getLogger("facepipe.tls")


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def _mtimes(*paths: Path | None) -> tuple[float, ...]:
    times = []
    for p in paths:
        try:
            times.append(p.stat().st_mtime if p else 0.0)
        except OSError:
            times.append(0.0)
    return tuple(times)


class _ServerCertificates:
    """The server's key, certificate and client CA, read again when a file changes.

    grpc asks before each handshake. An unchanged set is not read; a changed one that
    does not load as a key and its certificate (a half-written pair) keeps the last
    good one, said once, and is tried again at the next change."""

    def __init__(self, tls: TlsSettings) -> None:
        self.tls = tls
        self.stamp = _mtimes(tls.cert, tls.key, tls.ca)
        self.refused_stamp: tuple[float, ...] | None = None
        self.initial = self._config()

    def _config(self) -> grpc.ServerCertificateConfiguration:
        t = self.tls
        assert t.cert is not None and t.key is not None
        _check_pair(t.cert, t.key, "FACEPIPE_TLS_CERT/FACEPIPE_TLS_KEY")
        pair = (_read(t.key, "TLS key"), _read(t.cert, "TLS certificate"))
        ca = _read(t.ca, "TLS CA") if t.ca else None
        return grpc.ssl_server_certificate_configuration([pair], root_certificates=ca)

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        stamp = _mtimes(self.tls.cert, self.tls.key, self.tls.ca)
        if stamp in (self.stamp, self.refused_stamp):
            return None
        try:
            config = self._config()
        except ValueError as exc:
            self.refused_stamp = stamp
            log.warning("TLS files changed but do not load; keeping the old ones", extra={"error": str(exc)})
            return None
        self.stamp = stamp
        log.info("TLS certificate reloaded", extra={"cert": str(self.tls.cert)})
        return config


def server_credentials(tls: TlsSettings) -> grpc.ServerCredentials:
    """Credentials of a gRPC port serving TLS; raises ValueError for unreadable files."""
    tls.check()
    certs = _ServerCertificates(tls)
    return grpc.dynamic_ssl_server_credentials(
        certs.initial, certs.fetch, require_client_authentication=tls.client_auth == "require"
    )


def channel_credentials(tls: TlsSettings) -> grpc.ChannelCredentials:
    """Credentials of a TLS channel: the CA to trust (system roots without one) and,
    when a certificate is configured, the client certificate of mutual TLS."""
    tls.check()
    ca = _read(tls.ca, "TLS CA") if tls.ca else None
    if tls.cert is not None and tls.key is not None:
        key, cert = _read(tls.key, "TLS key"), _read(tls.cert, "TLS certificate")
        return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
    return grpc.ssl_channel_credentials(root_certificates=ca)


def channel_options(tls: TlsSettings) -> list[tuple[str, str]]:
    """Channel options TLS needs: the name checked in the server's certificate."""
    return [("grpc.ssl_target_name_override", tls.server_name)] if tls.server_name else []


def nats_ssl_context(tls: NatsTlsSettings) -> ssl.SSLContext | None:
    """The SSL context NATS is dialled with, or None for plain NATS."""
    tls.check()
    if not tls.client_tls:
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if tls.ca is not None:
        _read(tls.ca, "NATS TLS CA")  # a clear error before ssl's
        context.load_verify_locations(cafile=str(tls.ca))
    if tls.cert is not None and tls.key is not None:
        _read(tls.cert, "NATS TLS certificate")
        _read(tls.key, "NATS TLS key")
        context.load_cert_chain(str(tls.cert), str(tls.key))
    return context


def nats_server_tls_block(tls: NatsTlsSettings) -> str:
    """The nats-server ``tls {}`` block of these settings, or "" when it serves plain."""
    tls.check()
    if not tls.serves_tls:
        return ""
    lines = [
        f"  cert_file: {json.dumps(str(tls.server_cert))}",
        f"  key_file: {json.dumps(str(tls.server_key))}",
    ]
    if tls.ca is not None:
        lines.append(f"  ca_file: {json.dumps(str(tls.ca))}")
    if tls.client_auth == "require":
        lines.append("  verify: true")
    lines.append("  timeout: 5")
    return "tls {\n" + "\n".join(lines) + "\n}\n"


def _check_pair(cert: Path | None, key: Path | None, what: str) -> None:
    """Raises ValueError when a certificate and key do not load as a pair."""
    if cert is None or key is None:
        return
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"{what} {cert} and {key} are not a PEM certificate and its key: {exc}") from None


def _check_ca(ca: Path | None, what: str) -> None:
    if ca is None:
        return
    try:
        ssl.create_default_context().load_verify_locations(cafile=str(ca))
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"{what} {ca} is not a PEM CA bundle: {exc}") from None


def check_files(settings: Settings) -> None:
    """Raises ValueError, naming the setting or file, when the TLS settings of a service
    are half set or their files cannot be read: said before it starts, not at the first call."""
    grpc_tls, nats_tls = settings.tls, settings.nats_tls
    grpc_tls.check()
    nats_tls.check()
    _check_pair(grpc_tls.cert, grpc_tls.key, "FACEPIPE_TLS_CERT/FACEPIPE_TLS_KEY")
    _check_ca(grpc_tls.ca, "FACEPIPE_TLS_CA")
    _check_pair(nats_tls.cert, nats_tls.key, "FACEPIPE_NATS_TLS_CERT/FACEPIPE_NATS_TLS_KEY")
    _check_ca(nats_tls.ca, "FACEPIPE_NATS_TLS_CA")

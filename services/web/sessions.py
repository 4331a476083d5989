"""Browser sessions without server state: the caller's API key, tenant and CSRF token
sealed (encrypted and authenticated) into one HttpOnly cookie with the service's
session secret, so any replica that shares the secret can open it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass, field

from cryptography.fernet import Fernet, InvalidToken

SESSION_COOKIE = "facepipe_session"
# Before logging in: the double-submit token of the login form.
LOGIN_CSRF_COOKIE = "facepipe_login_csrf"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
# Crawl jobs a session remembers for the crawls page (there is no ListCrawls).
MAX_REMEMBERED_CRAWLS = 20


@dataclass
class Session:
    key: str
    tenant: str
    csrf: str
    expires_at: float
    crawls: list[str] = field(default_factory=list)

    def csrf_ok(self, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(token, self.csrf)


class Sealer:
    """Seals and opens session cookies."""

    def __init__(self, secret: str, max_age_s: float) -> None:
        # Empty: a random secret, so the sessions of this process end with it.
        raw = secret.encode() if secret else secrets.token_bytes(32)
        self.fernet = Fernet(base64.urlsafe_b64encode(hashlib.sha256(raw).digest()))
        self.max_age_s = max_age_s

    def new(self, key: str, tenant: str) -> Session:
        return Session(key, tenant, secrets.token_urlsafe(24), time.time() + self.max_age_s)

    def seal(self, session: Session) -> str:
        doc = {"k": session.key, "t": session.tenant, "c": session.csrf, "e": session.expires_at}
        if session.crawls:
            doc["j"] = session.crawls[-MAX_REMEMBERED_CRAWLS:]
        return self.fernet.encrypt(json.dumps(doc, separators=(",", ":")).encode()).decode()

    def open(self, token: str | None) -> Session | None:
        """The session in a cookie, or None when it is missing, forged or expired."""
        if not token:
            return None
        try:
            doc = json.loads(self.fernet.decrypt(token.encode(), ttl=int(self.max_age_s) + 60))
            session = Session(doc["k"], doc["t"], doc["c"], float(doc["e"]), list(doc.get("j", [])))
        except (InvalidToken, ValueError, KeyError, TypeError):
            return None
        return session if session.expires_at > time.time() else None

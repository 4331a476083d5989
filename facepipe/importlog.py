"""The resume log of folder imports: which local files the stack has handled, per
tenant, so that a later import skips a file unchanged since (same path, size and
modification time) without reading it, and an interrupted import picks up where it
stopped.

A file is recorded as handled only once the stack reported it done (indexed, no face,
duplicate, or failed for good). A file published without waiting for its outcome is
recorded as pending with its batch and message id; the next import settles it from
the completion events the stack keeps, or publishes it again (the stack's duplicate
check keeps it from being indexed twice, and a copy reported a duplicate of the earlier
message, still in flight, takes that message's outcome once it comes).

One SQLite file in the data dir, written by the CLI only."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

LOG_FILE = "import-log.sqlite"
# Outcomes of a handled file; PENDING: published, outcome not seen yet.
PENDING = ""
INDEXED = "indexed"
NO_FACE = "no_face"
DUPLICATE = "duplicate"
FAILED = "failed"
UNREADABLE = "unreadable"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    tenant TEXT NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL DEFAULT '',
    outcome TEXT NOT NULL DEFAULT '',
    batch_id TEXT NOT NULL DEFAULT '',
    message_id TEXT NOT NULL DEFAULT '',
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant, path)
)
"""


@dataclass(frozen=True)
class FileState:
    """What a file was (size, modification time) when it was last imported."""

    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Pending:
    """A file published by an earlier import whose outcome that import did not see."""

    path: str
    state: FileState
    batch_id: str
    message_id: str
    published_ms: int


class ImportLog:
    """The resume log at ``<data_dir>/import-log.sqlite``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), timeout=30.0, isolation_level=None)
        # WAL: a killed import loses at most the outcome it was writing.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> ImportLog:
        return cls(data_dir / LOG_FILE)

    def handled(self, tenant: str) -> dict[str, FileState]:
        """Every file of the tenant that the stack has handled, by resolved path."""
        rows = self._db.execute(
            "SELECT path, size, mtime_ns FROM files WHERE tenant = ? AND outcome != ?", (tenant, PENDING)
        )
        return {path: FileState(size, mtime) for path, size, mtime in rows}

    def pending(self, tenant: str) -> list[Pending]:
        rows = self._db.execute(
            "SELECT path, size, mtime_ns, batch_id, message_id, updated_ms FROM files "
            "WHERE tenant = ? AND outcome = ?",
            (tenant, PENDING),
        )
        return [
            Pending(path, FileState(size, mtime), batch, mid, published_ms)
            for path, size, mtime, batch, mid, published_ms in rows
        ]

    def published(self, tenant: str, path: str, state: FileState, batch_id: str, message_id: str) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO files (tenant, path, size, mtime_ns, outcome, batch_id, message_id, "
            "updated_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (tenant, path, state.size, state.mtime_ns, PENDING, batch_id, message_id, _now_ms()),
        )

    def done(self, tenant: str, path: str, state: FileState, outcome: str, sha256: str = "") -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO files (tenant, path, size, mtime_ns, sha256, outcome, updated_ms) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (tenant, path, state.size, state.mtime_ns, sha256, outcome, _now_ms()),
        )

    def counts(self, tenant: str) -> dict[str, int]:
        """Files by outcome (``pending`` for PENDING), for reports and tests."""
        rows = self._db.execute(
            "SELECT outcome, COUNT(*) FROM files WHERE tenant = ? GROUP BY outcome", (tenant,)
        )
        return {(outcome or "pending"): n for outcome, n in rows}

    def close(self) -> None:
        self._db.close()


def _now_ms() -> int:
    return int(time.time() * 1000)

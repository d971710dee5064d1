"""The acquirer simulator's ledger: one SQLite row per request message and its outcome.

Never holds a full PAN: ``pan_masked`` (first 6 / last 4) and ``pan_hash`` (salted SHA-256,
first 16 hex digits) for matching.  The schema is a contract with ``rigs.host`` (read-only
reader) and docs/iso8583.md.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

TABLE = "messages"
COLUMNS = (
    "received_at", "received_ts", "mti", "response_mti", "proc_code", "terminal_id",
    "merchant_id", "stan", "batch_no", "rrn", "auth_code", "amount_minor", "currency",
    "pan_masked", "pan_hash", "entry_mode", "response_code",
)
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at TEXT NOT NULL,      -- ISO 8601, host local time
    received_ts REAL NOT NULL,      -- POSIX seconds
    mti TEXT NOT NULL,
    response_mti TEXT,
    proc_code TEXT,
    terminal_id TEXT,
    merchant_id TEXT,
    stan TEXT,
    batch_no TEXT,
    rrn TEXT,
    auth_code TEXT,
    amount_minor INTEGER,
    currency TEXT,
    pan_masked TEXT,
    pan_hash TEXT,
    entry_mode TEXT,
    response_code TEXT
);
"""


@dataclass(frozen=True)
class LedgerRecord:
    """What the engine hands the ledger for one request (already masked)."""

    received_at: str
    received_ts: float
    mti: str
    response_mti: str | None
    proc_code: str | None
    terminal_id: str | None
    merchant_id: str | None
    stan: str | None
    batch_no: str | None
    rrn: str | None
    auth_code: str | None
    amount_minor: int | None
    currency: str | None
    pan_masked: str | None
    pan_hash: str | None
    entry_mode: str | None
    response_code: str | None


class SqliteLedger:
    """Writes :class:`LedgerRecord` rows; thread-safe (one connection, one lock)."""

    def __init__(self, path: str | Path, busy_timeout: float = 5.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), timeout=busy_timeout,
                                   check_same_thread=False, isolation_level=None)
        self._db.execute(SCHEMA)

    def record(self, rec: LedgerRecord) -> int:
        row = asdict(rec)
        cols = ", ".join(COLUMNS)
        marks = ", ".join("?" for _ in COLUMNS)
        with self._lock:
            cur = self._db.execute(f"INSERT INTO {TABLE} ({cols}) VALUES ({marks})",
                                   [row[c] for c in COLUMNS])
            rowid = int(cur.lastrowid or 0)
        logger.debug("ledger row %d: %s %s stan=%s rc=%s pan=%s", rowid, rec.mti,
                     rec.terminal_id, rec.stan, rec.response_code, rec.pan_masked)
        return rowid

    def close(self) -> None:
        with self._lock:
            self._db.close()


class MemoryLedger:
    """In-memory sink with the same ``record`` surface (tests, benchmarks)."""

    def __init__(self) -> None:
        self.records: list[LedgerRecord] = []

    def record(self, rec: LedgerRecord) -> int:
        self.records.append(rec)
        return len(self.records)

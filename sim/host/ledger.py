"""The acquirer simulator's ledger: one SQLite row per request message and its outcome.

Never holds a full PAN: ``pan_masked`` (first 6 / last 4) and ``pan_hash`` (salted SHA-256,
first 16 hex digits) for matching.  The schema is a contract with ``rigs.host`` (read-only
reader) and docs/iso8583.md.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from dataclasses import asdict
from pathlib import Path

from protocols.ledger import COLUMNS, SCHEMA, TABLE, LedgerRecord

logger = logging.getLogger(__name__)

__all__ = ["COLUMNS", "SCHEMA", "TABLE", "LedgerRecord", "MemoryLedger", "SqliteLedger"]


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

"""The acquirer simulator's ledger: one SQLite row per request message and its outcome.

Never holds a full PAN: ``pan_masked`` (first 6 / last 4) and ``pan_hash`` (salted SHA-256,
first 16 hex digits) for matching.  The schema is a contract with ``rigs.host`` (read-only
reader) and docs/iso8583.md.

Besides writing (``record``) both ledgers answer the engine's one read:
``find_original(terminal_id, rrn=, stan=, batch_no=)`` — the newest *approved financial request*
(a row with a processing code and response code 00) of that terminal matching every key given
(RRN and/or STAN, optionally the batch), or None.  Transaction types that refer to an original
(void, refund) look it up this way.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from dataclasses import asdict
from pathlib import Path

from protocols.errors import SimError
from protocols.ledger import COLUMNS, SCHEMA, TABLE, LedgerRecord

logger = logging.getLogger(__name__)

__all__ = ["APPROVED", "COLUMNS", "SCHEMA", "TABLE", "LedgerRecord", "MemoryLedger",
           "SqliteLedger"]

#: Response code of an approved request: only approved financial requests can be originals.
APPROVED = "00"


def _original_keys(who: str, terminal_id: str, rrn: str | None, stan: str | None,
                   batch_no: str | None) -> dict[str, str]:
    """The column → value pairs an original must match (terminal plus the keys given)."""
    if not rrn and not stan:
        raise SimError(f"{who}: find_original(terminal {terminal_id}) needs rrn or stan; got "
                       f"neither (batch_no={batch_no!r})")
    pairs = {"terminal_id": terminal_id, "rrn": rrn, "stan": stan, "batch_no": batch_no}
    return {k: v for k, v in pairs.items() if v}


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

    def find_original(self, terminal_id: str, *, rrn: str | None = None,
                      stan: str | None = None, batch_no: str | None = None
                      ) -> LedgerRecord | None:
        """The newest approved financial request matching (see module doc), or None."""
        keys = _original_keys(repr(self), terminal_id, rrn, stan, batch_no)
        where = " AND ".join(f"{col} = ?" for col in keys)
        sql = (f"SELECT {', '.join(COLUMNS)} FROM {TABLE} WHERE {where} AND proc_code IS NOT "
               f"NULL AND response_code = ? ORDER BY id DESC LIMIT 1")
        with self._lock:
            row = self._db.execute(sql, [*keys.values(), APPROVED]).fetchone()
        if row is None:
            return None
        return LedgerRecord(**dict(zip(COLUMNS, row, strict=True)))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __repr__(self) -> str:
        return f"SqliteLedger({self.path})"


class MemoryLedger:
    """In-memory sink with the same ``record`` surface (tests, benchmarks)."""

    def __init__(self) -> None:
        self.records: list[LedgerRecord] = []

    def record(self, rec: LedgerRecord) -> int:
        self.records.append(rec)
        return len(self.records)

    def find_original(self, terminal_id: str, *, rrn: str | None = None,
                      stan: str | None = None, batch_no: str | None = None
                      ) -> LedgerRecord | None:
        """The newest approved financial request matching (see module doc), or None."""
        keys = _original_keys("MemoryLedger", terminal_id, rrn, stan, batch_no)
        for rec in reversed(self.records):
            if (rec.proc_code is not None and rec.response_code == APPROVED
                    and all(getattr(rec, col) == value for col, value in keys.items())):
                return rec
        return None

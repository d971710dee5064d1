"""The acquirer simulator's ledger: one SQLite row per request message and its outcome.

Never holds a full PAN: ``pan_masked`` (first 6 / last 4) and ``pan_hash`` (salted SHA-256,
first 16 hex digits) for matching.  The schema (:mod:`protocols.ledger`) is a contract with
``rigs.host`` (read-only reader) and docs/iso8583.md.  A ledger file written by an older host is
migrated when opened: the columns it lacks are added (columns are only ever appended).

Besides writing (``record``) both ledgers answer the engine's reads and one update:

- ``find_original(terminal_id, rrn=, stan=, batch_no=)`` — the newest *approved financial
  request* (a row with a processing code and response code 00 that is not a management message:
  reversal, batch upload, settlement) of that terminal matching every key given (RRN and/or STAN,
  optionally the batch), or None.  Transaction types that refer to an original (void, refund) and
  reversals look it up this way;
- ``batch_records(terminal_id, batch_no)`` — that terminal's rows of that batch, in order (the
  input of :func:`protocols.ledger.batch_view`);
- ``referring(original_id)`` — the rows that name row *original_id* as their original;
- ``set_status(row_id, status)`` — an original voided, reversed, or booked again.

Records returned carry their row id (``LedgerRecord.id``).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import asdict, replace
from pathlib import Path

from protocols.errors import SimError
from protocols.ledger import (
    APPROVED,
    COLUMN_TYPES,
    COLUMNS,
    MANAGEMENT_KINDS,
    SCHEMA,
    TABLE,
    LedgerRecord,
)
from sim.ledgerdb import open_ledger

logger = logging.getLogger(__name__)

__all__ = ["APPROVED", "COLUMNS", "SCHEMA", "TABLE", "LedgerRecord", "MemoryLedger",
           "SqliteLedger"]

_SELECT = ", ".join(("id", *COLUMNS))
_NOT_MANAGEMENT = ", ".join(f"'{k}'" for k in sorted(MANAGEMENT_KINDS))


def _original_keys(who: str, terminal_id: str, rrn: str | None, stan: str | None,
                   batch_no: str | None) -> dict[str, str]:
    """The column → value pairs an original must match (terminal plus the keys given)."""
    if not rrn and not stan:
        raise SimError(f"{who}: find_original(terminal {terminal_id}) needs rrn or stan; got "
                       f"neither (batch_no={batch_no!r})")
    pairs = {"terminal_id": terminal_id, "rrn": rrn, "stan": stan, "batch_no": batch_no}
    return {k: v for k, v in pairs.items() if v}


def _row(row: tuple[object, ...]) -> LedgerRecord:
    values = dict(zip(("id", *COLUMNS), row, strict=True))
    return LedgerRecord(**values)  # type: ignore[arg-type]


class SqliteLedger:
    """Writes :class:`LedgerRecord` rows; thread-safe (one connection, one lock)."""

    def __init__(self, path: str | Path, busy_timeout: float = 5.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = open_ledger("SqliteLedger", self.path, (SCHEMA,), busy_timeout)
        self._migrate()

    def _migrate(self) -> None:
        """Add the columns an older ledger file lacks (they are only ever appended)."""
        have = {str(r[1]) for r in self._db.execute(f"PRAGMA table_info({TABLE})")}
        for name, sql in COLUMN_TYPES:
            if name not in have:
                self._db.execute(f"ALTER TABLE {TABLE} ADD COLUMN {name} "
                                 f"{sql.replace(' NOT NULL', '')}")
                logger.info("%r: added column %s to an older ledger", self, name)

    def record(self, rec: LedgerRecord) -> int:
        row = asdict(rec)
        cols = ", ".join(COLUMNS)
        marks = ", ".join("?" for _ in COLUMNS)
        with self._lock:
            cur = self._db.execute(f"INSERT INTO {TABLE} ({cols}) VALUES ({marks})",
                                   [row[c] for c in COLUMNS])
            rowid = int(cur.lastrowid or 0)
        logger.debug("ledger row %d: %s %s stan=%s rc=%s %s pan=%s", rowid, rec.mti,
                     rec.terminal_id, rec.stan, rec.response_code, rec.status, rec.pan_masked)
        return rowid

    def _select(self, where: str, params: list[object], tail: str = "ORDER BY id"
                ) -> list[LedgerRecord]:
        with self._lock:
            rows = self._db.execute(f"SELECT {_SELECT} FROM {TABLE} WHERE {where} {tail}",
                                    params).fetchall()
        return [_row(r) for r in rows]

    def find_original(self, terminal_id: str, *, rrn: str | None = None,
                      stan: str | None = None, batch_no: str | None = None
                      ) -> LedgerRecord | None:
        """The newest approved financial request matching (see module doc), or None."""
        keys = _original_keys(repr(self), terminal_id, rrn, stan, batch_no)
        where = " AND ".join(f"{col} = ?" for col in keys)
        found = self._select(
            f"{where} AND proc_code IS NOT NULL AND response_code = ? AND (kind IS NULL OR "
            f"kind NOT IN ({_NOT_MANAGEMENT}))", [*keys.values(), APPROVED],
            "ORDER BY id DESC LIMIT 1")
        return found[0] if found else None

    def batch_records(self, terminal_id: str, batch_no: str) -> list[LedgerRecord]:
        """Every row of *terminal_id* in batch *batch_no*, in ledger order."""
        return self._select("terminal_id = ? AND batch_no = ?", [terminal_id, batch_no])

    def referring(self, original_id: int) -> list[LedgerRecord]:
        """The rows naming row *original_id* as their original, in ledger order."""
        return self._select("original_id = ?", [original_id])

    def set_status(self, row_id: int, status: str) -> None:
        """Change the status of row *row_id* (an original voided, reversed, booked again)."""
        with self._lock:
            cur = self._db.execute(f"UPDATE {TABLE} SET status = ? WHERE id = ?",
                                   [str(status), row_id])
        if cur.rowcount != 1:
            raise SimError(f"{self!r}: set_status({row_id}, {str(status)!r}): no such row")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __repr__(self) -> str:
        return f"SqliteLedger({self.path})"


class MemoryLedger:
    """In-memory ledger with the same surface (tests, benchmarks)."""

    def __init__(self) -> None:
        self.records: list[LedgerRecord] = []

    def record(self, rec: LedgerRecord) -> int:
        self.records.append(replace(rec, id=len(self.records) + 1))
        return len(self.records)

    def find_original(self, terminal_id: str, *, rrn: str | None = None,
                      stan: str | None = None, batch_no: str | None = None
                      ) -> LedgerRecord | None:
        """The newest approved financial request matching (see module doc), or None."""
        keys = _original_keys("MemoryLedger", terminal_id, rrn, stan, batch_no)
        for rec in reversed(self.records):
            if (rec.financial and rec.response_code == APPROVED
                    and all(getattr(rec, col) == value for col, value in keys.items())):
                return rec
        return None

    def batch_records(self, terminal_id: str, batch_no: str) -> list[LedgerRecord]:
        """Every row of *terminal_id* in batch *batch_no*, in ledger order."""
        return [r for r in self.records if r.terminal_id == terminal_id
                and r.batch_no == batch_no]

    def referring(self, original_id: int) -> list[LedgerRecord]:
        """The rows naming row *original_id* as their original, in ledger order."""
        return [r for r in self.records if r.original_id == original_id]

    def set_status(self, row_id: int, status: str) -> None:
        """Change the status of row *row_id* (an original voided, reversed, booked again)."""
        if not 1 <= row_id <= len(self.records):
            raise SimError(f"MemoryLedger: set_status({row_id}, {str(status)!r}): no such row")
        self.records[row_id - 1] = replace(self.records[row_id - 1], status=str(status))

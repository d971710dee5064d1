"""What the rig's read-only views of a simulator's SQLite ledger share (the acquirer host's,
:class:`rigs.host.SqliteAcquirerLedger`; the QR platform's, :class:`rigs.qr.SqliteQrPlatformLedger`).

The file is opened read-only (URI ``mode=ro``) with a bounded busy wait, so the simulator goes
on writing while the rig reads.  Rows are selected by conditions given as data
(``("status = ?", "PAID")``, left out when the value is None) and parsed into records once, at
this boundary: a row that is not the writer's schema is a :class:`TransportError` naming the
operation, the table, the row's id and the field.  Nominal: every table of the schema is
readable; :meth:`~SqliteLedgerReader.restore_nominal` reopens the file (the simulator may have
recreated or migrated it).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from protocols.errors import DecodeError
from rigs.driver import Driver
from rigs.errors import DeviceStateError, TransportError

log = logging.getLogger(__name__)

T = TypeVar("T")
Row = dict[str, Any]


class SqliteLedgerReader(Driver):
    """Read-only view of the ledger file *path* of :attr:`writer` (see the module doc)."""

    writer = "the simulator"
    """Who writes the file, in errors ("the host", "the platform")."""
    started_as = "the simulator running with --ledger"
    """What writes the file, for the error when it does not exist."""
    tables: tuple[str, ...] = ()
    """The schema's tables (:meth:`is_nominal` reads each)."""

    def __init__(self, name: str, path: str | Path, *, busy_timeout: float = 2.0) -> None:
        super().__init__(name)
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self._db: sqlite3.Connection | None = None

    def open(self) -> None:
        if not self.path.is_file():
            raise TransportError(f"{self!r}: open(): ledger file {self.path} does not exist "
                                 f"(is {self.started_as} {self.path}?)")
        try:
            self._db = sqlite3.connect(f"file:{self.path.resolve()}?mode=ro", uri=True,
                                       timeout=self.busy_timeout, check_same_thread=False)
        except sqlite3.Error as exc:
            raise TransportError(f"{self!r}: open(): cannot open {self.path} read-only "
                                 f"({exc})") from exc
        self._opened(self._db)
        super().open()

    def _opened(self, db: sqlite3.Connection) -> None:
        """What a view reads of the file once it is open (e.g. which columns it has)."""

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        super().close()

    def _execute(self, op: str, what: str, sql: str,
                 params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """The rows of *sql*; a failure names *op*, *what* was queried and the busy bound."""
        self.require_open(op)
        assert self._db is not None
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise TransportError(f"{self!r}: {op}(): query on {what} of {self.path} failed "
                                 f"({exc}); busy timeout {self.busy_timeout} s") from exc

    def _rows(self, op: str, table: str, columns: Sequence[str],
              conditions: Iterable[tuple[str, object]] = (),
              tail: str = "ORDER BY id") -> list[Row]:
        """The rows of *table* (as column → value) meeting every condition whose value is not
        None."""
        given = [(clause, value) for clause, value in conditions if value is not None]
        where = ("WHERE " + " AND ".join(clause for clause, _ in given)) if given else ""
        rows = self._execute(op, table, f"SELECT {', '.join(columns)} FROM {table} {where} "
                                        f"{tail}", [value for _, value in given])
        return [dict(zip(columns, row, strict=True)) for row in rows]

    def _parse(self, op: str, table: str, rows: Iterable[Row],
               parse: Callable[[Row], T]) -> list[T]:
        """Each row as a record; a row that is not the schema is named."""
        out = []
        for row in rows:
            try:
                out.append(parse(row))
            except (DecodeError, KeyError, TypeError, ValueError) as exc:
                raise TransportError(f"{self!r}: {op}(): a row of {table} (id {row.get('id')}) "
                                     f"in {self.path} is not {self.writer}'s schema: "
                                     f"{exc}") from None
        return out

    def is_nominal(self) -> bool:
        """The ledger file is readable and has the schema's tables."""
        if self._db is None:
            return False
        try:
            for table in self.tables:
                self._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
        except sqlite3.Error as exc:
            log.warning("%r: ledger not readable: %s", self, exc)
            return False
        return True

    def restore_nominal(self) -> None:
        """Reopen the file (the simulator may have recreated or migrated it)."""
        self.close()
        self.open()
        if not self.is_nominal():
            raise DeviceStateError(f"{self!r}: restore_nominal(): {self.path} lacks "
                                   f"{self.writer}'s tables ({', '.join(self.tables)})")


__all__ = ["SqliteLedgerReader"]

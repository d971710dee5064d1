"""The QR platform's ledger: orders, payments, refunds and requests in one SQLite file (WAL).

The schema is :mod:`protocols.qrledger` (a contract with ``rigs.qr``, the read-only reader, and
docs/qr-platform.md).  :class:`SqliteQrLedger` writes what :class:`sim.qr.engine.QrPlatformEngine`
hands it: an order row is replaced as the order changes (``changed_seq`` grows), a payment row
likewise, refunds and requests are appended.  WAL mode lets the rig read while the platform
writes.  :class:`MemoryQrLedger` has the same surface (tests).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from protocols.qr import QrOrder, QrRefund
from protocols.qrledger import (
    COLUMNS,
    ORDERS,
    PAYMENTS,
    REFUNDS,
    REQUESTS,
    SCHEMAS,
    TABLES,
    QrPayment,
    QrRequestRecord,
    order_row,
    payment_row,
    refund_row,
    request_row,
)
from sim.ledgerdb import open_ledger

logger = logging.getLogger(__name__)


class SqliteQrLedger:
    """Writes the platform's ledger; thread-safe (one connection, one lock)."""

    def __init__(self, path: str | Path, busy_timeout: float = 5.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = open_ledger("SqliteQrLedger", self.path, SCHEMAS, busy_timeout)
        self._migrate()

    def _migrate(self) -> None:
        """Add the columns an older ledger file lacks (columns are only ever appended)."""
        for table, cols in TABLES.items():
            have = {str(r[1]) for r in self._db.execute(f"PRAGMA table_info({table})")}
            for name, sql in cols:
                if name not in have:
                    bare = sql.replace(" NOT NULL", "").replace(" UNIQUE", "")
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {bare}")
                    logger.info("%r: added column %s.%s to an older ledger", self, table, name)

    def _upsert(self, table: str, key: str, row: dict[str, Any]) -> None:
        cols = COLUMNS[table]
        names = ", ".join(cols)
        marks = ", ".join("?" for _ in cols)
        updates = ", ".join(f"{c} = excluded.{c}" for c in cols if c != key)
        with self._lock:
            self._db.execute(f"INSERT INTO {table} ({names}) VALUES ({marks}) "
                             f"ON CONFLICT({key}) DO UPDATE SET {updates}",
                             [row[c] for c in cols])

    def _insert(self, table: str, row: dict[str, Any]) -> int:
        cols = COLUMNS[table]
        with self._lock:
            cur = self._db.execute(f"INSERT INTO {table} ({', '.join(cols)}) VALUES "
                                   f"({', '.join('?' for _ in cols)})", [row[c] for c in cols])
            return int(cur.lastrowid or 0)

    def save_order(self, order: QrOrder, seq: int) -> None:
        self._upsert(ORDERS, "order_id", {**order_row(order), "changed_seq": seq})

    def save_payment(self, payment: QrPayment, seq: int) -> None:
        self._upsert(PAYMENTS, "payment_id", {**payment_row(payment), "changed_seq": seq})

    def add_refund(self, refund: QrRefund) -> None:
        self._insert(REFUNDS, refund_row(refund))

    def add_request(self, rec: QrRequestRecord) -> int:
        return self._insert(REQUESTS, request_row(rec))

    def last_seq(self) -> int:
        """The highest change counter in the file (a restarted platform goes on from it)."""
        with self._lock:
            row = self._db.execute(
                f"SELECT MAX(m) FROM (SELECT MAX(changed_seq) AS m FROM {ORDERS} "
                f"UNION ALL SELECT MAX(changed_seq) FROM {PAYMENTS})").fetchone()
        return int(row[0] or 0) if row else 0

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __repr__(self) -> str:
        return f"SqliteQrLedger({self.path})"


class MemoryQrLedger:
    """The same surface in memory (tests): the latest version of each order and payment, and
    every refund and request."""

    def __init__(self) -> None:
        self.orders: dict[str, tuple[int, QrOrder]] = {}
        self.payments: dict[str, tuple[int, QrPayment]] = {}
        self.refunds: list[QrRefund] = []
        self.requests: list[QrRequestRecord] = []

    def save_order(self, order: QrOrder, seq: int) -> None:
        self.orders[order.order_id] = (seq, order)

    def save_payment(self, payment: QrPayment, seq: int) -> None:
        self.payments[payment.payment_id] = (seq, payment)

    def add_refund(self, refund: QrRefund) -> None:
        self.refunds.append(refund)

    def add_request(self, rec: QrRequestRecord) -> int:
        self.requests.append(rec)
        return len(self.requests)

    def last_seq(self) -> int:
        seqs = [s for s, _ in self.orders.values()] + [s for s, _ in self.payments.values()]
        return max(seqs, default=0)


__all__ = ["MemoryQrLedger", "SqliteQrLedger"]

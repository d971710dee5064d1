"""The ledger's schema across host versions (columns only appended: an older file is migrated,
the rig reads it either way) and the ledgers' reads and update (SQLite and memory alike)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from protocols.errors import SimError
from protocols.ledger import COLUMNS, Status
from rigs.host import SqliteAcquirerLedger
from sim.host.ledger import MemoryLedger, SqliteLedger

from .conftest import TID
from .test_transactions import rec

#: The table as the host wrote it before the business day (17 columns).
OLD_SCHEMA = """
CREATE TABLE messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT, received_at TEXT NOT NULL, received_ts REAL NOT NULL,
    mti TEXT NOT NULL, response_mti TEXT, proc_code TEXT, terminal_id TEXT, merchant_id TEXT,
    stan TEXT, batch_no TEXT, rrn TEXT, auth_code TEXT, amount_minor INTEGER, currency TEXT,
    pan_masked TEXT, pan_hash TEXT, entry_mode TEXT, response_code TEXT);
INSERT INTO messages (received_at, received_ts, mti, response_mti, proc_code, terminal_id,
    merchant_id, stan, batch_no, rrn, auth_code, amount_minor, currency, pan_masked, pan_hash,
    entry_mode, response_code)
VALUES ('2026-03-13T10:00:00.000', 1773396000.0, '0200', '0210', '000000', '10000001',
    '898100012340001', '000002', '000001', '260720000001', '123456', 900, '156',
    '621483******0017', '0123456789abcdef', '051', '00');
"""


def _old_file(path: Path) -> None:
    db = sqlite3.connect(str(path))
    db.executescript(OLD_SCHEMA)
    db.commit()
    db.close()


def test_columns_are_appended_only() -> None:
    assert COLUMNS[:17] == (
        "received_at", "received_ts", "mti", "response_mti", "proc_code", "terminal_id",
        "merchant_id", "stan", "batch_no", "rrn", "auth_code", "amount_minor", "currency",
        "pan_masked", "pan_hash", "entry_mode", "response_code")
    assert COLUMNS[17:] == (
        "kind", "status", "original_id", "original_stan", "original_batch", "original_rrn",
        "reason_code", "reconciliation", "field48_request", "field48_response", "rule_id",
        "rule_action")


def test_the_rig_reads_an_older_ledger_with_the_new_columns_empty(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _old_file(path)
    with SqliteAcquirerLedger("host", path) as reader:
        assert isinstance(reader, SqliteAcquirerLedger)
        (entry,) = reader.entries()
        assert (entry.stan, entry.amount_minor, entry.kind, entry.status) == (
            "000002", 900, None, None)
        assert reader.is_nominal() and "000002" in reader.text()


def test_an_older_ledger_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _old_file(path)
    with SqliteAcquirerLedger("host", path) as reader:
        assert isinstance(reader, SqliteAcquirerLedger)
        ledger = SqliteLedger(path)  # a newer host opens the file while the rig reads it
        try:
            new_id = ledger.record(rec(stan="000003", kind="sale", status=Status.BOOKED))
            old = ledger.find_original(TID, stan="000002")
            assert old is not None and old.id == 1 and old.kind is None and old.amount_minor == 900
            reader.restore_nominal()  # reopening reads the new columns
            rows = reader.entries()
            assert [(r.id, r.stan, r.kind) for r in rows] == [(1, "000002", None),
                                                              (new_id, "000003", "sale")]
        finally:
            ledger.close()
    SqliteLedger(path).close()  # opening a migrated file again changes nothing


@pytest.fixture(params=["memory", "sqlite"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    led: Any = MemoryLedger() if request.param == "memory" else SqliteLedger(tmp_path / "l.db")
    yield led
    if request.param == "sqlite":
        led.close()


def test_reads_and_status_updates_agree(ledger: Any) -> None:
    sale = ledger.record(rec(kind="sale", status=Status.BOOKED))
    ledger.record(rec(stan="000003", kind="refund", mti="0220", proc_code="200000",
                      amount_minor=300, status=Status.BOOKED, original_id=sale))
    ledger.record(rec(stan="000002", kind="reversal", mti="0400", proc_code="000000",
                      status=Status.NETTED, original_id=sale))
    ledger.record(rec(stan="000002", kind="upload", mti="0320", status=Status.UPLOADED))
    ledger.record(rec(stan="000009", batch_no="000002", kind="sale", status=Status.BOOKED))
    found = ledger.find_original(TID, stan="000002")
    assert found is not None and found.id == sale and found.kind == "sale"  # not the 0400/0320
    assert [r.kind for r in ledger.referring(sale)] == ["refund", "reversal"]
    assert [r.stan for r in ledger.batch_records(TID, "000002")] == ["000009"]
    assert len(ledger.batch_records(TID, "000001")) == 4
    ledger.set_status(sale, Status.REVERSED)
    assert ledger.find_original(TID, stan="000002").status == "reversed"
    with pytest.raises(SimError, match=r"set_status\(99, 'voided'\): no such row"):
        ledger.set_status(99, Status.VOIDED)

"""The platform's SQLite ledger (sim.qr.ledger) and the rig's read-only view of it
(rigs.qr.SqliteQrPlatformLedger): WAL, rows replaced as orders change, marks, migration."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from protocols.qr import Operation, OrderStatus, Wallet
from protocols.qrledger import ORDERS, PaymentStatus
from rigs.errors import DeviceStateError, TransportError
from rigs.qr import QrMark, SqliteQrPlatformLedger
from sim.qr.config import QrTerminal
from sim.qr.engine import QrPlatformEngine
from sim.qr.ledger import SqliteQrLedger

from .conftest import T0, call, counting_random


@pytest.fixture
def written(tmp_path: Path, terminals: dict[str, QrTerminal]
            ) -> tuple[QrPlatformEngine, SqliteQrLedger, Path]:
    path = tmp_path / "qr.sqlite"
    sqlite = SqliteQrLedger(path)
    engine = QrPlatformEngine(terminals, ledger=sqlite, random=counting_random())
    return engine, sqlite, path


def _day(engine: QrPlatformEngine) -> None:
    """A native order paid and partly refunded, a micropay revoked, a request refused."""
    order = call(engine, Operation.CREATE, {"out_trade_no": "T1", "amount": 1000}).order
    engine.scan(order["code_url"], T0 + 1, wallet=Wallet.ALIPAY, buyer_id="bob")
    assert call(engine, Operation.REFUND, {"out_trade_no": "T1", "out_refund_no": "RF1",
                                           "amount": 250}, T0 + 2).ok
    code = engine.issue_code(Wallet.WECHAT, T0 + 3)
    assert call(engine, Operation.MICROPAY, {"out_trade_no": "M1", "amount": 300,
                                             "auth_code": code.code}, T0 + 3).ok
    assert call(engine, Operation.CANCEL, {"out_trade_no": "M1"}, T0 + 4).ok
    assert call(engine, Operation.QUERY, {"out_trade_no": "NOPE"}, T0 + 5).error == \
        "ORDER_NOT_EXIST"


def test_the_file_is_wal_and_holds_what_happened(
        written: tuple[QrPlatformEngine, SqliteQrLedger, Path]) -> None:
    engine, sqlite, path = written
    _day(engine)
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    rows = raw.execute(f"SELECT out_trade_no, status, paid_amount, refunded_amount FROM {ORDERS}"
                       " ORDER BY id").fetchall()
    assert rows == [("T1", "REFUND", 1000, 250), ("M1", "REVOKED", 300, 0)]
    raw.close()
    rig = SqliteQrPlatformLedger("qr-ledger", path)
    rig.open()
    try:
        t1, m1 = rig.orders()
        assert t1.status is OrderStatus.REFUND and t1.wallet is Wallet.ALIPAY
        assert t1.buyer_id == "bob" and t1.refundable == 750
        assert m1.status is OrderStatus.REVOKED and m1.auth_code is not None
        assert "*" in m1.auth_code
        pay_t1, pay_m1 = rig.payments()
        assert pay_t1.status is PaymentStatus.PAID and pay_m1.status is PaymentStatus.REVOKED
        (refund,) = rig.refunds()
        assert (refund.out_refund_no, refund.amount, refund.order_id) == ("RF1", 250,
                                                                        t1.order_id)
        ops = [(r.operation, r.result) for r in rig.requests()]
        assert ops == [("create", "SUCCESS"), ("refund", "SUCCESS"), ("micropay", "SUCCESS"),
                       ("cancel", "SUCCESS"), ("query", "ORDER_NOT_EXIST")]
        assert rig.order(out_trade_no="M1") == m1 and rig.order(order_id="nope") is None
        assert rig.orders(status="REVOKED") == [m1] and rig.orders(kind="native") == [t1]
        assert rig.payments(order_id=m1.order_id) == [pay_m1]
        text = rig.text()
        assert "T1" in text and "REFUND" in text and "ORDER_NOT_EXIST" in text
        assert rig.is_nominal()
    finally:
        rig.close()
        sqlite.close()


def test_marks_give_what_changed_since(
        written: tuple[QrPlatformEngine, SqliteQrLedger, Path]) -> None:
    engine, sqlite, path = written
    rig = SqliteQrPlatformLedger("qr-ledger", path)
    rig.open()
    try:
        assert rig.mark() == QrMark(0, 0, 0)
        order = call(engine, Operation.CREATE, {"out_trade_no": "T1", "amount": 10}).order
        call(engine, Operation.CREATE, {"out_trade_no": "T2", "amount": 20})
        mark = rig.mark()
        assert mark == QrMark(2, 0, 2)
        assert rig.orders(mark) == [] and rig.requests(mark) == []
        engine.scan(order["code_url"], T0 + 1, wallet=Wallet.WECHAT)  # T1 changes, T2 not
        call(engine, Operation.REFUND, {"out_trade_no": "T1", "out_refund_no": "R",
                                        "amount": 1})
        assert [o.out_trade_no for o in rig.orders(mark)] == ["T1"]
        assert [r.operation for r in rig.requests(mark)] == ["refund"]
        assert len(rig.refunds(mark)) == 1 and len(rig.payments(mark)) == 1
        assert "T2" not in rig.text(mark)
    finally:
        rig.close()
        sqlite.close()


def test_a_restarted_platform_goes_on_counting(
        written: tuple[QrPlatformEngine, SqliteQrLedger, Path],
        terminals: dict[str, QrTerminal]) -> None:
    engine, sqlite, path = written
    _day(engine)
    seq = engine.seq
    sqlite.close()
    again = SqliteQrLedger(path)
    assert again.last_seq() == seq
    assert QrPlatformEngine(terminals, ledger=again).seq == seq
    again.close()


def test_an_older_file_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    raw = sqlite3.connect(path)
    raw.execute("CREATE TABLE requests (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                "received_at TEXT NOT NULL, received_ts REAL NOT NULL, operation TEXT NOT NULL,"
                " result TEXT NOT NULL, http_status INTEGER NOT NULL)")
    raw.commit()
    raw.close()
    sqlite = SqliteQrLedger(path)
    cols = {r[1] for r in sqlite3.connect(path).execute("PRAGMA table_info(requests)")}
    assert {"rule_id", "rule_action", "terminal_id"} <= cols
    sqlite.close()


def test_the_rig_view_needs_the_file_and_an_open_session(tmp_path: Path) -> None:
    rig = SqliteQrPlatformLedger("qr-ledger", tmp_path / "missing.sqlite")
    with pytest.raises(TransportError, match=r"missing.sqlite does not exist \(is the QR "
                                             r"platform running with --ledger"):
        rig.open()
    with pytest.raises(DeviceStateError, match=r"SqliteQrPlatformLedger\(qr-ledger\): "
                                               r"orders\(\) needs an open session"):
        rig.orders()
    assert not rig.is_nominal()
    empty = tmp_path / "empty.sqlite"
    sqlite3.connect(empty).close()
    rig = SqliteQrPlatformLedger("qr-ledger", empty)
    rig.open()
    assert not rig.is_nominal()
    with pytest.raises(TransportError, match="query on orders .* failed .*busy timeout"):
        rig.orders()
    with pytest.raises(DeviceStateError, match="lacks the platform's tables"):
        rig.restore_nominal()
    rig.close()


def test_a_row_that_is_not_the_schema_is_named(
        written: tuple[QrPlatformEngine, SqliteQrLedger, Path]) -> None:
    engine, sqlite, path = written
    call(engine, Operation.CREATE, {"out_trade_no": "T1", "amount": 10})
    raw = sqlite3.connect(path)
    raw.execute("UPDATE orders SET status = 'PAID'")
    raw.commit()
    raw.close()
    rig = SqliteQrPlatformLedger("qr-ledger", path)
    rig.open()
    with pytest.raises(TransportError, match=r"orders\(\): a row of .* is not the platform's "
                                             r"schema: orders.status: 'PAID'"):
        rig.orders()
    rig.close()
    sqlite.close()

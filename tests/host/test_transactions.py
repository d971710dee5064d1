"""The host and the terminal's acquirer client dispatch on the transaction table: a test-only
row plus a host handler flows end to end; the ledger's read path finds originals."""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from protocols.errors import ConfigError, SimError
from protocols.iso8583 import Header, Tpdu
from protocols.ledger import LedgerRecord
from protocols.transactions import SALE, OriginalRef, TransactionTable, TransactionType
from sim.host.engine import (
    MTI_HANDLERS,
    PROC_HANDLERS,
    TXN_HANDLERS,
    AcquirerEngine,
    Answer,
    load_accounts,
    load_terminals,
)
from sim.host.ledger import MemoryLedger, SqliteLedger
from sim.host.server import AcquirerServer
from sim.terminal.acquirer import AcquirerClient, AuthResult, WorkingKeys

from .conftest import MID, NOW, PAN, PIN, TID, TMK, counting_keys

TRACK2 = f"{PAN}D30122201234567890F"


class HostTxn(enum.StrEnum):
    VOID = "test_void"  # a test-only type: the table's own void is "void"


#: Test-only row: a void by trace or by RRN, no card, no PIN.
VOID = TransactionType(
    type=HostTxn.VOID,  # type: ignore[arg-type]  # a test-only type, not in TxnType
    ecr_code="VD", ecr_name="VOID", mti="0200", proc_code="200000", condition_code="00",
    message_type_code="23", receipt_title="撤销 VOID", needs_card=False, needs_original=True,
    needs_pin=False, description="test-only void")
TABLE = TransactionTable((SALE, VOID))
VOIDED: list[LedgerRecord] = []


def _void(engine: AcquirerEngine, ctx: Any) -> None:
    """The test row's host handler: authenticated, original found in the ledger, approved."""
    engine._authenticate(ctx)
    VOIDED.append(engine.original_of(ctx))
    ctx.response["39"] = "00"


HANDLERS: Mapping[str, Any] = {**TXN_HANDLERS, HostTxn.VOID: _void}


def rec(**over: Any) -> LedgerRecord:
    base: dict[str, Any] = dict(
        received_at="2026-03-14T15:09:26.000", received_ts=1773500966.0, mti="0200",
        response_mti="0210", proc_code="000000", terminal_id=TID, merchant_id=MID,
        stan="000002", batch_no="000001", rrn="260730000001", auth_code="123456",
        amount_minor=2500, currency="156", pan_masked="621483******0017",
        pan_hash="0123456789abcdef", entry_mode="051", response_code="00")
    base.update(over)
    return LedgerRecord(**base)


ROWS = [
    rec(mti="0800", response_mti="0810", proc_code=None, stan="000001", rrn="260730000000",
        amount_minor=None, response_code="00"),
    rec(),  # approved sale: STAN 2, RRN …001
    rec(stan="000003", rrn="260730000002", response_code="55", auth_code=None),  # declined
    rec(terminal_id="10000002", stan="000004", rrn="260730000003"),  # another terminal
]


@pytest.fixture(params=["memory", "sqlite"])
def filled_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    ledger: Any = MemoryLedger() if request.param == "memory" else SqliteLedger(tmp_path / "l.db")
    for row in ROWS:
        ledger.record(row)
    yield ledger
    if request.param == "sqlite":
        ledger.close()


def test_find_original_by_rrn_and_by_stan(filled_ledger: Any) -> None:
    sale = ROWS[1]
    assert filled_ledger.find_original(TID, rrn="260730000001") == sale
    assert filled_ledger.find_original(TID, stan="000002") == sale
    assert filled_ledger.find_original(TID, stan="000002", batch_no="000001") == sale
    assert filled_ledger.find_original(TID, rrn="260730000001", stan="000002") == sale


@pytest.mark.parametrize("keys", [
    {"rrn": "999999999999"},
    {"stan": "000099"},
    {"stan": "000002", "batch_no": "000009"},
    {"stan": "000003"},  # declined: not an original
    {"stan": "000001"},  # the sign-in: not a financial request
    {"stan": "000004"},  # another terminal's
    {"rrn": "260730000001", "stan": "000003"},  # both must match
])
def test_find_original_none_for_unknown(filled_ledger: Any, keys: dict[str, str]) -> None:
    assert filled_ledger.find_original(TID, **keys) is None


def test_find_original_needs_rrn_or_stan(filled_ledger: Any) -> None:
    with pytest.raises(SimError, match=rf"find_original\(terminal {TID}\) needs rrn or stan; "
                                       r"got neither \(batch_no='000001'\)"):
        filled_ledger.find_original(TID, batch_no="000001")


def test_dispatch_tables_come_from_the_table() -> None:
    assert PROC_HANDLERS == {("0200", "000000"): AcquirerEngine._sale,
                             ("0200", "200000"): AcquirerEngine._void,
                             ("0220", "200000"): AcquirerEngine._refund}
    assert set(MTI_HANDLERS) == {"0800", "0200", "0220", "0400", "0320", "0500"}
    with pytest.raises(ConfigError, match="no handler for transaction type.s. test_void"):
        AcquirerEngine({}, {}, transactions=TABLE)


def test_engine_without_ledger_finds_no_original() -> None:
    engine = AcquirerEngine({}, {}, pan_salt=b"s")
    assert engine.find_original(TID, stan="000002") is None


# ------------------------------------------------------------------ end to end over loopback

@pytest.fixture
def served(config_dir: Path, tmp_path: Path) -> Iterator[tuple[AcquirerServer, SqliteLedger,
                                                                list[dict[str, str]]]]:
    ledger = SqliteLedger(tmp_path / "host.db")
    engine = AcquirerEngine(load_terminals(config_dir / "terminals.yaml"),
                            load_accounts(config_dir / "cards"), ledger=ledger,
                            key_source=counting_keys(), transactions=TABLE,
                            txn_handlers=HANDLERS)
    requests: list[dict[str, str]] = []
    answer = engine.answer

    def spy(tpdu: Tpdu, header: Header, doc: Mapping[str, str], now: dt.datetime,
            **kw: Any) -> Answer:
        requests.append(dict(doc))
        return answer(tpdu, header, doc, now, **kw)

    engine.answer = spy  # type: ignore[method-assign]
    srv = AcquirerServer(engine, "127.0.0.1", 0, idle_timeout=2.0, clock=lambda: NOW)
    srv.start()
    VOIDED.clear()
    try:
        yield srv, ledger, requests
    finally:
        srv.stop()
        ledger.close()


def _signed_in(address: tuple[str, int]) -> tuple[AcquirerClient, WorkingKeys]:
    c = AcquirerClient(*address, terminal_id=TID, merchant_id=MID, master_key=TMK,
                       transactions=TABLE)
    si = c.sign_in(operator="01", stan=1, batch_no=1)
    assert si.keys is not None
    return c, si.keys


def _sale(c: AcquirerClient, keys: WorkingKeys, stan: int) -> AuthResult:
    return c.financial(SALE, keys=keys, stan=stan, batch_no=1, amount_minor=2500, pan=PAN,
                       expiry="3012", pan_seq="1", track2_equivalent=TRACK2, icc_data=b"",
                       pin=PIN)


def test_second_type_by_trace_flows_through_client_host_and_ledger(
        served: tuple[AcquirerServer, SqliteLedger, list[dict[str, str]]]) -> None:
    server, ledger, requests = served
    c, keys = _signed_in(server.address)
    sale = _sale(c, keys, 2)
    assert sale.approved
    res = c.financial(HostTxn.VOID, keys=keys, stan=3, batch_no=1, amount_minor=2500,
                      original=OriginalRef.by_trace(2))
    assert (res.response_code, res.approved) == ("00", True)  # response MAC verified too
    req = requests[-1]
    assert (req["t"], req["3"], req["25"], req["60"], req["61"]) == (
        "0200", "200000", "00", "2300000100050", "0000010000020000")
    assert not {"2", "35", "52", "55"} & set(req)  # no card, no PIN
    assert VOIDED[-1].stan == "000002" and VOIDED[-1].rrn == sale.rrn
    assert ledger.find_original(TID, stan="000003") is not None  # the void itself is recorded


def test_second_type_by_rrn_and_unknown_original(
        served: tuple[AcquirerServer, SqliteLedger, list[dict[str, str]]]) -> None:
    server, _ledger, requests = served
    c, keys = _signed_in(server.address)
    sale = _sale(c, keys, 2)
    assert sale.rrn is not None
    res = c.financial(HostTxn.VOID, keys=keys, stan=3, batch_no=1, amount_minor=2500,
                      original=OriginalRef.by_rrn(sale.rrn, NOW.strftime("%m%d")))
    assert res.approved and requests[-1]["37"] == sale.rrn
    assert requests[-1]["61"] == "000000000000" + NOW.strftime("%m%d")
    wrong_day = c.financial(HostTxn.VOID, keys=keys, stan=4, batch_no=1, amount_minor=2500,
                            original=OriginalRef.by_rrn(sale.rrn, "0101"))
    assert wrong_day.response_code == "25"
    unknown = c.financial(HostTxn.VOID, keys=keys, stan=5, batch_no=1, amount_minor=2500,
                          original=OriginalRef.by_trace(99))
    assert (unknown.response_code, unknown.approved) == ("25", False)


def test_client_refuses_a_type_without_its_original_or_card() -> None:
    c = AcquirerClient("127.0.0.1", 9, terminal_id=TID, merchant_id=MID, master_key=TMK,
                       transactions=TABLE)
    keys = WorkingKeys(bytes(16), bytes(16))
    with pytest.raises(SimError, match=r"financial\(test_void\) STAN 000003: the type needs the "
                                       r"original transaction; original is None"):
        c.financial(HostTxn.VOID, keys=keys, stan=3, batch_no=1, amount_minor=1)
    with pytest.raises(SimError, match=r"financial\(sale\) STAN 000004: the type needs a card"):
        c.financial(SALE, keys=keys, stan=4, batch_no=1, amount_minor=1)

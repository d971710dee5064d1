"""AcquirerEngine across a merchant's business day (docs/business-day.md), without sockets:
voids, refunds, reversals, settlement, batch upload, disagree_next; the ledger rows they leave."""

from __future__ import annotations

import pytest

from protocols.errors import ConfigError
from protocols.iso8583 import Header, Tpdu, decode_message, encode_with_mac
from protocols.ledger import KIND_REVERSAL, KIND_SETTLEMENT, LedgerRecord, Status, Totals
from sim.host.engine import AcquirerEngine
from sim.host.ledger import MemoryLedger

from .business import (
    Term,
    reversal_doc,
    sale_doc,
    settlement_doc,
    upload_end_doc,
    void_doc,
)
from .conftest import NOW, PAN, PAN_LOW, TID

BALANCE = 1000000
MMDD = NOW.strftime("%m%d")


@pytest.fixture
def term(engine: AcquirerEngine) -> Term:
    return Term(engine)


def rows(ledger: MemoryLedger, **where: object) -> list[LedgerRecord]:
    return [r for r in ledger.records if all(getattr(r, k) == v for k, v in where.items())]


def one(ledger: MemoryLedger, **where: object) -> LedgerRecord:
    found = rows(ledger, **where)
    assert len(found) == 1, (where, found)
    return found[0]


def balance(engine: AcquirerEngine, pan: str = PAN) -> int:
    return engine.accounts[pan].balance_minor


def totals(engine: AcquirerEngine, batch: str = "000001") -> Totals:
    return engine.batch_view(TID, batch).totals


# -- sales and voids ---------------------------------------------------------------------------

def test_sale_is_booked(term: Term, ledger: MemoryLedger) -> None:
    resp = term.sale(1234)
    assert resp["39"] == "00"
    sale = one(ledger, mti="0200", proc_code="000000")
    assert (sale.kind, sale.status, sale.original_id, sale.rule_id) == ("sale", "booked", None,
                                                                        None)
    assert totals(term.engine) == Totals(1, 1234, 0, 0)


def test_sale_then_void_nets(term: Term, engine: AcquirerEngine, ledger: MemoryLedger) -> None:
    sale = term.sale(1000)
    assert balance(engine) == BALANCE - 1000
    resp = term.void(ostan=term.stan, amount=1000)
    assert resp["t"] == "0210" and resp["39"] == "00" and resp["37"] != sale["37"]
    assert len(resp["38"]) == 6 and "64" in resp
    booked_sale = one(ledger, proc_code="000000", mti="0200")
    void = one(ledger, kind="void")
    assert booked_sale.status == Status.VOIDED
    assert (void.status, void.response_code, void.amount_minor) == (Status.BOOKED, "00", 1000)
    assert (void.original_id, void.original_stan, void.original_batch, void.original_rrn) == (
        booked_sale.id, booked_sale.stan, "000001", sale["37"])
    assert void.pan_masked == "621483******0017" and void.pan_hash == booked_sale.pan_hash
    assert balance(engine) == BALANCE
    assert totals(engine) == Totals()


def test_void_twice_is_refused_with_12(term: Term, engine: AcquirerEngine,
                                       ledger: MemoryLedger) -> None:
    term.sale(1000)
    sale_stan = term.stan
    assert term.void(ostan=sale_stan)["39"] == "00"
    again = term.void(ostan=sale_stan)
    assert again["39"] == "12" and "38" not in again and "64" in again
    assert balance(engine) == BALANCE
    assert [r.status for r in rows(ledger, kind="void")] == [Status.BOOKED, None]


def test_void_amount_differing_from_the_original_is_64(term: Term, engine: AcquirerEngine,
                                                       ledger: MemoryLedger) -> None:
    term.sale(1000)
    assert term.void(ostan=term.stan, amount=999)["39"] == "64"
    assert one(ledger, kind="sale").status == Status.BOOKED
    assert balance(engine) == BALANCE - 1000


def test_void_of_an_unknown_sale_is_25(term: Term) -> None:
    assert term.void(ostan=77)["39"] == "25"


def test_void_after_the_batch_was_settled_is_12(term: Term, engine: AcquirerEngine) -> None:
    term.sale(1000)
    sale_stan = term.stan
    settled = term.settle(Totals(1, 1000, 0, 0))
    assert settled["48"].endswith("1")
    assert engine.sessions[TID].batch_no == "000002"  # the batch closed, as the terminal's
    term.batch = 2
    assert term.void(ostan=sale_stan, obatch=1)["39"] == "12"  # named with its batch
    assert term.void(ostan=sale_stan)["39"] == "12"  # named by trace in the open batch
    assert balance(engine) == BALANCE - 1000


def test_void_outside_the_open_batch_is_77(term: Term) -> None:
    term.sale(1000)
    sale_stan = term.stan
    term.batch = 5
    assert term.void(ostan=sale_stan, obatch=1)["39"] == "77"


def test_void_of_a_void_is_12(term: Term) -> None:
    term.sale(1000)
    term.void(ostan=term.stan)
    assert term.void(ostan=term.stan, amount=1000)["39"] == "12"


def test_void_of_a_declined_sale_is_25(term: Term) -> None:
    assert term.sale(501, pan=PAN_LOW)["39"] == "51"
    assert term.void(ostan=term.stan, amount=501)["39"] == "25"


# -- refunds -----------------------------------------------------------------------------------

def test_refund_partial_then_full_then_nothing_left(term: Term, engine: AcquirerEngine,
                                                    ledger: MemoryLedger) -> None:
    sale = term.sale(1000)
    sale_stan = term.stan
    first = term.refund(300, orrn=sale["37"], odate=MMDD)
    assert first["t"] == "0230" and first["39"] == "00" and "64" in first
    assert balance(engine) == BALANCE - 700
    assert term.refund(800, orrn=sale["37"], odate=MMDD)["39"] == "61"  # 700 left
    assert term.refund(700, ostan=sale_stan)["39"] == "00"  # by trace: the rest
    assert term.refund(1, orrn=sale["37"], odate=MMDD)["39"] == "61"  # nothing left
    assert balance(engine) == BALANCE
    refunds = rows(ledger, kind="refund")
    assert [(r.response_code, r.status, r.amount_minor) for r in refunds] == [
        ("00", "booked", 300), ("61", None, 800), ("00", "booked", 700), ("61", None, 1)]
    sale_row = one(ledger, kind="sale")
    assert all(r.original_id == sale_row.id and r.original_rrn == sale["37"]
               and r.original_stan == sale_row.stan for r in refunds)
    assert sale_row.status == Status.BOOKED  # a refunded sale stays a debit
    assert totals(engine) == Totals(1, 1000, 2, 1000)


def test_full_refund_at_once_then_second_refused(term: Term) -> None:
    sale = term.sale(2500)
    assert term.refund(2500, orrn=sale["37"], odate=MMDD)["39"] == "00"
    assert term.refund(2500, orrn=sale["37"], odate=MMDD)["39"] == "61"


def test_refund_above_the_original_is_61(term: Term, engine: AcquirerEngine) -> None:
    sale = term.sale(1000)
    assert term.refund(1001, orrn=sale["37"], odate=MMDD)["39"] == "61"
    assert balance(engine) == BALANCE - 1000


def test_refund_of_an_unknown_original_is_25(term: Term) -> None:
    sale = term.sale(1000)
    assert term.refund(100, orrn="999999999999", odate=MMDD)["39"] == "25"
    assert term.refund(100, orrn=sale["37"], odate="0101")["39"] == "25"  # another day
    assert term.refund(100, ostan=99)["39"] == "25"


def test_refund_of_a_voided_sale_is_12(term: Term) -> None:
    sale = term.sale(1000)
    term.void(ostan=term.stan)
    assert term.refund(100, orrn=sale["37"], odate=MMDD)["39"] == "12"


def test_refund_of_a_refund_is_12(term: Term) -> None:
    sale = term.sale(1000)
    refund = term.refund(100, orrn=sale["37"], odate=MMDD)
    assert term.refund(50, orrn=refund["37"], odate=MMDD)["39"] == "12"


def test_refund_after_settlement_is_allowed_in_the_next_batch(term: Term,
                                                              engine: AcquirerEngine) -> None:
    sale = term.sale(1000)
    assert term.settle(Totals(1, 1000, 0, 0))["48"].endswith("1")
    term.batch = 2
    assert term.refund(400, orrn=sale["37"], odate=MMDD)["39"] == "00"
    assert totals(engine, "000002") == Totals(0, 0, 1, 400)
    assert totals(engine, "000001") == Totals(1, 1000, 0, 0)


# -- reversals ---------------------------------------------------------------------------------

def test_reversal_of_a_booked_sale_nets_it(term: Term, engine: AcquirerEngine,
                                           ledger: MemoryLedger) -> None:
    sale = term.sale(1000)
    resp = term.reverse(term.stan, reason="98")
    assert resp["t"] == "0410" and resp["39"] == "00" and "64" in resp
    assert resp["37"] == sale["37"]
    sale_row = one(ledger, kind="sale")
    rev = one(ledger, kind=KIND_REVERSAL)
    assert sale_row.status == Status.REVERSED
    assert (rev.status, rev.original_id, rev.reason_code, rev.original_stan) == (
        Status.NETTED, sale_row.id, "98", sale_row.stan)
    assert rev.pan_masked == "621483******0017"
    assert balance(engine) == BALANCE
    assert totals(engine) == Totals()
    again = term.reverse(term.stan)  # the 0410 was lost: the terminal sends it again
    assert again["39"] == "00"
    assert rows(ledger, kind=KIND_REVERSAL)[-1].status == Status.NOTHING_TO_NET
    assert balance(engine) == BALANCE


def test_reversal_of_an_unknown_transaction_answers_00_and_books_nothing(
        term: Term, engine: AcquirerEngine, ledger: MemoryLedger) -> None:
    never = sale_doc(term.pik, stan=42, amount=1000)
    before = list(ledger.records)
    resp = term.send(reversal_doc(never, reason="98"))
    assert resp["t"] == "0410" and resp["39"] == "00"
    assert ledger.records[:len(before)] == before
    rev = ledger.records[-1]
    assert (rev.kind, rev.status, rev.original_id, rev.stan) == (
        KIND_REVERSAL, Status.NOTHING_TO_NET, None, "000042")
    assert balance(engine) == BALANCE and totals(engine) == Totals()


def test_reversal_of_a_declined_sale_nets_nothing(term: Term, ledger: MemoryLedger) -> None:
    assert term.sale(501, pan=PAN_LOW)["39"] == "51"
    assert term.reverse(term.stan, reason="06")["39"] == "00"
    assert one(ledger, kind=KIND_REVERSAL).status == Status.NOTHING_TO_NET


def test_reversal_of_a_void_books_the_sale_again(term: Term, engine: AcquirerEngine,
                                                 ledger: MemoryLedger) -> None:
    term.sale(1000)
    term.void(ostan=term.stan)
    assert term.reverse(term.stan)["39"] == "00"
    assert one(ledger, kind="void").status == Status.REVERSED
    assert one(ledger, kind="sale").status == Status.BOOKED
    assert balance(engine) == BALANCE - 1000
    assert totals(engine) == Totals(1, 1000, 0, 0)


def test_reversal_of_a_refund_gives_back_what_is_left(term: Term,
                                                      engine: AcquirerEngine) -> None:
    sale = term.sale(1000)
    term.refund(1000, orrn=sale["37"], odate=MMDD)
    assert term.reverse(term.stan)["39"] == "00"
    assert balance(engine) == BALANCE - 1000
    assert term.refund(1000, orrn=sale["37"], odate=MMDD)["39"] == "00"


def test_reversal_needs_the_terminal_signed_in_and_a_mac(term: Term,
                                                         engine: AcquirerEngine) -> None:
    term.sale(1000)
    doc = reversal_doc(term.sent[term.stan])
    assert engine.handle(Tpdu(), Header(), doc, NOW)["39"] == "A0"  # no MAC
    assert balance(engine) == BALANCE - 1000


# -- settlement and batch upload ---------------------------------------------------------------

def test_settlement_balanced(term: Term, engine: AcquirerEngine, ledger: MemoryLedger) -> None:
    sale = term.sale(1000)
    term.sale(2500)
    term.refund(300, orrn=sale["37"], odate=MMDD)
    term.sale(700)
    term.void(ostan=term.stan, amount=700)
    resp = term.settle(Totals(2, 3500, 1, 300))
    assert resp["t"] == "0510" and resp["39"] == "00" and "64" in resp
    assert resp["48"] == "002000000003500001000000000300" + "1"
    row = one(ledger, kind=KIND_SETTLEMENT)
    assert (row.status, row.reconciliation, row.field48_request, row.field48_response) == (
        Status.BALANCED, "1", "002000000003500001000000000300" + "0", resp["48"])
    assert engine.batch_view(TID, "000001").settled
    assert engine.sessions[TID].batch_no == "000002"
    assert term.sale(100)["39"] == "77"  # the terminal closed its batch too
    term.batch = 2
    assert term.sale(100)["39"] == "00"


def test_settlement_unbalanced(term: Term, engine: AcquirerEngine,
                               ledger: MemoryLedger) -> None:
    term.sale(1000)
    term.sale(2500)
    resp = term.settle(Totals(1, 1000, 0, 0))
    assert resp["39"] == "00" and resp["48"] == "002000000003500000000000000000" + "2"
    row = one(ledger, kind=KIND_SETTLEMENT)
    assert (row.status, row.reconciliation) == (Status.UNBALANCED, "2")
    assert not engine.batch_view(TID, "000001").settled
    assert engine.sessions[TID].batch_no == "000001"


def test_batch_upload_then_settlement_balanced(term: Term, engine: AcquirerEngine,
                                               ledger: MemoryLedger) -> None:
    a = term.sale(1000)
    a_stan = term.stan
    b = term.sale(2500)
    b_stan = term.stan
    term.reverse(b_stan)  # the host netted B; the terminal never learnt (its journal: approved)
    assert totals(engine) == Totals(1, 1000, 0, 0)
    theirs = Totals(2, 3500, 0, 0)
    assert term.settle(theirs)["48"].endswith("2")
    assert term.upload(a_stan, 1000, rrn=a["37"])["39"] == "00"
    assert term.upload(b_stan, 2500, rrn=b["37"])["39"] == "00"
    assert engine.batch_view(TID, "000001").source == "booked"
    end = term.upload_end(2)
    assert end["t"] == "0330" and end["39"] == "00" and "64" in end
    view = engine.batch_view(TID, "000001")
    assert (view.source, view.totals) == ("uploaded", theirs)
    assert term.settle(theirs)["48"] == theirs.field48("1")
    assert engine.sessions[TID].batch_no == "000002"
    uploads = rows(ledger, kind="upload")
    assert [(u.stan, u.rrn, u.status, u.pan_masked) for u in uploads] == [
        (f"{a_stan:06d}", a["37"], "uploaded", "621483******0017"),
        (f"{b_stan:06d}", b["37"], "uploaded", "621483******0017")]
    assert one(ledger, kind="upload_end").field48_request == "0002"


def test_upload_of_a_void_nets_the_uploaded_sale(term: Term, engine: AcquirerEngine) -> None:
    term.sale(1000)
    sale_stan = term.stan
    term.sale(400)
    other = term.stan
    term.void(ostan=sale_stan)
    void_stan = term.stan
    term.upload(sale_stan, 1000)
    term.upload(other, 400)
    term.upload(void_stan, 1000, proc="200000")  # the host knows this STAN as the void
    term.upload_end(3)
    assert totals(engine) == Totals(1, 400, 0, 0)


def test_disagree_next_forces_2_once(term: Term, engine: AcquirerEngine,
                                     ledger: MemoryLedger) -> None:
    term.sale(1000)
    assert engine.disagree_next(TID) == 1
    first = term.settle(Totals(1, 1000, 0, 0))
    assert first["48"] == Totals(1, 1000, 0, 0).field48("2")
    assert one(ledger, kind=KIND_SETTLEMENT).status == Status.FORCED
    assert engine.sessions[TID].batch_no == "000001"
    assert term.settle(Totals(1, 1000, 0, 0))["48"].endswith("1")


def test_disagree_next_of_an_unknown_terminal_is_refused(engine: AcquirerEngine) -> None:
    with pytest.raises(ConfigError, match="terminal '99999999' is not registered; known: "
                                          "10000001"):
        engine.disagree_next("99999999")
    assert engine.clear_disagreements() == []
    engine.disagree_next(TID)
    assert engine.clear_disagreements() == [TID]


@pytest.mark.parametrize("field48, code", [("0010000", "30"), ("x" * 31, "30")])
def test_settlement_with_bad_totals_is_30(term: Term, field48: str, code: str) -> None:
    doc = settlement_doc(Totals(), stan=term.next_stan())
    doc["48"] = field48
    assert term.send(doc)["39"] == code


def test_settlement_of_another_batch_is_77(term: Term) -> None:
    term.batch = 3
    assert term.settle(Totals())["39"] == "77"


def test_upload_with_a_bad_net_code_is_30(term: Term) -> None:
    doc = upload_end_doc(stan=term.next_stan(), count=1)
    doc["60"] = "00000001209"
    assert term.send(doc)["39"] == "30"


def test_messages_of_a_terminal_not_signed_in_are_22(engine: AcquirerEngine) -> None:
    doc = void_doc(stan=5, amount=100, ostan=2)
    raw = encode_with_mac(doc, bytes(16))
    resp = engine.handle(Tpdu(), Header(), decode_message(raw), NOW, mac_data=raw)
    assert resp["39"] == "22" and "64" not in resp

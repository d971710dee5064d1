"""The host's view of a batch (protocols.ledger.batch_view), a pure function over ledger records,
and field 48 of 0500/0510."""

from __future__ import annotations

from typing import Any

import pytest

from protocols.errors import DecodeError
from protocols.ledger import LedgerRecord, Status, Totals, batch_totals, batch_view, refunded_amount

from .conftest import MID, TID

_ids = iter(range(1, 10_000))


def rec(kind: str, stan: int, amount: int = 0, *, status: str | None = Status.BOOKED,
        rc: str = "00", batch: str = "000001", tid: str = TID, **over: Any) -> LedgerRecord:
    mti, proc = {"sale": ("0200", "000000"), "void": ("0200", "200000"),
                 "refund": ("0220", "200000"), "upload": ("0320", over.pop("proc", "000000")),
                 "upload_end": ("0320", None), "settlement": ("0500", None),
                 "reversal": ("0400", "000000")}[kind]
    base: dict[str, Any] = dict(
        received_at="2026-03-14T15:09:26.000", received_ts=1773500966.0, mti=mti,
        response_mti=mti[:2] + str(int(mti[2]) + 1) + mti[3], proc_code=proc, terminal_id=tid,
        merchant_id=MID, stan=f"{stan:06d}", batch_no=batch, rrn=f"26073{stan:07d}",
        auth_code=None, amount_minor=amount or None, currency="156", pan_masked=None,
        pan_hash=None, entry_mode=None, response_code=rc, kind=kind, status=status,
        id=next(_ids))
    base.update(over)
    return LedgerRecord(**base)


def test_booked_sales_are_debits_refunds_credits_voids_and_reversed_neither() -> None:
    records = [
        rec("sale", 2, 1000),
        rec("sale", 3, 2500, status=Status.VOIDED),
        rec("void", 4, 2500, original_stan="000003"),
        rec("sale", 5, 700, status=Status.REVERSED),
        rec("reversal", 5, 700, status=Status.NETTED),
        rec("refund", 6, 300),
        rec("refund", 7, 100, status=Status.REVERSED),
        rec("sale", 8, 999, status=None, rc="51"),
        rec("sale", 9, 50, tid="10000002"),  # another terminal
        rec("sale", 10, 60, batch="000002"),  # another batch
    ]
    view = batch_view(records, TID, "000001")
    assert (view.totals, view.source, view.settled) == (Totals(1, 1000, 1, 300), "booked", False)
    assert batch_totals(records, TID, "000002") == Totals(1, 60, 0, 0)
    assert batch_totals(records, "10000002", "000001") == Totals(1, 50, 0, 0)
    assert batch_totals([], TID, "000001") == Totals()


def test_settled_only_by_a_settlement_answered_1() -> None:
    unbalanced = rec("settlement", 11, reconciliation="2", status=Status.UNBALANCED)
    balanced = rec("settlement", 12, reconciliation="1", status=Status.BALANCED)
    refused = rec("settlement", 13, reconciliation=None, status=None, rc="A0")
    assert not batch_view([unbalanced, refused], TID, "000001").settled
    assert batch_view([unbalanced, balanced], TID, "000001").settled
    assert not batch_view([balanced], TID, "000002").settled


def test_an_ended_upload_replaces_what_was_booked() -> None:
    records = [
        rec("sale", 2, 1000),
        rec("sale", 3, 2500, status=Status.REVERSED),
        rec("upload", 2, 1000, status=Status.UPLOADED),
        rec("upload", 3, 2500, status=Status.UPLOADED),
    ]
    assert batch_view(records, TID, "000001").source == "booked"  # not ended yet
    assert batch_totals(records, TID, "000001") == Totals(1, 1000, 0, 0)
    records.append(rec("upload_end", 20, status=Status.ADOPTED, field48_request="0002"))
    view = batch_view(records, TID, "000001")
    assert (view.source, view.totals) == ("uploaded", Totals(2, 3500, 0, 0))


def test_uploaded_detail_by_proc_code_a_void_cancels_its_sale_a_stan_counts_once() -> None:
    records = [
        rec("sale", 2, 1000, status=Status.VOIDED),
        rec("void", 3, 1000, original_stan="000002"),
        rec("refund", 4, 200),
        rec("upload", 2, 1000, status=Status.UPLOADED),
        rec("upload", 3, 1000, proc="200000", status=Status.UPLOADED),  # the host's void
        rec("upload", 4, 200, proc="200000", status=Status.UPLOADED),   # a refund
        rec("upload", 5, 300, status=Status.UPLOADED),
        rec("upload", 5, 300, status=Status.UPLOADED),  # sent twice (a lost 0330)
        rec("upload", 6, 400, status=None, rc="A0"),     # refused: not part of it
        rec("upload_end", 21, status=Status.ADOPTED),
    ]
    assert batch_totals(records, TID, "000001") == Totals(1, 300, 1, 200)


def test_a_second_upload_replaces_the_first_and_later_bookings_add() -> None:
    records = [
        rec("upload", 2, 1000, status=Status.UPLOADED),
        rec("upload_end", 20, status=Status.ADOPTED),
        rec("upload", 2, 1000, status=Status.UPLOADED),
        rec("upload", 3, 500, status=Status.UPLOADED),
        rec("upload_end", 21, status=Status.ADOPTED),
        rec("sale", 30, 70),
        rec("void", 31, 500, original_stan="000003"),  # voids an uploaded sale
        rec("refund", 32, 20),
    ]
    assert batch_totals(records, TID, "000001") == Totals(2, 1070, 1, 20)


def test_refunded_amount_counts_booked_refunds_only() -> None:
    referring = [rec("refund", 4, 300), rec("refund", 5, 800, status=None, rc="61"),
                 rec("refund", 6, 100, status=Status.REVERSED), rec("reversal", 7, 100)]
    assert refunded_amount(referring) == 300


def test_field48_round_trip_and_errors() -> None:
    t = Totals(2, 3500, 1, 300)
    text = t.field48("1")
    assert text == "002000000003500001000000000300" + "1" and len(text) == 31
    assert t.field48() == text[:-1] + "0"
    assert Totals.from_field48(text) == (t, "1")
    with pytest.raises(DecodeError, match=r"field 48 settlement totals '0021': expected 31 "
                                          r"digits"):
        Totals.from_field48("0021")
    with pytest.raises(DecodeError, match="debit_count must be 0..999, got 1000"):
        Totals(1000, 0, 0, 0).field48()
    with pytest.raises(DecodeError, match="reconciliation code must be 1 digit"):
        t.field48("12")
    assert Totals(1, 2, 3, 4) + Totals(10, 20, 30, 40) == Totals(11, 22, 33, 44)

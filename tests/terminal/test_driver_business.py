"""SerialTerminalLink's business-day requests against ScriptedTransport: the exact bytes of each
request, the typed records its answer becomes, and DecodeErrors naming a malformed field."""

from __future__ import annotations

import datetime

import pytest

from protocols.transactions import OriginalRef, TxnType
from rigs.errors import ConfigError, DecodeError
from rigs.terminal import SerialTerminalLink, Settlement, Totals
from tests.terminal.test_driver_scripted import ST_RESP, ack, frame, make, opened, settle

__all__ = ["opened"]  # the fixture, used by name below


def exchange(code: str, request: dict[str, str], answer: dict[str, str], *, seq: int = 0,
             events: bytes = b"") -> list[tuple[str, bytes]]:
    """The rig sends *request* (SEQ *seq*), the terminal ACKs it, maybe sends *events*, then
    answers; the rig ACKs every terminal frame."""
    script: list[tuple[str, bytes]] = [("tx", frame(seq, code, **request))]
    n = 0
    if events:
        script += [("rx", ack(seq) + events)]
        count = events.count(b"\x02\x00")  # a test's events are short frames
        script += [("tx", b"".join(ack(i) for i in range(count)))]
        n = count
        script += [("rx", frame(n, code, **answer)), ("tx", ack(n))]
    else:
        script += [("rx", ack(seq) + frame(0, code, **answer)), ("tx", ack(0))]
    return script


def opened_link(opened: list[SerialTerminalLink], script: list[tuple[str, bytes]]
                ) -> tuple[SerialTerminalLink, object]:
    link, t = make(script)
    opened.append(link)
    link.open()
    return link, t


def test_void_without_amount_sends_only_the_original(opened: list[SerialTerminalLink]) -> None:
    vd = frame(0, "VD", ostan="000002")
    # STX, LEN 15, SEQ 00, "VD" FS "ostan=000002", ETX, LRC: no amt, cur or entry
    assert vd == bytes.fromhex("02 000f 00 5644 1c 6f7374616e3d303030303032 03 5a")
    final = frame(0, "VD", rc="APPROVED", hrc="00", amt="2500", stan="000003",
                  pan="621234******1234")
    link, t = opened_link(opened, [("tx", vd), ("rx", ack(0) + final), ("tx", ack(0))])
    link.start_transaction(TxnType.VOID, None, original=OriginalRef.by_trace("000002"))
    out = link.wait_outcome(timeout=2.0)
    assert (out.result, out.amount_minor, out.stan) == ("APPROVED", 2500, "000003")
    settle(t)  # type: ignore[arg-type]


def test_void_with_amount_and_refund_exact_bytes(opened: list[SerialTerminalLink]) -> None:
    vd = frame(0, "VD", amt="2500", ostan="000002", obatch="000001")
    rf = frame(1, "RF", amt="4000", cur="156", entry="chip", orrn="000000001234", odate="0504")
    link, t = opened_link(opened, [
        ("tx", vd), ("rx", ack(0) + frame(0, "VD", rc="APPROVED")), ("tx", ack(0)),
        ("tx", rf), ("rx", ack(1) + frame(1, "RF", rc="DECLINED", hrc="61")), ("tx", ack(1))])
    link.start_transaction(TxnType.VOID, 2500, original=OriginalRef.by_trace(2, 1))
    assert link.wait_outcome(timeout=2.0).ok
    link.start_transaction(TxnType.REFUND, 4000,
                           original=OriginalRef.by_rrn("000000001234", "0504"))
    out = link.wait_outcome(timeout=2.0)
    assert (out.result, out.response_code) == ("DECLINED", "61")
    settle(t)  # type: ignore[arg-type]


def test_amount_none_is_refused_for_types_that_need_one(opened: list[SerialTerminalLink]
                                                       ) -> None:
    link, t = opened_link(opened, [])
    for txn in (TxnType.SALE, TxnType.REFUND):
        with pytest.raises(ConfigError, match=rf"start_transaction\({txn}\) .* needs an amount"):
            link.start_transaction(txn, None, original=OriginalRef.by_trace(1)
                                   if txn is TxnType.REFUND else None)


def test_reprint_waits_for_the_copies(opened: list[SerialTerminalLink]) -> None:
    events = (frame(0, "PG", code="PRINTING") + frame(1, "PR", copy="merchant",
                                                      text="*** 重打印 REPRINT ***"))
    script = [("tx", frame(0, "RP")), ("rx", ack(0) + events), ("tx", ack(0) + ack(1)),
              ("rx", frame(2, "RP", rc="OK", stan="000002", print="OK")), ("tx", ack(2))]
    link, t = opened_link(opened, script)
    out = link.reprint(timeout=2.0)
    assert (out.result, out.ok, out.stan, out.fields["print"]) == ("OK", True, "000002", "OK")
    assert link.receipts == ["*** 重打印 REPRINT ***"]
    settle(t)  # type: ignore[arg-type]


def test_query_exact_bytes_and_fields(opened: list[SerialTerminalLink]) -> None:
    answer = dict(rc="OK", type="sale", amt="700", status="approved", rrn="000000001234",
                  auth="123456", pan="621234******1234", time="20260504131415",
                  batch="000002", stan="000007")
    link, t = opened_link(opened, exchange("QY", {"stan": "000007", "batch": "000002"}, answer))
    out = link.query("7", batch=2)
    assert out.ok and out.fields["status"] == "approved" and out.masked_pan == "621234******1234"
    assert (out.stan, out.rrn, out.amount_minor) == ("000007", "000000001234", 700)
    settle(t)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"query\(\) stan must be up to 6 digits, got 'x'"):
        link.query("x")


def test_totals_become_a_typed_record(opened: list[SerialTerminalLink]) -> None:
    answer = dict(rc="OK", batch="000002", sale_n="2", sale_amt="3000", void_n="1",
                  void_amt="900", refund_n="0", refund_amt="0", chip_n="2", chip_amt="3000",
                  manual_n="1", manual_amt="900",
                  anomalies="declines:621234******1234,limit:000005")
    link, t = opened_link(opened, exchange("TT", {}, answer))
    totals = link.totals()
    assert totals == Totals(batch="000002",
                            by_type={"sale": (2, 3000), "void": (1, 900), "refund": (0, 0)},
                            by_entry={"chip": (2, 3000), "manual": (1, 900)},
                            anomalies=("declines:621234******1234", "limit:000005"),
                            result="OK", ok=True, display="")
    assert totals.by_type.get(TxnType.SALE) == (2, 3000)
    settle(t)  # type: ignore[arg-type]


def test_totals_with_a_malformed_count_name_the_field(opened: list[SerialTerminalLink]) -> None:
    link, t = opened_link(opened, exchange("TT", {}, dict(rc="OK", sale_n="two",
                                                          sale_amt="0")))
    with pytest.raises(DecodeError, match=r"ECR message TT: field sale_n must be digits, "
                                          r"got 'two'"):
        link.totals()
    settle(t)  # type: ignore[arg-type]


def test_settle_becomes_a_settlement(opened: list[SerialTerminalLink]) -> None:
    answer = dict(rc="OK", hrc="00", balanced="1", uploaded="2", batch="000002",
                  next_batch="000003", text="结算成功 SETTLED")
    link, t = opened_link(opened, exchange("SE", {}, answer))
    assert link.settle(timeout=2.0) == Settlement(
        result="OK", ok=True, balanced=True, uploaded=2, batch="000002", next_batch="000003",
        display="结算成功 SETTLED", response_code="00")
    settle(t)  # type: ignore[arg-type]


def test_refused_settlement_and_a_malformed_balanced(opened: list[SerialTerminalLink]) -> None:
    script = exchange("SE", {}, dict(rc="NOT_AUTHORISED", text="无权限"))
    script += [("tx", frame(1, "SE")), ("rx", ack(1) + frame(1, "SE", rc="OK", balanced="yes")),
               ("tx", ack(1))]
    link, t = opened_link(opened, script)
    refused = link.settle(timeout=2.0)
    assert (refused.result, refused.ok, refused.balanced, refused.uploaded) == (
        "NOT_AUTHORISED", False, False, 0)
    with pytest.raises(DecodeError, match=r"field balanced must be 1 or 0, got 'yes'"):
        link.settle(timeout=2.0)
    settle(t)  # type: ignore[arg-type]


def test_unlock_parameter_shutdown_exact_bytes(opened: list[SerialTerminalLink]) -> None:
    script = [("tx", frame(0, "UL", op="01")), ("rx", ack(0) + frame(0, "UL", rc="OK")),
              ("tx", ack(0)),
              ("tx", frame(1, "PM", name="daily_limit", value="8001")),
              ("rx", ack(1) + frame(1, "PM", rc="OK", value="8001")), ("tx", ack(1)),
              ("tx", frame(2, "SD")),
              ("rx", ack(2) + frame(2, "SD", rc="UNSETTLED_BATCH", text="批次未结算")),
              ("tx", ack(2))]
    link, t = opened_link(opened, script)
    assert link.unlock("01").ok
    assert link.set_parameter("daily_limit", "8001").fields["value"] == "8001"
    sd = link.shutdown()
    assert (sd.result, sd.ok, sd.display) == ("UNSETTLED_BATCH", False, "批次未结算")
    with pytest.raises(ConfigError, match=r"set_parameter\(\) name must be one of clock, "
                                          r"txn_limit, daily_limit, refund_limit, got 'colour'"):
        link.set_parameter("colour", "red")
    settle(t)  # type: ignore[arg-type]


def test_status_business_day_fields(opened: list[SerialTerminalLink]) -> None:
    resp = dict(ST_RESP, clock="20260504131415", reversal="1", journal="3",
                txn_limit="5000000", daily_limit="8001", refund_limit="100000", day_sales="3000")
    link, t = opened_link(opened, exchange("ST", {}, resp))
    st = link.status()
    assert (st.clock, st.reversal_pending, st.journal_entries, st.txn_limit, st.daily_limit,
            st.refund_limit, st.day_sales) == (
        datetime.datetime(2026, 5, 4, 13, 14, 15), True, 3, 5_000_000, 8001, 100_000, 3000)
    settle(t)  # type: ignore[arg-type]


def test_status_of_an_older_terminal_and_a_bad_clock(opened: list[SerialTerminalLink]) -> None:
    script = exchange("ST", {}, ST_RESP)
    script += [("tx", frame(1, "ST")),
               ("rx", ack(1) + frame(1, "ST", **dict(ST_RESP, clock="2026-05-04"))),
               ("tx", ack(1))]
    link, t = opened_link(opened, script)
    st = link.status()
    assert (st.clock, st.reversal_pending, st.journal_entries, st.txn_limit) == (
        None, False, 0, None)
    with pytest.raises(DecodeError, match=r"ECR message ST: field clock must be "
                                          r"YYYYMMDDhhmmss, got '2026-05-04'"):
        link.status()
    settle(t)  # type: ignore[arg-type]

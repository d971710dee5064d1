"""A merchant's business day against the pure firmware (docs/business-day.md): void, refund,
operators and roles, limits, the clock, the journal's order of writes, reversals, power cuts,
reprint, query, totals, settlement with batch upload, shutdown.  Fake services, a fake clock,
the memory journal."""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

import pytest

from protocols.ecr import Key, MsgCode
from protocols.transactions import REFUND, SALE, VOID, OriginalRef, SettlementTotals
from sim.terminal.firmware import (
    AuthJob,
    ChipJob,
    JobResult,
    ReversalJob,
    SettleJob,
    SignInJob,
    State,
    UploadEndJob,
    UploadJob,
)
from sim.terminal.journal import CardData, EntryState
from sim.terminal.printer import HELD_MARK, REPRINT_MARK
from tests.terminal.fakes import (
    MASKED,
    NOW,
    PAN,
    Day,
    FakeAuthResult,
    FakeCard,
    FakeClock,
    FakeHostAnswer,
    FakeSettlementResult,
    codes,
    ecr_out,
    final,
    jobs,
)

PU, VD, RF = SALE.ecr_code, VOID.ecr_code, REFUND.ecr_code
OTHER_PAN = "6212340000005678"


# ------------------------------------------------------------------------------------ void

def test_void_takes_the_amount_and_card_from_the_journal(day: Day) -> None:
    sale = final(day.sale(2500), PU)
    assert sale.get("rc") == "APPROVED" and sale.get("stan") == "000002"
    out = day.req(VD, ostan="000002")
    assert codes(out) == ["PG:PROCESSING", "PG:CONNECTING"]  # no card, no PIN
    (auth,) = jobs(out)
    assert isinstance(auth, AuthJob) and auth.card is None and auth.pin is None
    assert auth.amount_minor == 2500
    assert auth.original == OriginalRef(rrn=sale.get("rrn"), date="0504", stan="000002",
                                        batch_no="000002")
    out = day.online(out)
    assert codes(out)[-3:] == ["PR:merchant", "PR:customer", "VD:APPROVED"]
    receipt = ecr_out(out)[-3].get("text")
    assert "消费撤销 VOID" in receipt and MASKED in receipt and "TRACE 000002" in receipt
    void = final(out, VD)
    assert (void.get("amt"), void.get("pan"), void.get("stan")) == ("2500", MASKED, "000003")
    (q,) = ecr_out(day.req(MsgCode.QUERY, stan="000002"))
    assert q.get("status") == "voided"
    (tt,) = ecr_out(day.req(MsgCode.TOTALS))
    assert (tt.get("sale_n"), tt.get("sale_amt"), tt.get("void_n"), tt.get("void_amt")) == (
        "0", "0", "1", "2500")
    assert (tt.get("chip_n"), tt.get("manual_n"), tt.get("manual_amt")) == ("0", "1", "2500")


@pytest.mark.parametrize("fields, rc, text", [
    ({"ostan": "000002", "amt": "2400"}, "BAD_REQUEST", "VOID amount 2400 differs from the "
                                                        "original's 2500"),
    ({"ostan": "000099"}, "NOT_FOUND", "no original TRACE 000099 in batch 000002"),
    ({"ostan": "000002", "obatch": "000001"}, "NOT_FOUND", "no original"),
])
def test_void_refusals(day: Day, fields: dict[str, str], rc: str, text: str) -> None:
    day.sale(2500)
    (msg,) = ecr_out(day.req(VD, **fields))
    assert (msg.get("rc"), day.fw.state) == (rc, State.IDLE)
    assert text in msg.get("text")


def test_void_twice_and_void_after_settlement_are_refused(day: Day) -> None:
    day.sale(2500)
    day.online(day.req(VD, ostan="000002"))
    (msg,) = ecr_out(day.req(VD, ostan="000002"))
    assert msg.get("rc") == "NOT_FOUND" and "it is voided" in msg.get("text")
    day.sale(1500)
    day.admin()
    assert final(day.done(day.req(MsgCode.SETTLE), FakeSettlementResult(
        host_totals=SettlementTotals(1, 1500, 0, 0, "1"))), MsgCode.SETTLE).get("rc") == "OK"
    (msg,) = ecr_out(day.req(VD, ostan="000004", obatch="000002"))
    assert msg.get("rc") == "NOT_FOUND" and "batch 000002 is settled" in msg.get("text")


def test_void_of_an_original_the_journal_lacks_goes_online_with_amt(day: Day) -> None:
    out = day.req(VD, ostan="000077", amt="300")
    (auth,) = jobs(out)
    assert auth.amount_minor == 300 and auth.original == OriginalRef.by_trace(77)
    msg = final(day.done(out, FakeAuthResult(response_code="25", approved=False)), VD)
    assert (msg.get("rc"), msg.get("hrc")) == ("DECLINED", "25")


# ------------------------------------------------------------------------------------ refund

def test_refund_names_its_original_fully_and_marks_it_refunded(day: Day) -> None:
    sale = final(day.sale(10000), PU)
    out = day.req(RF, amt="4000", cur="156", orrn=sale.get("rrn"), odate="0504")
    (auth,) = jobs(out)
    assert (auth.amount_minor, auth.card, auth.original) == (4000, None, OriginalRef(
        rrn=sale.get("rrn"), date="0504", stan="000002", batch_no="000002"))
    out = day.online(out)
    assert final(out, RF).get("rc") == "APPROVED" and "退货 REFUND" in ecr_out(out)[-3].get("text")
    (q,) = ecr_out(day.req(MsgCode.QUERY, stan="000002"))
    assert q.get("status") == "refunded"
    (tt,) = ecr_out(day.req(MsgCode.TOTALS))
    assert (tt.get("sale_n"), tt.get("refund_n"), tt.get("refund_amt")) == ("1", "1", "4000")
    refund = day.journal.find(2, 3)
    assert refund is not None and refund.masked_pan == MASKED
    assert day.journal.card_data(refund.id) == CardData(pan=PAN)  # for the batch upload


def test_refund_above_the_refund_limit_needs_an_admin(day: Day) -> None:
    over = str(day.fw.profile.refund_limit + 1)
    (msg,) = ecr_out(day.req(RF, amt=over, cur="156", orrn="000000001234", odate="0504"))
    assert msg.get("rc") == "NOT_AUTHORISED" and "needs an admin" in msg.get("text")
    day.admin()
    (auth,) = jobs(day.req(RF, amt=over, cur="156", orrn="000000001234", odate="0504"))
    assert isinstance(auth, AuthJob) and auth.amount_minor == int(over)


# ------------------------------------------------------------------------------- operators

def test_three_wrong_passwords_lock_until_an_admin_unlocks() -> None:
    d = Day()
    d.boot()
    results = [d.login("01", "9999") for _ in range(3)]
    assert [m.get("rc") for m in results] == ["LOGIN_FAILED"] * 3
    assert "now locked" in results[2].get("text")
    locked = d.login("01", "0000")
    assert locked.get("rc") == "LOCKED" and "an admin must unlock" in locked.get("text")
    # the lock survives a power cycle (NVRAM)
    d2 = Day(nvram=d.nvram, journal=d.journal)
    d2.boot()
    assert d2.login("01", "0000").get("rc") == "LOCKED"
    assert d2.login("01", "9999").get("rc") == "LOCKED"
    (msg,) = ecr_out(d2.req(MsgCode.UNLOCK, op="01"))
    assert msg.get("rc") == "NOT_LOGGED_IN"
    d2.admin()
    (msg,) = ecr_out(d2.req(MsgCode.UNLOCK, op="07"))
    assert msg.get("rc") == "NOT_FOUND"
    (msg,) = ecr_out(d2.req(MsgCode.UNLOCK, op="01"))
    assert msg.get("rc") == "OK" and "unlocked" in msg.get("text")
    assert d2.login("01", "0000").get("rc") == "OK"
    (msg,) = ecr_out(d2.req(MsgCode.UNLOCK, op="00"))
    assert msg.get("rc") == "NOT_AUTHORISED"


def test_a_right_password_resets_the_count_and_admins_never_lock() -> None:
    d = Day()
    d.boot()
    for _ in range(2):
        d.login("01", "9999")
    assert d.login("01", "0000").get("rc") == "OK"
    assert [d.login("01", "9999").get("rc") for _ in range(2)] == ["LOGIN_FAILED"] * 2
    assert d.login("01", "0000").get("rc") == "OK"
    assert [d.login("00", "x").get("rc") for _ in range(5)] == ["LOGIN_FAILED"] * 5
    assert d.login("00", "123456").get("rc") == "OK"


@pytest.mark.parametrize("code, fields", [
    (MsgCode.SETTLE, {}), (MsgCode.PARAMETER, {"name": "txn_limit", "value": "5"}),
])
def test_only_an_admin_settles_or_sets_parameters(day: Day, code: str,
                                                  fields: dict[str, str]) -> None:
    (msg,) = ecr_out(day.req(code, **fields))
    assert msg.get("rc") == "NOT_AUTHORISED" and "needs an admin" in msg.get("text")
    assert jobs(day.req(MsgCode.STATUS)) == [] and day.fw.limit("txn_limit") != 5


# ------------------------------------------------------------------------------------ limits

def test_sale_above_the_transaction_limit_is_refused_offline(day: Day) -> None:
    limit = day.fw.profile.txn_limit
    out = day.req(PU, amt=str(limit + 1), cur="156")
    (msg,) = ecr_out(out)
    assert jobs(out) == [] and msg.get("rc") == "LIMIT_EXCEEDED"
    assert f"{limit // 100}.{limit % 100:02d}" in msg.get("text") and msg.get("stan") == "000002"
    assert day.journal.find(2, 2).state is EntryState.REFUSED  # type: ignore[union-attr]
    (tt,) = ecr_out(day.req(MsgCode.TOTALS))
    assert tt.get("anomalies") == "limit:000002"


def test_daily_limit_counts_the_day_s_approved_sales(day: Day) -> None:
    day.sale(3000)
    assert day.status().get("day_sales") == "3000"
    day.admin()
    (msg,) = ecr_out(day.req(MsgCode.PARAMETER, name="daily_limit", value="8001"))
    assert (msg.get("rc"), msg.get("value")) == ("OK", "8001")
    assert day.status().get("daily_limit") == "8001"
    assert final(day.sale(5000), PU).get("rc") == "APPROVED"
    out = day.req(PU, amt="2000", cur="156")
    assert jobs(out) == [] and final(out, PU).get("rc") == "DAILY_LIMIT_EXCEEDED"
    assert "80.01" in final(out, PU).get("text")
    # the next day starts at zero
    day.clock.advance(days=1)
    assert day.status().get("day_sales") == "0"
    # empty value: back to the profile's
    (msg,) = ecr_out(day.req(MsgCode.PARAMETER, name="daily_limit", value=""))
    assert msg.get("value") == str(day.fw.profile.daily_limit)
    for bad in ("abc", "0"):
        (msg,) = ecr_out(day.req(MsgCode.PARAMETER, name="daily_limit", value=bad))
        assert msg.get("rc") == "BAD_REQUEST" and "minor units" in msg.get("text")
    (msg,) = ecr_out(day.req(MsgCode.PARAMETER, name="colour", value="red"))
    assert msg.get("rc") == "BAD_REQUEST" and "known: clock, txn_limit" in msg.get("text")


def test_voided_and_reversed_sales_leave_the_day_total(day: Day) -> None:
    day.sale(3000)
    day.online(day.req(VD, ostan="000002"))
    assert day.status().get("day_sales") == "0"


# ------------------------------------------------------------------------------------- clock

def test_pm_clock_sets_the_terminal_clock_and_a_new_day_needs_sign_in(day: Day) -> None:
    assert day.status().get("clock") == "20260504131415"
    assert day.status().get("signed_in") == "1"
    day.admin()
    (msg,) = ecr_out(day.req(MsgCode.PARAMETER, name="clock", value="20260503121415"))
    assert msg.get("rc") == "OK"
    assert day.status().get("clock") == "20260503121415"
    assert day.status().get("signed_in") == "0"  # the business day changed
    assert final(day.req(PU, amt="100", cur="156"), PU).get("rc") == "NOT_SIGNED_IN"
    (msg,) = ecr_out(day.req(MsgCode.PARAMETER, name="clock", value="2026-05-03"))
    assert msg.get("rc") == "BAD_REQUEST" and "YYYYMMDDhhmmss" in msg.get("text")
    # sign-in sets it from the 0810's fields 13 + 12
    si = final(day.sign_in(host_datetime="0504131500"), MsgCode.SIGN_IN)
    assert si.get("rc") == "APPROVED" and si.get("clock") == "20260504131500"
    assert day.status().get("clock") == "20260504131500" and day.status().get("signed_in") == "1"
    day.clock.advance(seconds=10)
    assert day.status().get("clock") == "20260504131510"
    day.clock.advance(hours=11)  # past midnight: a new business day
    assert day.status().get("signed_in") == "0"


def test_host_time_across_new_year_picks_the_nearest_year() -> None:
    d = Day(clock=FakeClock(datetime.datetime(2026, 12, 31, 23, 59, 50)))
    d.boot()
    d.sign_in(host_datetime="0101000005")
    assert d.status().get("clock") == "20270101000005"


@pytest.mark.parametrize("hrc", ["22", "77", "A0"])
def test_declines_that_drop_the_keys(day: Day, hrc: str) -> None:
    msg = final(day.sale(100, auth=FakeAuthResult(response_code=hrc, approved=False)), PU)
    assert (msg.get("rc"), msg.get("hrc")) == ("DECLINED", hrc)
    assert day.status().get("signed_in") == "0"


def test_no_sign_in_after_boot() -> None:
    d = Day()
    d.boot()
    d.login()
    assert final(d.req(PU, amt="100", cur="156"), PU).get("rc") == "NOT_SIGNED_IN"


# ----------------------------------------------------------------------- journal write order

def test_journal_is_written_before_each_step(day: Day) -> None:
    day.req(PU, amt="700", cur="156")
    pin = day.done(day.hw(t="card", present=True), FakeCard())
    assert codes(pin) == ["PG:ENTER_PIN"] and day.journal.entries(2) == []
    for k in "1234":
        day.req(MsgCode.KEY, k=k)
    out = day.req(MsgCode.KEY, k=Key.ENTER)
    (auth,) = jobs(out)
    (entry,) = day.journal.entries(2)  # pending before the request leaves
    assert (entry.state, entry.stan, entry.masked_pan, entry.entry_mode) == (
        EntryState.PENDING, auth.stan, MASKED, "chip")
    assert day.journal.card_data(entry.id) == CardData(PAN, "3012", PAN + "D30122010000000000")
    out = day.done(out, FakeAuthResult())
    assert codes(out) == ["PG:PRINTING"]
    entry = day.journal.get(entry.id)  # the answer, before printing or answering
    assert (entry.state, entry.rrn, entry.printed) == (EntryState.APPROVED, "000000001234", False)
    assert codes(day.advance(0.02)) == ["PR:merchant"]
    assert not day.journal.get(entry.id).printed
    out = day.advance(0.02)
    assert codes(out) == ["PR:customer", "PU:APPROVED"] and day.journal.get(entry.id).printed
    assert day.status().get("journal") == "1"
    assert final(out, PU).get("date") == "0504"


# ---------------------------------------------------------------------------------- reversals

def test_time_out_leaves_a_reversal_sent_before_the_next_sale(day: Day) -> None:
    day.req(PU, amt="3300", cur="156")
    day.done(day.hw(t="card", present=True), FakeCard(cvm="no_cvm"))
    out = day.fw.on_job(JobResult(day.fw._pending_job or 0, None, "comms", "response",
                                  "no complete response within 5.0 s", "98"), day.now)
    assert final(out, PU).get("rc") == "COMMS_ERROR"
    (lost,) = day.journal.pending_reversals()
    assert (lost.stan, lost.reversal_reason) == (2, "98")
    assert day.status().get("reversal") == "1"
    day.hw(t="card", present=False)
    # the next sale: the reversal goes first, the sale only once it is acknowledged
    day.req(PU, amt="3400", cur="156")
    out = day.done(day.hw(t="card", present=True), FakeCard(cvm="no_cvm"))
    (rev,) = jobs(out)
    assert isinstance(rev, ReversalJob) and rev.entry.stan == 2 and rev.card is not None
    assert day.journal.get(lost.id).reversal_tries == 1  # counted before it left
    assert day.journal.entries(2)[-1].id == lost.id  # the sale is not journaled yet
    out = day.done(out, FakeHostAnswer())
    (auth,) = jobs(out)
    assert isinstance(auth, AuthJob) and auth.stan == 3
    assert day.journal.get(lost.id).state is EntryState.REVERSED
    assert day.journal.card_data(lost.id) is None
    assert day.status().get("reversal") == "0"
    (q,) = ecr_out(day.req(MsgCode.QUERY, stan="000002"))
    assert q.get("rc") == "BUSY"  # the sale is still online
    day.done(out, FakeAuthResult())
    day.print_all()
    (q,) = ecr_out(day.req(MsgCode.QUERY, stan="000002"))
    assert q.get("status") == "reversed"


def test_a_reversal_not_acknowledged_blocks_the_sale_and_stays(day: Day) -> None:
    day.journal.reversal_pending(day.journal.add(dataclasses.replace(
        _entry(day), stan=50)).id, "98")
    day.req(PU, amt="100", cur="156")
    out = day.done(day.hw(t="card", present=True), FakeCard(cvm="no_cvm"))
    out = day.done(out, failure="comms", reason="connect", message="connect refused")
    assert isinstance(jobs(out)[0], ReversalJob)  # the second try (profile reversal.tries = 2)
    out = day.done(out, FakeHostAnswer(response_code="96"))
    msg = final(out, PU)
    assert msg.get("rc") == "DECLINED" and "STAN 000050 not acknowledged after 2 tries" in \
        msg.get("text")
    assert not [j for j in jobs(out) if isinstance(j, AuthJob)]
    (still,) = day.journal.pending_reversals()
    assert still.reversal_tries == 2 and day.fw.state is State.IDLE


def _entry(day: Day) -> Any:
    from sim.terminal.journal import NewEntry
    return NewEntry(batch_no=2, stan=1, txn_type="sale", amount_minor=100, currency="156",
                    created="20260504120000", entry_mode="chip", pos_entry="051",
                    masked_pan=MASKED)


def test_connect_failure_leaves_nothing_to_reverse(day: Day) -> None:
    day.req(PU, amt="100", cur="156")
    out = day.done(day.hw(t="card", present=True), FakeCard(cvm="no_cvm"))
    out = day.done(out, failure="comms", reason="connect", message="refused", reversal="")
    assert final(out, PU).get("rc") == "COMMS_ERROR"
    (entry,) = day.journal.entries(2)
    assert entry.state is EntryState.FAILED and day.journal.pending_reversals() == []


def test_mac_failure_on_an_approval_is_reversed_06(day: Day) -> None:
    day.req(PU, amt="100", cur="156")
    out = day.done(day.hw(t="card", present=True), FakeCard(cvm="no_cvm"))
    out = day.done(out, failure="comms", reason="response",
                   message="response MAC does not verify (code 00); reverse", reversal="06")
    assert final(out, PU).get("rc") == "COMMS_ERROR"
    (rev,) = day.journal.pending_reversals()
    assert rev.reversal_reason == "06"


def test_card_removed_before_it_takes_the_approval_is_reversed(day: Day) -> None:
    day.req(PU, amt="100", cur="156")
    out = day.done(day.hw(t="card", present=True), FakeCard(cvm="no_cvm"))
    assert codes(day.hw(t="card", present=False)) == ["EV:CARD_REMOVED"]
    msg = final(day.done(out, FakeAuthResult()), PU)
    assert (msg.get("rc"), msg.get("reason")) == ("CARD_ERROR", "removed")
    (rev,) = day.journal.pending_reversals()
    assert (rev.reversal_reason, rev.rrn, rev.printed) == ("06", "000000001234", False)


def test_void_is_not_reversed_for_a_missing_card(day: Day) -> None:
    day.sale(800)
    assert final(day.online(day.req(VD, ostan="000002")), VD).get("rc") == "APPROVED"
    assert day.journal.pending_reversals() == []


# --------------------------------------------------------------------------------- power cuts

def test_after_a_power_cut_pending_is_reversed_and_approved_is_printed_held(day: Day) -> None:
    # sale 1: answer never came (power cut while online)
    day.req(PU, amt="4400", cur="156")
    day.done(day.hw(t="card", present=True), FakeCard(cvm="no_cvm"))
    # sale 2 in another terminal life: approved, cut while printing
    d2 = Day(nvram=day.nvram, journal=day.journal, clock=day.clock)
    d2.boot()
    (lost,) = d2.journal.pending_reversals()
    assert lost.stan == 2 and lost.reversal_reason == "98"
    d2.sign_in()
    d2.req(PU, amt="4500", cur="156")
    out = d2.done(d2.hw(t="card", present=True), FakeCard(cvm="no_cvm"))
    out = d2.done(out, FakeHostAnswer())  # the reversal
    d2.done(out, FakeAuthResult(rrn="000000004500"))
    assert codes(d2.advance(0.02)) == ["PR:merchant"]
    # power cut now; the terminal comes back
    d3 = Day(nvram=day.nvram, journal=day.journal, clock=day.clock)
    out = d3.fw.start(0.0)
    assert d3.fw.state is State.BOOTING
    out = d3.advance(0.05) + d3.advance(0.02) + d3.advance(0.02)
    assert codes(out) == ["PR:merchant", "PR:customer", "RD"]
    assert HELD_MARK in ecr_out(out)[0].get("text") and "000000004500" in ecr_out(out)[0].get("text")
    held = d3.journal.find(2, 4)
    assert held is not None and held.printed and held.held
    assert d3.fw.state is State.IDLE and d3.journal.unprinted() == []


def test_held_receipt_waits_for_paper() -> None:
    d = Day()
    d.boot()
    d.sign_in()
    d.req(PU, amt="100", cur="156")
    out = d.done(d.hw(t="card", present=True), FakeCard(cvm="no_cvm"))
    d.done(out, FakeAuthResult())
    d2 = Day(nvram=d.nvram, journal=d.journal)
    d2.fw.start(0.0)
    d2.hw(t="paper", present=False)
    assert codes(d2.advance(0.05)) == ["RD", "EV:PAPER_OUT"]
    assert len(d2.journal.unprinted()) == 1  # printed at a later boot with paper


# ------------------------------------------------------------------------ reprint, query, totals

def test_reprint_prints_the_last_receipt_marked(day: Day) -> None:
    (msg,) = ecr_out(day.req(MsgCode.REPRINT))
    assert msg.get("rc") == "NOT_FOUND"
    sale = final(day.sale(900), PU)
    out = day.req(MsgCode.REPRINT)
    assert codes(out) == ["PG:PRINTING"] and day.fw.state is State.PRINTING
    out += day.print_all()
    assert codes(out)[1:] == ["PR:merchant", "PR:customer", "RP:OK"]
    text = ecr_out(out)[1].get("text")
    assert REPRINT_MARK in text and sale.get("rrn") in text and "000002" in text
    assert final(out, MsgCode.REPRINT).get("print") == "OK"
    day.hw(t="paper", present=False)
    (msg,) = ecr_out(day.req(MsgCode.REPRINT))
    assert msg.get("rc") == "PAPER_OUT"


def test_query_by_trace(day: Day) -> None:
    sale = final(day.sale(700), PU)
    (q,) = ecr_out(day.req(MsgCode.QUERY, stan="2"))
    assert {k: q.get(k) for k in ("rc", "type", "amt", "status", "rrn", "auth", "pan", "time",
                                  "batch", "stan")} == {
        "rc": "OK", "type": "sale", "amt": "700", "status": "approved", "rrn": sale.get("rrn"),
        "auth": "123456", "pan": MASKED, "time": "20260504131415", "batch": "000002",
        "stan": "000002"}
    (q,) = ecr_out(day.req(MsgCode.QUERY, stan="000002", batch="000001"))
    assert q.get("rc") == "NOT_FOUND"
    (q,) = ecr_out(day.req(MsgCode.QUERY, stan="x"))
    assert q.get("rc") == "BAD_REQUEST"
    day.req(MsgCode.LOGOUT)
    (q,) = ecr_out(day.req(MsgCode.QUERY, stan="2"))
    assert q.get("rc") == "NOT_LOGGED_IN"


def test_totals_flag_repeated_declines_of_one_card(day: Day) -> None:
    for _ in range(3):
        day.sale(100, auth=FakeAuthResult(response_code="51", approved=False))
    day.sale(100, card=FakeCard(pan=OTHER_PAN),
             auth=FakeAuthResult(response_code="51", approved=False))
    day.sale(200)
    (tt,) = ecr_out(day.req(MsgCode.TOTALS))
    assert tt.get("anomalies") == f"declines:{MASKED}"
    assert (tt.get("batch"), tt.get("sale_n"), tt.get("sale_amt"), tt.get("chip_n")) == (
        "000002", "1", "200", "1")


@pytest.mark.parametrize("gap_min, flagged", [(4, True), (6, False)])
def test_totals_flag_a_refund_burst(day: Day, gap_min: int, flagged: bool) -> None:
    day.admin()
    for _ in range(3):
        day.online(day.req(RF, amt="100", cur="156", orrn="000000001234", odate="0504"))
        day.clock.advance(minutes=gap_min)
    (tt,) = ecr_out(day.req(MsgCode.TOTALS))
    assert tt.get("refund_n") == "3"
    assert ("refund_burst" in tt.get("anomalies")) is flagged


# --------------------------------------------------------------------------------- settlement

def test_balanced_settlement_closes_the_batch_and_shutdown_is_then_allowed(day: Day) -> None:
    day.sale(2000)
    (sd,) = ecr_out(day.req(MsgCode.SHUTDOWN))
    assert sd.get("rc") == "UNSETTLED_BATCH" and "batch 000002 holds 1" in sd.get("text")
    day.admin()
    out = day.req(MsgCode.SETTLE)
    (job,) = jobs(out)
    assert isinstance(job, SettleJob) and job.totals == SettlementTotals(1, 2000, 0, 0)
    assert (job.batch_no, job.operator, job.stan) == (2, "00", 3)
    msg = final(day.done(out, FakeSettlementResult(host_totals=job.totals.with_code("1"))),
                MsgCode.SETTLE)
    assert {k: msg.get(k) for k in ("rc", "balanced", "uploaded", "batch", "next_batch")} == {
        "rc": "OK", "balanced": "1", "uploaded": "0", "batch": "000002", "next_batch": "000003"}
    assert day.nvram.data.batch_no == 3 and day.status().get("journal") == "0"
    assert all(day.journal.card_data(e.id) is None for e in day.journal.entries(2))
    (sd,) = ecr_out(day.req(MsgCode.SHUTDOWN))
    assert sd.get("rc") == "OK"
    (q,) = ecr_out(day.req(MsgCode.QUERY, stan="000002", batch="000002"))
    assert q.get("status") == "approved"  # the old batch stays queryable


def test_unbalanced_settlement_uploads_the_batch_then_settles_again(day: Day) -> None:
    first = final(day.sale(2100), PU)  # STAN 2
    day.sale(900)  # STAN 3, voided below
    day.online(day.req(VD, ostan="000003"))  # STAN 4
    day.admin()
    day.online(day.req(RF, amt="500", cur="156", orrn=first.get("rrn"), odate="0504"))  # STAN 5
    out = day.req(MsgCode.SETTLE)
    (job,) = jobs(out)
    assert job.totals == SettlementTotals(1, 2100, 1, 500)
    out = day.done(out, FakeSettlementResult(host_totals=SettlementTotals(2, 3000, 0, 0, "2")))
    uploads = []
    while jobs(out) and isinstance(jobs(out)[0], UploadJob):
        uploads.append(jobs(out)[0].item)
        out = day.done(out, FakeHostAnswer())
    assert [(u.stan, u.proc_code, u.amount_minor, u.pan) for u in uploads] == [
        (2, "000000", 2100, PAN), (5, "200000", 500, PAN)]
    (end,) = jobs(out)
    assert isinstance(end, UploadEndJob) and (end.count, end.batch_no) == (2, 2)
    out = day.done(out, FakeHostAnswer())
    (again,) = jobs(out)
    assert isinstance(again, SettleJob) and again.stan == end.stan + 1
    msg = final(day.done(out, FakeSettlementResult(host_totals=again.totals.with_code("1"))),
                MsgCode.SETTLE)
    assert (msg.get("rc"), msg.get("balanced"), msg.get("uploaded"), msg.get("next_batch")) == (
        "OK", "1", "2", "000003")


def test_settlement_still_unbalanced_after_upload_keeps_the_batch(day: Day) -> None:
    day.sale(100)
    day.admin()
    out = day.req(MsgCode.SETTLE)
    unbalanced = FakeSettlementResult(host_totals=SettlementTotals(0, 0, 0, 0, "2"))
    out = day.done(out, unbalanced)
    out = day.done(out, FakeHostAnswer())  # the one upload
    out = day.done(out, FakeHostAnswer())  # the end
    msg = final(day.done(out, unbalanced), MsgCode.SETTLE)
    assert (msg.get("rc"), msg.get("balanced"), msg.get("uploaded")) == ("DECLINED", "0", "1")
    assert "NOT BALANCED" in msg.get("text") and day.nvram.data.batch_no == 2


def test_settlement_sends_pending_reversals_first_and_reports_comms(day: Day) -> None:
    day.journal.reversal_pending(day.journal.add(_entry(day)).id, "98")
    day.admin()
    out = day.req(MsgCode.SETTLE)
    assert isinstance(jobs(out)[0], ReversalJob)
    out = day.done(out, FakeHostAnswer())
    (job,) = jobs(out)
    assert isinstance(job, SettleJob)
    msg = final(day.done(out, failure="comms", reason="connect", message="connect refused"),
                MsgCode.SETTLE)
    assert (msg.get("rc"), msg.get("balanced")) == ("COMMS_ERROR", "0")
    assert day.fw.state is State.IDLE and day.nvram.data.batch_no == 2


def test_settlement_declined_by_the_host(day: Day) -> None:
    day.admin()
    out = day.req(MsgCode.SETTLE)
    msg = final(day.done(out, FakeSettlementResult(response_code="77")), MsgCode.SETTLE)
    assert (msg.get("rc"), msg.get("hrc")) == ("DECLINED", "77")
    assert day.status().get("signed_in") == "0"


def test_status_reports_the_business_day_fields(day: Day) -> None:
    st = day.status()
    assert {k: st.get(k) for k in ("clock", "reversal", "journal", "txn_limit", "daily_limit",
                                   "refund_limit", "day_sales")} == {
        "clock": NOW.strftime("%Y%m%d%H%M%S"), "reversal": "0", "journal": "0",
        "txn_limit": "5000000", "daily_limit": "20000000", "refund_limit": "100000",
        "day_sales": "0"}


def test_perform_passes_the_reversal_a_comms_error_calls_for() -> None:
    from sim.terminal.firmware import perform
    from tests.terminal.fakes import FakeCommsError, FakeServices

    class MacError(FakeCommsError):
        reversal = "06"

    svc = FakeServices()
    job = ChipJob(1, 1, "156", "156", NOW.date(), b"", 1.0)
    svc.card = FakeCommsError("response", "late")
    assert perform(job, svc).reversal == "98"
    svc.card = MacError("response", "bad mac")
    assert perform(job, svc).reversal == "06"
    svc.card = FakeCommsError("connect", "refused")
    assert perform(job, svc).reversal == ""
    assert isinstance(SignInJob(1, "01", 1, 1), SignInJob)

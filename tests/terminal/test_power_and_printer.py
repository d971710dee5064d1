"""Power and printer faults against the pure firmware (docs/terminal-behaviour.md, "Power",
"Printer", "Fault codes (TS-17)"): the battery cut-off, the hang below the operating range, the
self-test's fault codes, paper low, no printer, and receipts continued after the paper ran out
mid-receipt.  Fake services, a fake clock, the memory journal; time is passed in."""

from __future__ import annotations

import pytest

from protocols.ecr import FaultCode, Message, MsgCode, PrintStatus, ShutdownReason
from sim.terminal.firmware import (
    Action,
    AuthJob,
    Freeze,
    Halt,
    JobResult,
    PowerOff,
    SendHarness,
    State,
)
from sim.terminal.journal import EntryState
from sim.terminal.printer import CONTINUED_MARK, HELD_MARK
from tests.terminal.fakes import (
    Day,
    FakeAuthResult,
    FakeCard,
    FakeSignInResult,
    codes,
    ecr_out,
    fast_profile,
    final,
    jobs,
    loads,
)
from tests.terminal.test_business_day import PU

NOMINAL = 7.40


def events(actions: list[Action], code: str) -> list[Message]:
    return [m for m in ecr_out(actions) if m.code == MsgCode.EVENT and m.get("code") == code]


def notices(actions: list[Action]) -> list[PowerOff]:
    return [a for a in actions if isinstance(a, PowerOff)]


def online_sale(d: Day, amount: int = 1000) -> list[Action]:
    """A sale up to its AuthJob (request journaled and gone); returns the actions starting it."""
    d.req(PU, amt=str(amount), cur="156")
    return d.done(d.hw(t="card", present=True), FakeCard(cvm="no_cvm"))


def approve(d: Day, actions: list[Action]) -> list[Action]:
    return d.done(actions, FakeAuthResult(rrn="000000004321"))


# ------------------------------------------------------------------------- battery cut-off

def test_rail_at_cutoff_for_the_debounce_shuts_the_terminal_down(day: Day) -> None:
    out = day.hw(t="rail", volts=6.40)
    (low,) = events(out, "LOW_BATTERY")
    assert low.get("fault") == FaultCode.BATTERY_CRITICAL  # at the cut-off: 6.40 <= 6.45
    assert day.fw.next_deadline() == pytest.approx(day.now + 0.3)
    assert day.advance(0.299) == []
    out = day.advance(0.001)
    (ev,) = events(out, "SHUTDOWN")
    assert (ev.get("fault"), ev.get("reason"), ev.get("faults")) == ("E12", "cutoff", "E12")
    assert "BATTERY EMPTY" in ev.get("text")
    (off,) = notices(out)
    assert off.notice == {"t": "power_off", "reason": ShutdownReason.CUTOFF, "volts": 6.4}
    assert isinstance(out[-1], PowerOff)  # the last thing it does
    assert day.fw.halted is Halt.OFF and day.fw.next_deadline() is None
    # off: it answers nothing, sees nothing, has no timers
    assert day.req(MsgCode.STATUS) == [] and day.hw(t="rail", volts=NOMINAL) == []
    assert day.advance(10.0) == [] and day.fw.on_bad_request("x") == []
    assert "SHUTDOWN" in day.fw.faults


def test_a_dip_shorter_than_the_debounce_is_not_an_empty_battery(day: Day) -> None:
    day.hw(t="rail", volts=6.30)
    assert day.advance(0.2) == []
    assert codes(day.hw(t="rail", volts=NOMINAL)) == ["EV:BATTERY_OK"]
    assert day.fw.next_deadline() is None
    assert day.advance(1.0) == [] and day.fw.halted is None
    assert day.status().get("state") == "IDLE"


def test_cutoff_that_fell_due_before_the_next_input_wins_over_it(day: Day) -> None:
    """Time is passed in: a rail coming back 0.35 s later (no tick in between) comes too late,
    and the request that arrives then is not seen."""
    day.hw(t="rail", volts=6.35)
    day.now += 0.35
    out = day.hw(t="rail", volts=NOMINAL)
    assert codes(out) == ["EV:SHUTDOWN"] and notices(out)
    assert day.fw.volts == pytest.approx(6.35)


def test_shutdown_mid_request_leaves_a_pending_reversal(day: Day) -> None:
    auth = online_sale(day, 4400)
    assert isinstance(jobs(auth)[0], AuthJob)
    (entry,) = [e for e in day.journal.entries() if e.state is EntryState.PENDING]
    day.hw(t="rail", volts=6.30)
    out = day.advance(0.3)
    assert codes(out)[:2] == ["EV:SHUTDOWN", "PU:CANCELLED"]
    msg = final(out, PU)
    assert (msg.get("reason"), msg.get("stan")) == ("shutdown", entry.stan_text)
    after = day.journal.get(entry.id)
    assert (after.state, after.reversal_reason) == (EntryState.REVERSAL_PENDING, "98")
    # the answer that comes after the power went is dropped
    assert day.fw.on_job(JobResult(jobs(auth)[0].job_id, FakeAuthResult()), day.now) == []
    # the terminal comes back on its cradle: the reversal is owed, nothing is pending
    again = Day(nvram=day.nvram, journal=day.journal, clock=day.clock)
    assert codes(again.boot()) == ["RD"]
    assert [e.id for e in again.journal.pending_reversals()] == [entry.id]


def test_shutdown_while_a_card_is_awaited_cancels(day: Day) -> None:
    day.req(PU, amt="100", cur="156")
    day.hw(t="rail", volts=6.30)
    out = day.advance(0.3)
    assert codes(out) == ["EV:SHUTDOWN", "PU:CANCELLED"]
    assert day.journal.entries() == []


def test_shutdown_while_printing_keeps_the_copies_not_printed(day: Day) -> None:
    approve(day, online_sale(day, 2500))
    assert codes(day.advance(0.02)) == ["PR:merchant"]
    day.hw(t="rail", volts=6.30)
    out = day.advance(0.3)
    msg = final(out, PU)
    assert (msg.get("rc"), msg.get("print"), msg.get("reason")) == (
        "APPROVED", PrintStatus.INCOMPLETE, "shutdown")
    (entry,) = day.journal.entries()
    assert (entry.printed, entry.incomplete, entry.copies_printed) == (False, True, 1)
    # next boot (charger connected): the customer copy, marked continued, before READY
    again = Day(nvram=day.nvram, journal=day.journal, clock=day.clock)
    again.fw.start(0.0)
    out = again.advance(0.05) + again.advance(0.02)
    assert codes(out) == ["PR:customer", "RD"]
    assert CONTINUED_MARK in ecr_out(out)[0].get("text")
    assert again.journal.get(entry.id).printed


def test_shutdown_mid_settlement_and_sign_in_answers_them(day: Day) -> None:
    day.admin()
    out = day.req(MsgCode.SETTLE)
    assert jobs(out)
    day.hw(t="rail", volts=6.30)
    out = day.advance(0.3)
    msg = final(out, MsgCode.SETTLE)
    assert (msg.get("rc"), msg.get("reason"), msg.get("balanced")) == (
        "CANCELLED", "shutdown", "0")
    d2 = Day()
    d2.boot()
    d2.login()
    d2.req(MsgCode.SIGN_IN)
    d2.hw(t="rail", volts=6.30)
    assert codes(d2.advance(0.3)) == ["EV:SHUTDOWN", "SI:CANCELLED"]


def test_too_low_to_start_reports_e12_and_powers_off_at_post() -> None:
    d = Day()
    d.fw.start(0.0)
    d.hw(t="printer", present=False)
    d.hw(t="rail", volts=6.42)  # above the cut-off, at or below critical_volts (6.45)
    out = d.advance(0.05)
    assert codes(out) == ["EV:SHUTDOWN"]  # no READY
    (ev,) = events(out, "SHUTDOWN")
    assert (ev.get("reason"), ev.get("fault"), ev.get("faults")) == ("critical", "E12", "E01,E12")
    assert "BATTERY CRITICAL" in ev.get("text")
    assert notices(out)[0].notice["reason"] == ShutdownReason.CRITICAL
    assert d.fw.halted is Halt.OFF


def test_low_but_not_critical_battery_boots_with_e11() -> None:
    d = Day()
    d.fw.start(0.0)
    d.hw(t="rail", volts=6.50)
    out = d.advance(0.05)
    assert codes(out) == ["RD", "EV:LOW_BATTERY"]
    assert ecr_out(out)[0].get("faults") == "E11" and ecr_out(out)[1].get("fault") == "E11"


# ------------------------------------------------------------------------------- the hang

def test_rail_below_min_operating_hangs_the_mcu(day: Day) -> None:
    day.req(PU, amt="100", cur="156")  # waiting for a card: a timer runs
    load = day.fw._load
    out = day.hw(t="rail", volts=6.10)
    assert codes(out) == ["EV:LOW_BATTERY"]
    assert day.fw.next_deadline() == pytest.approx(day.now + 0.05)
    assert day.advance(0.049) == []
    out = day.advance(0.001)
    assert out == [Freeze()]  # nothing said, no load change: it keeps drawing what it drew
    assert day.fw.halted is Halt.HUNG and day.fw._load == load
    # hung: no ECR answer, no keypad, no timers (the card wait never times out), no rail
    assert day.req(MsgCode.STATUS) == [] and day.req(MsgCode.KEY, k="CANCEL") == []
    assert day.advance(60.0) == [] and day.fw.next_deadline() is None
    assert day.hw(t="rail", volts=NOMINAL) == [] and day.hw(t="card", present=True) == []
    # only a power cycle helps: a new process boots normally
    again = Day(nvram=day.nvram, journal=day.journal, clock=day.clock)
    assert codes(again.boot()) == ["RD"]


def test_a_dip_shorter_than_hang_after_is_ridden_through(day: Day) -> None:
    day.hw(t="rail", volts=6.10)
    day.advance(0.04)
    day.hw(t="rail", volts=NOMINAL)
    assert day.advance(1.0) == [] and day.fw.halted is None
    assert day.status().get("rc") == "OK"


def test_a_dip_seen_only_when_it_ends_still_hangs(day: Day) -> None:
    """The 100 ms dip of the rig: its end comes after hang_after, even with no tick between."""
    day.hw(t="rail", volts=6.10)
    day.now += 0.1
    assert day.hw(t="rail", volts=NOMINAL) == [Freeze()]


def test_hang_comes_before_the_cutoff_when_both_fell_due(day: Day) -> None:
    day.hw(t="rail", volts=6.10)  # below min_operating and the cut-off: both clocks run
    out = day.advance(1.0)
    assert out == [Freeze()] and not notices(out)


# ---------------------------------------------------------------------- fault codes (POST)

def test_self_test_reports_each_failing_part_with_its_code() -> None:
    d = Day()
    d.fw.start(0.0)
    for obj in ({"t": "printer", "present": False}, {"t": "paper", "present": False},
                {"t": "paper_low", "low": True}, {"t": "rail", "volts": 6.60}):
        assert d.hw(**obj) == []  # nothing on the ECR before READY
    out = d.advance(0.05)
    assert codes(out) == ["RD", "EV:PRINTER_MISSING", "EV:PAPER_OUT", "EV:PAPER_LOW",
                          "EV:LOW_BATTERY"]
    ready, *evs = ecr_out(out)
    assert ready.get("faults") == "E01,E02,E03,E11"
    assert [e.get("fault") for e in evs] == ["E01", "E02", "E03", "E11"]
    st = d.status()
    assert st.get("faults").startswith("E01,E02,E03,E11")
    assert (st.get("printer"), st.get("paper"), st.get("paper_low")) == ("0", "0", "1")


def test_healthy_self_test_has_no_fault_codes() -> None:
    d = Day()
    out = d.boot()
    assert ecr_out(out)[0].get("faults") == "" and d.fw.fault_codes() == ()


def test_status_faults_are_the_codes_then_the_errors_met(day: Day) -> None:
    day.hw(t="paper", present=False)
    day.req(PU, amt="100", cur="156")  # refused: PAPER_OUT joins the errors met
    assert day.status().get("faults") == "E02,PAPER_OUT,PAPER_OUT"
    day.hw(t="paper", present=True)
    assert day.status().get("faults") == "PAPER_OUT,PAPER_OUT"  # the code is gone


# ---------------------------------------------------------------------------- the printer

def test_paper_low_warns_but_sales_go_on_and_print(day: Day) -> None:
    out = day.hw(t="paper_low", low=True)
    assert codes(out) == ["EV:PAPER_LOW"] and ecr_out(out)[0].get("fault") == "E03"
    assert day.hw(t="paper_low", low=True) == []  # no change, no event
    sale = final(day.sale(300), PU)
    assert (sale.get("rc"), sale.get("print")) == ("APPROVED", "OK")
    assert day.status().get("paper_low") == "1"
    assert codes(day.hw(t="paper_low", low=False)) == ["EV:PAPER_LOW_OK"]
    assert "E03" not in day.status().get("faults")


def test_no_printer_refuses_what_prints_distinctly(day: Day) -> None:
    day.sale(300)
    out = day.hw(t="printer", present=False)
    assert codes(out) == ["EV:PRINTER_MISSING"] and ecr_out(out)[0].get("fault") == "E01"
    (msg,) = ecr_out(day.req(PU, amt="100", cur="156"))
    assert (msg.get("rc"), msg.get("text")) == ("NO_PRINTER", "打印机未连接 NO PRINTER")
    assert codes(day.req(MsgCode.REPRINT)) == ["RP:NO_PRINTER"]
    day.admin()
    assert jobs(day.req(MsgCode.SETTLE))  # a settlement prints nothing: it goes on
    d = Day()
    d.boot()
    d.sign_in()
    d.hw(t="printer", present=False)
    assert codes(d.hw(t="printer", present=True)) == ["EV:PRINTER_OK"]
    assert codes(d.req(PU, amt="100", cur="156")) == ["PG:INSERT_CARD"]


def test_no_printer_before_paper_out_in_the_refusal_order(day: Day) -> None:
    day.hw(t="paper", present=False)
    day.hw(t="printer", present=False)
    assert codes(day.req(PU, amt="100", cur="156")) == ["PU:NO_PRINTER"]
    day.hw(t="rail", volts=6.60)
    assert codes(day.req(PU, amt="100", cur="156")) == ["PU:LOW_BATTERY"]


# ------------------------------------------------------------- paper out mid-receipt (TS-11)

def test_paper_out_mid_receipt_is_continued_when_paper_is_back(day: Day) -> None:
    approve(day, online_sale(day, 2500))
    assert codes(day.advance(0.02)) == ["PR:merchant"]
    day.hw(t="paper", present=False)
    out = day.advance(0.02)
    msg = final(out, PU)
    assert (msg.get("rc"), msg.get("print")) == ("APPROVED", "INCOMPLETE")
    (entry,) = day.journal.entries()
    assert (entry.printed, entry.incomplete, entry.copies_printed) == (False, True, 1)
    assert day.journal.last_printed() is None  # it counts as printed only once completed
    assert day.advance(1.0) == []  # idle, no paper: nothing
    out = day.hw(t="paper", present=True)
    assert codes(out) == ["EV:PAPER_OK"] and loads(out) == ["printing"]
    assert day.fw.state is State.PRINTING
    assert codes(day.req(PU, amt="100", cur="156")) == ["PU:BUSY"]
    out = day.advance(0.02)
    assert codes(out) == ["PR:customer"] and loads(out) == ["idle"]  # no second PU answer
    text = ecr_out(out)[0].get("text")
    assert CONTINUED_MARK in text and "000000004321" in text and "持卡人存根" in text
    after = day.journal.get(entry.id)
    assert after.printed and not after.held and day.journal.unprinted() == []
    assert day.advance(1.0) == [] and day.fw.state is State.IDLE


def test_paper_out_before_the_first_copy_continues_both(day: Day) -> None:
    sale = online_sale(day, 700)
    day.hw(t="paper", present=False)  # runs out while the request is online
    msg = final(approve(day, sale) + day.advance(0.02), PU)
    assert msg.get("print") == "INCOMPLETE"
    day.hw(t="paper", present=True)
    out = day.advance(0.02) + day.advance(0.02)
    assert codes(out) == ["PR:merchant", "PR:customer"]
    assert all(CONTINUED_MARK in m.get("text") for m in ecr_out(out))


def test_printer_unplugged_mid_receipt_is_the_same(day: Day) -> None:
    approve(day, online_sale(day, 900))
    day.advance(0.02)
    day.hw(t="printer", present=False)
    assert final(day.advance(0.02), PU).get("print") == "INCOMPLETE"
    assert day.fw.faults[-1] == "NO_PRINTER"
    day.hw(t="printer", present=True)
    assert codes(day.advance(0.02)) == ["PR:customer"]


def test_continuation_waits_until_the_terminal_is_idle(day: Day) -> None:
    approve(day, online_sale(day, 900))
    day.advance(0.02)
    day.hw(t="paper", present=False)
    day.advance(0.02)
    sign_in = day.req(MsgCode.SIGN_IN)  # busy with the host when the paper comes back
    assert codes(day.hw(t="paper", present=True)) == ["EV:PAPER_OK"]
    assert day.fw.state is State.SIGNING_IN
    out = day.done(sign_in, FakeSignInResult())
    assert codes(out) == ["SI:APPROVED"] and day.fw.state is State.PRINTING
    assert codes(day.advance(0.02)) == ["PR:customer"]


def test_incomplete_receipt_survives_a_power_cut(day: Day) -> None:
    approve(day, online_sale(day, 2500))
    day.advance(0.02)
    day.hw(t="paper", present=False)
    day.advance(0.02)
    # power cut; paper loaded while it was off; the terminal boots
    again = Day(nvram=day.nvram, journal=day.journal, clock=day.clock)
    again.fw.start(0.0)
    out = again.advance(0.05) + again.advance(0.02)
    assert codes(out) == ["PR:customer", "RD"]
    assert CONTINUED_MARK in ecr_out(out)[0].get("text")
    (entry,) = again.journal.entries()
    assert entry.printed and entry.held


def test_held_receipt_prints_once_paper_is_loaded_after_boot() -> None:
    d = Day()
    d.boot()
    d.sign_in()
    approve(d, online_sale(d, 100))  # power cut before the first copy
    d2 = Day(nvram=d.nvram, journal=d.journal, clock=d.clock)
    d2.fw.start(0.0)
    d2.hw(t="paper", present=False)
    assert codes(d2.advance(0.05)) == ["RD", "EV:PAPER_OUT"]
    d2.hw(t="paper", present=True)
    out = d2.advance(0.02) + d2.advance(0.02)
    assert codes(out) == ["PR:merchant", "PR:customer"]
    assert HELD_MARK in ecr_out(out)[0].get("text")
    assert d2.journal.unprinted() == []


def test_paper_out_while_continuing_keeps_what_is_still_owed(day: Day) -> None:
    sale = online_sale(day, 700)
    day.hw(t="paper", present=False)
    approve(day, sale)
    day.advance(0.02)  # INCOMPLETE, nothing out
    day.hw(t="paper", present=True)
    assert codes(day.advance(0.02)) == ["PR:merchant"]
    day.hw(t="paper", present=False)
    assert day.advance(0.02) == [SendHarness({"t": "load", "state": "idle"})]
    (entry,) = day.journal.entries()
    assert (entry.printed, entry.copies_printed) == (False, 1)
    day.hw(t="paper", present=True)
    assert codes(day.advance(0.02)) == ["PR:customer"]


def test_fast_profile_keeps_the_power_timings() -> None:
    """These tests rely on the profile's power timings (the fixture profile's)."""
    p = fast_profile()
    assert (p.cutoff_debounce_s, p.hang_after_s, p.cutoff_volts, p.critical_volts,
            p.min_operating_volts) == (0.3, 0.05, 6.40, 6.45, 6.20)

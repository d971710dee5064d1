"""The soak's pure parts: its plan from a seed, the catalogue's parameters, where a violation
is placed, the flatness check and the report's last line (the run itself: tests/bench)."""

from __future__ import annotations

import json

import pytest

from protocols.faults import FAULT_KINDS, FaultKind, FaultSpec
from rigs.events import Source
from rigs.host import LEDGER_COLUMNS, LedgerEntry
from rigs.soak import (
    CHAOS,
    CHAOS_BY_NAME,
    Check,
    Done,
    JournalRecord,
    Moment,
    Op,
    Planned,
    Sale,
    Sample,
    SoakReport,
    Violation,
    answer_mti,
    check_batch,
    fault_before,
    flat,
    plan,
    trigger_for,
)


def test_the_same_seed_gives_the_same_plan_and_another_seed_another() -> None:
    a = plan(7, 500, fault_ratio=0.2)
    assert a == plan(7, 500, fault_ratio=0.2)
    assert a != plan(8, 500, fault_ratio=0.2)
    assert [p.n for p in a] == list(range(1, 501))


def test_the_plan_mixes_every_operation_and_every_fault_at_about_the_ratio() -> None:
    planned = plan(11, 2000, fault_ratio=0.2)
    assert {p.op for p in planned} == set(Op)
    faulted = [p for p in planned if p.chaos]
    assert 0.15 < len(faulted) / len(planned) < 0.25
    assert {p.chaos for p in faulted} == set(CHAOS_BY_NAME)
    assert {p.moment for p in faulted} == set(Moment)


def test_no_fault_without_chaos_and_none_with_ratio_zero() -> None:
    assert not any(p.chaos for p in plan(3, 300, fault_ratio=0.0))
    assert not any(p.chaos for p in plan(3, 300, fault_ratio=1.0, chaos=()))


def test_card_faults_and_the_cryptogram_moment_only_in_a_chip_sale() -> None:
    for p in plan(5, 3000, fault_ratio=0.5):
        if p.chaos and CHAOS_BY_NAME[p.chaos].card_only or p.moment is Moment.GENERATE_AC:
            assert p.op is Op.CHIP, p


def test_only_card_faults_asked_for_fall_on_chip_sales_only() -> None:
    planned = plan(4, 400, fault_ratio=0.5, chaos=[CHAOS_BY_NAME["card pulled"]])
    faulted = [p for p in planned if p.chaos]
    assert faulted and all(p.op is Op.CHIP for p in faulted)
    assert any(p.op is not Op.CHIP for p in planned)


def test_every_planned_fault_is_a_valid_spec_of_its_kind() -> None:
    """What the plan asks for passes the fault catalogue's own parameter checks (the bench
    would refuse it at run time otherwise)."""
    for p in plan(9, 3000, fault_ratio=0.5):
        if p.chaos:
            spec = FaultSpec.of(CHAOS_BY_NAME[p.chaos].kind, **dict(p.params))
            assert spec.kind in FAULT_KINDS


def test_a_brown_out_dips_below_the_terminals_brown_out() -> None:
    dips = [p.params for p in plan(2, 3000, fault_ratio=0.5) if p.chaos == "brown-out"]
    assert dips and all(d["volts"] < 6.0 and d["ms"] > 0 for d in dips)


def test_answer_mti() -> None:
    assert answer_mti("0200") == "0210"
    assert answer_mti("0220") == "0230"
    assert answer_mti("0400") == "0410"


def test_triggers_of_each_moment() -> None:
    base = Planned(1, Op.CHIP, 10, "power cut", params={"off_ms": 200}, delay_ms=120.0)
    assert trigger_for(base) is None
    request = trigger_for(Planned(1, Op.REFUND, 10, "power cut", Moment.REQUEST,
                                  delay_ms=40.0))
    assert request is not None and request.source is Source.NETWORK
    assert request.name == frozenset({"0220"}) and request.delay_ms == 40.0
    gac = trigger_for(Planned(1, Op.CHIP, 10, "power cut", Moment.GENERATE_AC, nth=2))
    assert gac is not None and gac.source is Source.CARDS and gac.nth == 2
    instant = trigger_for(Planned(1, Op.CHIP, 10, "cable pull", Moment.INSTANT, delay_ms=300))
    assert instant is not None and instant.kind == "request" and instant.delay_ms == 300
    printing = trigger_for(Planned(1, Op.VOID, 10, "paper out", Moment.PRINT))
    assert printing is not None and printing.name == frozenset({"PRINT"})


def test_a_power_cut_is_a_power_cycle_so_the_operator_switches_it_on_again() -> None:
    """A cut armed on a moment must end by itself: the transaction it interrupts waits for
    the terminal's reboot, not for the soak's recovery after it."""
    assert CHAOS_BY_NAME["power cut"].kind is FaultKind.POWER_CYCLE
    assert all(c.kind is not FaultKind.POWER_CUT for c in CHAOS)


def _done(n: int, stan: str, chaos: str = "") -> Done:
    return Done(n, Op.CHIP.value, 10, "000001", stan=stan, chaos=chaos,
                moment=Moment.BEFORE.value if chaos else "", fired=bool(chaos))


def test_a_violation_names_the_last_fault_up_to_its_transaction() -> None:
    batch = [_done(1, "000010"), _done(2, "", "power cut"), _done(3, "000013"),
             _done(4, "000014", "paper out"), _done(5, "000015")]
    assert fault_before(batch, "000010") == "no fault in the batch"
    assert fault_before(batch, "000012").startswith("#2 sale by chip: power cut")
    assert fault_before(batch, "000014").startswith("#4 sale by chip: paper out")
    assert fault_before(batch, "000015").startswith("#4")
    assert fault_before(batch, "").startswith("#4")


def _samples(rss: list[int], fds: list[int] | None = None) -> list[Sample]:
    fds = fds or [30] * len(rss)
    return [Sample(i * 20, r, f, 5) for i, (r, f) in enumerate(zip(rss, fds, strict=True))]


def test_flat_allows_the_warm_up_and_the_slack() -> None:
    mib = 1024
    assert flat(_samples([70 * mib, 130 * mib, 131 * mib, 133 * mib, 132 * mib])) == []


def test_flat_names_memory_that_keeps_growing() -> None:
    mib = 1024
    grown = flat(_samples([70 * mib, 130 * mib, 140 * mib, 160 * mib, 180 * mib]))
    assert len(grown) == 1 and grown[0].startswith("resident memory grew from 133120 KiB")


def test_flat_names_leaking_file_descriptors() -> None:
    grown = flat(_samples([100] * 6, fds=[30, 32, 32, 40, 50, 60]))
    assert grown == ["open file descriptors grew from 32 (after transaction 20) to 60 (after "
                     "transaction 100), more than 4"]


def test_the_report_ends_with_the_line_a_night_log_is_grepped_for() -> None:
    report = SoakReport(seed=7, count=3, settle_every=2, fault_ratio=0.5, done=3)
    report.faults_fired = {"power cut": 1, "paper out": 1}
    report.checks[Check.BOOKED_ONCE].checked = 3
    report.add(Violation(Check.BOOKED_ONCE, "000001", "000012", "20261201120000",
                         "#2 sale by chip: power cut", "sale approved, booked 0 times", 7))
    text = report.table()
    assert text.splitlines()[-1] == "soak: 3 transactions, 2 faults injected, 1 invariant " \
                                    "violations"
    assert "VIOLATED" in text and "NOT CHECKED" in text  # the other checks never ran
    assert "replay: seed 7" in text
    doc = json.loads(report.to_json())
    assert doc["faults_injected"] == 2 and doc["violations"][0]["stan"] == "000012"
    assert doc["checks"][Check.BOOKED_ONCE.value] == {"checked": 3, "violations": 1,
                                                      "note": ""}


@pytest.mark.parametrize("ratio", [0.0, 0.15, 1.0])
def test_counts_of_the_plan(ratio: float) -> None:
    assert len(plan(1, 37, fault_ratio=ratio)) == 37


# -- the ledger invariants of one batch ------------------------------------------------------------
def _row(stan: str, *, mti: str = "0200", proc: str = "000000", rc: str = "00",
         status: str = "booked", amount: int = 100, kind: str | None = None,
         original_stan: str | None = None, original_id: int | None = None) -> LedgerEntry:
    fields = dict.fromkeys(LEDGER_COLUMNS)
    fields.update(received_at="2026-12-01T12:00:00", received_ts=0.0, mti=mti,
                  proc_code=proc, terminal_id="10000001", stan=stan, batch_no="000001",
                  amount_minor=amount, response_code=rc, status=status, kind=kind,
                  original_stan=original_stan, original_id=original_id)
    return LedgerEntry(**fields)


def _journal(stan: str, status: str, *, kind: str = "sale", amount: int = 100) -> JournalRecord:
    return JournalRecord(kind, stan, status, amount, "20261201120000")


def _checks(rows: list[LedgerEntry], journal: list[JournalRecord]) -> list[tuple[Check, str]]:
    findings, _ = check_batch(rows, journal)
    return [(f.check, f.stan) for f in findings]


def test_a_clean_batch_holds_every_ledger_invariant() -> None:
    rows = [_row("000011"), _row("000012", status="voided"),
            _row("000013", mti="0200", proc="200000", amount=100),  # the void
            _row("000014", rc="51", status="declined"),
            _row("000015", status="reversed"),
            _row("000016", mti="0400", kind="reversal", status="netted",
                 original_stan="000015", original_id=5)]
    journal = [_journal("000011", "approved"), _journal("000012", "voided"),
               _journal("000013", "approved", kind="void"),
               _journal("000014", "declined"), _journal("000015", "reversed")]
    findings, checked = check_batch(rows, journal)
    assert findings == []
    assert checked[Check.BOOKED_ONCE] == 5 and checked[Check.REVERSAL_ORIGINAL] == 1
    assert checked[Check.NO_DOUBLE_CHARGE] == 3


def test_an_approval_the_acquirer_never_booked_is_lost() -> None:
    assert _checks([], [_journal("000011", "approved")]) == [(Check.BOOKED_ONCE, "000011")]


def test_an_approval_booked_for_another_amount() -> None:
    findings, _ = check_batch([_row("000011", amount=99)], [_journal("000011", "approved")])
    assert [f.text for f in findings] == ["sale of 100 in the journal, booked as 99"]


def test_a_sale_booked_twice_is_a_double_charge() -> None:
    got = _checks([_row("000011"), _row("000011")], [_journal("000011", "approved")])
    assert (Check.NO_DOUBLE_CHARGE, "000011") in got and (Check.BOOKED_ONCE, "000011") in got


def test_a_charge_the_terminal_does_not_know() -> None:
    assert _checks([_row("000011")], []) == [(Check.NO_DOUBLE_CHARGE, "000011")]
    assert _checks([_row("000011")], [_journal("000011", "reversed")]) == [
        (Check.NO_DOUBLE_CHARGE, "000011")]


def test_a_transaction_left_pending_after_the_settlement() -> None:
    assert _checks([], [_journal("000011", "pending")]) == [(Check.BOOKED_ONCE, "000011")]


def test_a_reversal_without_its_original() -> None:
    rev = _row("000012", mti="0400", kind="reversal", status="nothing_to_net",
               original_stan="000011")
    assert _checks([rev], []) == [(Check.REVERSAL_ORIGINAL, "000011")]
    assert _checks([rev], [_journal("000011", "approved")]) == [
        (Check.BOOKED_ONCE, "000011"), (Check.REVERSAL_ORIGINAL, "000011")]
    assert _checks([rev], [_journal("000011", "reversed")]) == []
    netted = _row("000012", mti="0400", kind="reversal", status="netted",
                  original_stan="000011")
    assert _checks([netted], [_journal("000011", "reversed")]) == [
        (Check.REVERSAL_ORIGINAL, "000011")]


def test_a_sale_whose_refund_or_void_ended_unseen_is_named_no_more() -> None:
    sale = Sale("000012", "123456789012", 500)
    assert sale.refundable and sale.voidable
    sale.refunded = 200
    assert sale.refundable and not sale.voidable  # a partly refunded sale is not voided
    sale.unsure = True  # a refund cut off by a fault: the acquirer may have booked it
    assert not sale.refundable and not sale.voidable
    whole = Sale("000013", "", 300, refunded=300)
    assert not whole.refundable
    voided = Sale("000014", "", 300, voided=True)
    assert not voided.refundable and not voided.voidable

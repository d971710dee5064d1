"""The business day end to end: driver ⇄ pty ⇄ runner ⇄ firmware with the SQLite journal in
the state dir (fake kernel and acquirer through the runner's services seam)."""

from __future__ import annotations

from protocols.ecr import Prompt
from protocols.transactions import OriginalRef, TxnType
from rigs.terminal import Outcome, SerialTerminalLink
from sim.terminal.firmware import AuthJob, ReversalJob, SettleJob
from tests.terminal.fakes import MASKED, PAN, FakeCard, FakeCommsError
from tests.terminal.test_end_to_end import Terminal, link, terminal

__all__ = ["link", "terminal"]  # fixtures


def pay(terminal: Terminal, link: SerialTerminalLink, amount: int) -> Outcome:
    mark = len(link.events)
    link.start_transaction(TxnType.SALE, amount)
    got = link.wait_for_prompt_or_outcome((Prompt.INSERT_CARD,), timeout=2.0, since=mark)
    assert not isinstance(got, Outcome), got
    terminal.peer.send(t="card", present=True)
    link.wait_for_event(Prompt.ENTER_PIN, timeout=3.0, since=mark)
    link.enter_pin("2468")
    out = link.wait_outcome(timeout=5.0)
    terminal.peer.send(t="card", present=False)
    link.wait_for_event("CARD_REMOVED", timeout=2.0, since=mark)
    return out


def test_sale_void_query_totals_settle_shutdown(terminal: Terminal,
                                                link: SerialTerminalLink) -> None:
    link.wait_ready(timeout=3.0)
    assert link.login("01", "0000").ok and link.sign_in(timeout=3.0).ok
    for svc in terminal.services:
        svc.card = FakeCard(cvm="online_pin")
    sale = pay(terminal, link, 2500)
    kept = pay(terminal, link, 1200)
    assert sale.ok and kept.ok
    link.start_transaction(TxnType.VOID, None, original=OriginalRef.by_trace(sale.stan))
    void = link.wait_outcome(timeout=5.0)
    assert (void.result, void.amount_minor, void.masked_pan) == ("APPROVED", 2500, MASKED)
    assert "消费撤销 VOID" in link.receipts[-1]
    record = link.query(sale.stan)
    assert record.fields["status"] == "voided" and record.fields["pan"] == MASKED
    totals = link.totals()
    assert (totals.batch, totals.by_type["sale"], totals.by_type["void"],
            totals.by_entry["chip"]) == ("000002", (1, 1200), (1, 2500), (1, 1200))
    status = link.status()
    assert (status.journal_entries, status.reversal_pending, status.day_sales) == (3, False, 1200)
    assert link.shutdown().result == "UNSETTLED_BATCH"
    assert link.settle(timeout=3.0).result == "NOT_AUTHORISED"
    assert link.login("00", "123456").ok
    settlement = link.settle(timeout=5.0)
    assert (settlement.ok, settlement.balanced, settlement.batch, settlement.next_batch) == (
        True, True, "000002", "000003")
    (job,) = [j for j in terminal.services[0].jobs if isinstance(j, SettleJob)]
    assert (job.totals.debit_count, job.totals.debit_amount) == (1, 1200)
    assert link.status().batch_no == "000003" and link.shutdown().ok
    assert PAN not in link.transcript_text()


def test_lost_answer_is_reversed_after_a_power_cycle(terminal: Terminal,
                                                     link: SerialTerminalLink) -> None:
    link.wait_ready(timeout=3.0)
    link.login("01", "0000")
    link.sign_in(timeout=3.0)
    terminal.services[0].auth_result = FakeCommsError("response", "no response within 5.0 s")
    lost = pay(terminal, link, 3300)
    assert lost.result == "COMMS_ERROR" and link.status().reversal_pending
    terminal.power_off()
    terminal.power_on()  # a new process on the same state dir
    st = link.wait_ready(timeout=3.0)
    assert st.reversal_pending and not st.signed_in
    link.login("01", "0000")
    link.sign_in(timeout=3.0)
    assert pay(terminal, link, 3400).ok
    online = [j for j in terminal.services[-1].jobs if isinstance(j, (ReversalJob, AuthJob))]
    assert [type(j) for j in online] == [ReversalJob, AuthJob]
    rev = online[0]
    assert isinstance(rev, ReversalJob) and rev.entry.stan == int(lost.stan)
    assert rev.card is not None and rev.card.pan == PAN  # kept for the 0400 only
    assert not link.status().reversal_pending
    assert link.query(lost.stan).fields["status"] == "reversed"

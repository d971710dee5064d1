"""Steps of a merchant's business day: operators and roles, limits, the clock, refunds and
voids, reprint, query, totals, settlement and reconciliation, reversals, power loss.

Every Then that can proves its claim from outside the terminal's word: what crossed the wire
(``bench.acquirer.received()``), what the acquirer booked (``bench.acquirer.booked()``), the
supply, or the terminal's journal as the acquirer's ledger confirms it.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from pytest_bdd import given, parsers, then, when

from protocols.ecr import EntryMode, EventCode, Prompt, Result
from protocols.faults import FaultKind, FaultSpec
from protocols.transactions import OriginalRef, TxnType, transaction_type
from rigs.bench import Bench
from rigs.capabilities import Capability, needs
from rigs.cardholder import pay_by_chip
from rigs.errors import DeviceStateError, NoResponse, RigError
from rigs.host import LedgerEntry
from rigs.terminal import Outcome, Settlement
from steps.parsers import format_amount, step

log = logging.getLogger(__name__)

SETTLE_BOUND = 60.0
LOCK_AFTER = 3


def _creds(bench: Bench, role: str) -> tuple[str, str]:
    creds = bench.config.terminal.operators.get(role)
    assert creds is not None, f"the bench file has no terminal.operators.{role} credentials"
    return creds.id, creds.password


def _describe(o: Outcome) -> str:
    return f"{o.result} (host code {o.response_code or '-'}, display {o.display!r})"


def _login_admin(bench: Bench) -> None:
    op, password = _creds(bench, "admin")
    outcome = bench.terminal.login(op, password)
    assert outcome.ok, f"the administrator could not log in: {_describe(outcome)}"


def _login_operator(bench: Bench) -> None:
    op, password = _creds(bench, "operator")
    outcome = bench.terminal.login(op, password)
    assert outcome.ok, f"the operator could not log in: {_describe(outcome)}"


# -- operators ------------------------------------------------------------------------------
@dataclass
class Logins:
    outcomes: list[Outcome]


@when(parsers.parse("the operator logs in with a wrong password {n:d} times"),
      target_fixture="logins")
@when(parsers.parse("操作员连续{n:d}次输入错误密码登录"), target_fixture="logins")
def wrong_password(bench: Bench, n: int, request: pytest.FixtureRequest) -> Logins:
    op, password = _creds(bench, "operator")
    _as_admin_afterwards(request, bench, f"operator {op}'s lock",
                         lambda: bench.terminal.unlock(op))
    wrong = "9" * len(password) if password != "9" * len(password) else "8" * len(password)
    return Logins([bench.terminal.login(op, wrong) for _ in range(n)])


@then("each login is refused")
@then("每次登录都被拒绝")
def each_refused(logins: Logins) -> None:
    results = [o.result for o in logins.outcomes]
    assert all(not o.ok for o in logins.outcomes), f"a wrong password was accepted: {results}"
    assert results[:LOCK_AFTER - 1] == [Result.LOGIN_FAILED] * (LOCK_AFTER - 1), results


@then("the operator is locked even with the right password")
@then("操作员被锁定，正确密码也无法登录")
def locked(bench: Bench) -> None:
    op, password = _creds(bench, "operator")
    outcome = bench.terminal.login(op, password)
    assert outcome.result == Result.LOCKED, f"expected LOCKED, got {_describe(outcome)}"


@when("the administrator logs in and unlocks the operator")
@when("管理员登录并解锁操作员")
def admin_unlocks(bench: Bench) -> None:
    _login_admin(bench)
    op, _ = _creds(bench, "operator")
    outcome = bench.terminal.unlock(op)
    assert outcome.ok, f"the administrator could not unlock operator {op}: {_describe(outcome)}"


@then("the operator can log in again")
@then("操作员可以再次登录")
def can_log_in(bench: Bench) -> None:
    _login_operator(bench)


@when("the operator tries to settle the batch", target_fixture="settlement")
@when("操作员尝试结算", target_fixture="settlement")
def operator_settles(bench: Bench) -> Settlement:
    return bench.terminal.settle(timeout=SETTLE_BOUND)


@then("the terminal refuses because the operator is not authorised")
@then("终端拒绝：操作员无权限")
def not_authorised(settlement: Settlement) -> None:
    assert settlement.result == Result.NOT_AUTHORISED, \
        f"expected NOT_AUTHORISED, got {settlement.result} ({settlement.display!r})"


# -- limits ------------------------------------------------------------------------------------
@needs(Capability.CARDS)
@when("the cardholder tries to pay more than the per-transaction limit with the good card",
      target_fixture="purchase")
def pay_over_txn_limit(bench: Bench) -> Outcome:
    limit = bench.terminal.status().txn_limit
    assert limit, "the terminal reports no per-transaction limit"
    return pay_by_chip(bench, limit + 1, "good", bench.card_pin("good"))


@then("the purchase is refused because it is above the per-transaction limit")
def refused_txn_limit(purchase: Outcome) -> None:
    assert purchase.result == Result.LIMIT_EXCEEDED, \
        f"expected LIMIT_EXCEEDED, got {_describe(purchase)}"
    assert purchase.display, "the terminal showed no reason"


@then("the purchase is refused because it is above the daily limit")
def refused_daily_limit(purchase: Outcome) -> None:
    assert purchase.result == Result.DAILY_LIMIT_EXCEEDED, \
        f"expected DAILY_LIMIT_EXCEEDED, got {_describe(purchase)}"


def _as_admin_afterwards(request: pytest.FixtureRequest, bench: Bench, what: str,
                         act: Callable[[], Outcome]) -> None:
    """When the scenario ends (pass or fail), log in as the administrator, *act* (undo what the
    scenario changed in the terminal's non-volatile parameters) and log the operator back in;
    a failure is logged, and the bench's own restore still judges the terminal."""
    def undo() -> None:
        try:
            _login_admin(bench)
            outcome = act()
            if not outcome.ok:
                log.warning("restoring %s: %s", what, _describe(outcome))
            _login_operator(bench)
        except (RigError, AssertionError) as exc:
            log.warning("restoring %s failed: %s", what, exc)
    request.addfinalizer(undo)


@given(step("the daily limit is set just above a purchase of {amount:Amount}"))
def daily_limit_above(bench: Bench, amount: int, request: pytest.FixtureRequest) -> None:
    already = bench.terminal.status().day_sales
    _login_admin(bench)
    _as_admin_afterwards(request, bench, "the daily limit",
                         lambda: bench.terminal.set_parameter("daily_limit", ""))
    outcome = bench.terminal.set_parameter("daily_limit", str(already + amount + 1))
    assert outcome.ok, f"the administrator could not set the daily limit: {_describe(outcome)}"
    _login_operator(bench)


def _sale_requests(bench: Bench) -> list[object]:
    sale = transaction_type(TxnType.SALE)
    return [m for m in bench.acquirer.received(sale.mti)
            if m.fields.get("3", "") in ("", sale.proc_code)]


@needs(Capability.WIRE)
@then("no purchase request reached the acquirer")
@then("收单机构未收到消费请求")
def no_purchase_on_wire(bench: Bench) -> None:
    seen = _sale_requests(bench)
    assert not seen, f"the acquirer received {len(seen)} purchase request(s)"


@needs(Capability.WIRE)
@then("the acquirer received exactly one purchase request")
def one_purchase_on_wire(bench: Bench) -> None:
    seen = _sale_requests(bench)
    assert len(seen) == 1, f"the acquirer received {len(seen)} purchase requests, expected one"


# -- clock -------------------------------------------------------------------------------------
WRONG_BY = dt.timedelta(days=1, hours=1)
CLOCK_TOLERANCE = dt.timedelta(seconds=5)


@given("the administrator has set the terminal's clock a day and an hour wrong")
@given("管理员把终端时钟调错一天零一小时")
def clock_wrong(bench: Bench, request: pytest.FixtureRequest) -> None:
    _login_admin(bench)
    _as_admin_afterwards(request, bench, "the terminal's clock", lambda: bench.terminal.set_parameter(
        "clock", dt.datetime.now().strftime("%Y%m%d%H%M%S")))
    wrong = dt.datetime.now() - WRONG_BY
    outcome = bench.terminal.set_parameter("clock", wrong.strftime("%Y%m%d%H%M%S"))
    assert outcome.ok, f"could not set the clock: {_describe(outcome)}"
    shown = bench.terminal.status().clock
    assert shown is not None and abs(shown - wrong) < CLOCK_TOLERANCE, \
        f"the terminal shows {shown}, not the wrong clock {wrong}"


@needs(Capability.WIRE)
@then("the terminal's clock agrees with the time the acquirer sent")
@then("终端时钟与收单机构下发的时间一致")
def clock_from_host(bench: Bench) -> None:
    answers = [m for m in bench.acquirer.answered("0810") if m.response_code == "00"]
    assert answers, "no approved 0810 reached the terminal"
    f12, f13 = answers[-1].fields.get("12", ""), answers[-1].fields.get("13", "")
    shown = bench.terminal.status().clock
    assert shown is not None, "the terminal reports no clock"
    sent = dt.datetime.strptime(f"{shown.year}{f13}{f12}", "%Y%m%d%H%M%S")
    assert abs(shown - sent) < CLOCK_TOLERANCE + dt.timedelta(seconds=10), \
        f"terminal clock {shown} vs acquirer's 0810 time {sent} (fields 13/12 {f13}/{f12})"


# -- refunds and voids -------------------------------------------------------------------------
@needs(Capability.CARDS)
@given(step("the cardholder has paid {amount:Amount} by chip with the {card} card and its PIN"),
       target_fixture="purchase")
@given(step("持卡人已用{card}卡插卡支付{amount:Amount}元"), target_fixture="purchase")
def has_paid(bench: Bench, amount: int, card: str) -> Outcome:
    outcome = pay_by_chip(bench, amount, card, bench.card_pin(card))
    assert outcome.ok and outcome.result == Result.APPROVED, \
        f"the purchase this scenario starts from was not approved: {_describe(outcome)}"
    return outcome


def _original_by_reference(bench: Bench, purchase: Outcome) -> OriginalRef:
    """The original sale by RRN and date (MMDD), as the merchant reads them off the receipt;
    by its trace number when the terminal link reports no RRN (a cash-register protocol such
    as Concert names the original by trace)."""
    if not purchase.rrn:
        assert purchase.stan, "the purchase's answer names neither an RRN nor a trace number"
        return OriginalRef.by_trace(purchase.stan)
    record = bench.terminal.query(purchase.stan)
    when = record.fields.get("time", "")
    assert len(when) >= 8, f"the terminal's record of STAN {purchase.stan} has no date: {when!r}"
    return OriginalRef.by_rrn(purchase.rrn, when[4:8])


@when(step("the operator refunds {amount:Amount} of that purchase"), target_fixture="refund")
@when(step("操作员对该笔消费退货{amount:Amount}元"), target_fixture="refund")
def refunds(bench: Bench, purchase: Outcome, amount: int) -> Outcome:
    bench.terminal.start_transaction(TxnType.REFUND, amount,
                                     original=_original_by_reference(bench, purchase))
    return bench.terminal.wait_outcome(timeout=SETTLE_BOUND)


@then("the refund is approved")
@then("退货成功")
def refund_approved(refund: Outcome) -> None:
    assert refund.ok and refund.result == Result.APPROVED, \
        f"refund not approved: {_describe(refund)}"


@then(parsers.parse("the refund is declined by the acquirer with code {code}"))
@then(parsers.parse("退货被收单机构拒绝，应答码{code}"))
def refund_declined(refund: Outcome, code: str) -> None:
    assert refund.result == Result.DECLINED and refund.response_code == code, \
        f"expected a decline with code {code}, got {_describe(refund)}"


@when("the operator voids that purchase", target_fixture="void")
@when("操作员撤销该笔消费", target_fixture="void")
def voids(bench: Bench, purchase: Outcome) -> Outcome:
    bench.terminal.start_transaction(TxnType.VOID, None,
                                     original=OriginalRef.by_trace(purchase.stan))
    return bench.terminal.wait_outcome(timeout=SETTLE_BOUND)


@then("the void is approved")
@then("撤销成功")
def void_approved(void: Outcome) -> None:
    assert void.ok and void.result == Result.APPROVED, f"void not approved: {_describe(void)}"


@then("the void is refused")
@then("撤销被拒绝")
def void_refused(void: Outcome) -> None:
    assert not void.ok, f"a void after settlement was accepted: {_describe(void)}"


def _booked(bench: Bench, purchase: Outcome) -> list[LedgerEntry]:
    tid = bench.config.terminal.terminal_id
    return [e for e in bench.acquirer.booked() if e.terminal_id == tid]


def _refunds_of(entries: list[LedgerEntry], purchase: Outcome) -> list[LedgerEntry]:
    refund = transaction_type(TxnType.REFUND)
    return [e for e in entries if (e.mti, e.proc_code) == refund.iso_key
            and e.original_rrn == purchase.rrn and e.response_code == "00"]


@needs(Capability.LEDGER)
@then(step("the acquirer booked a refund of {amount:Amount} against that purchase"))
@then(step("收单机构记录了该笔消费的{amount:Amount}元退货"))
def booked_refund(bench: Bench, purchase: Outcome, amount: int) -> None:
    refunds = _refunds_of(_booked(bench, purchase), purchase)
    assert [e.amount_minor for e in refunds] == [amount], \
        f"expected one refund of {format_amount(amount)} against RRN {purchase.rrn}, the " \
        f"acquirer booked {[e.amount_minor for e in refunds]}"


@needs(Capability.LEDGER)
@then("the acquirer booked no refund against that purchase")
@then("收单机构没有记录该笔消费的退货")
def booked_no_refund(bench: Bench, purchase: Outcome) -> None:
    refunds = _refunds_of(_booked(bench, purchase), purchase)
    assert not refunds, f"the acquirer booked {len(refunds)} refund(s) against {purchase.rrn}"


@needs(Capability.LEDGER)
@then("the acquirer's ledger shows that purchase voided")
@then("收单机构账务中该笔消费已撤销")
def booked_void(bench: Bench, purchase: Outcome) -> None:
    void = transaction_type(TxnType.VOID)
    entries = _booked(bench, purchase)
    voids = [e for e in entries if (e.mti, e.proc_code) == void.iso_key
             and e.response_code == "00" and e.original_stan == purchase.stan]
    assert len(voids) == 1, f"expected one approved void of STAN {purchase.stan}, got {voids}"
    assert voids[0].amount_minor == purchase.amount_minor, \
        f"void of {voids[0].amount_minor}, the sale was {purchase.amount_minor}"
    sale = [e for e in entries if e.rrn == purchase.rrn and e.mti == "0200"
            and e.proc_code == transaction_type(TxnType.SALE).proc_code]
    assert sale and sale[0].status == "voided", \
        f"the acquirer's sale {purchase.rrn} is {sale[0].status if sale else 'missing'}"


# -- reprint, query, totals, receipts ----------------------------------------------------------
def _check_copies(bench: Bench, outcome: Outcome, txn: TxnType) -> None:
    """The merchant and customer copies of *outcome*'s receipt carry the type's title, the
    masked card, the amount, the reference, the batch and the trace number."""
    receipts = [r for r in bench.terminal.receipts if outcome.rrn and outcome.rrn in r]
    merchant = [r for r in receipts if "MERCHANT" in r.upper()]
    customer = [r for r in receipts if "CUSTOMER" in r.upper()]
    assert merchant and customer, \
        f"expected both copies with reference {outcome.rrn}, got {len(receipts)} receipt(s)"
    batch = outcome.fields.get("batch") or bench.terminal.status().batch_no
    for text in (merchant[-1], customer[-1]):
        for what, value in (("type", transaction_type(txn).receipt_title),
                            ("reference", outcome.rrn), ("trace", outcome.stan),
                            ("batch", batch), ("amount", format_amount(outcome.amount_minor or 0)),
                            ("masked card", outcome.masked_pan)):
            assert value and value in text, f"the receipt does not show the {what} {value!r}"


@then("both copies of the receipt show the sale with its reference, batch and trace numbers")
@then("签购单两联都显示交易类型、参考号、批次号和凭证号")
def both_copies(bench: Bench, purchase: Outcome) -> None:
    _check_copies(bench, purchase, TxnType.SALE)


@then("both copies of the refund receipt show the refund with its reference, batch and trace "
      "numbers")
@then("退货凭证两联都显示交易类型、参考号、批次号和凭证号")
def both_refund_copies(bench: Bench, refund: Outcome) -> None:
    _check_copies(bench, refund, TxnType.REFUND)


@when("the operator reprints the last receipt", target_fixture="reprint_mark")
@when("操作员重打印最后一笔签购单", target_fixture="reprint_mark")
def reprints(bench: Bench) -> int:
    mark = len(bench.terminal.receipts)
    outcome = bench.terminal.reprint()
    assert outcome.ok, f"reprint refused: {_describe(outcome)}"
    return mark


@then("the reprinted receipt is the same sale and is marked as a reprint")
@then("重打印的签购单与原交易一致并标明重打印")
def reprint_marked(bench: Bench, purchase: Outcome, reprint_mark: int) -> None:
    again = bench.terminal.receipts[reprint_mark:]
    assert again, "nothing was printed"
    text = again[-1]
    assert "REPRINT" in text.upper() or "重打印" in text, "the reprint is not marked as one"
    assert purchase.rrn in text and purchase.stan in text, \
        "the reprint is not the last sale (reference or trace differs)"


@when("the operator looks up that purchase by its trace number", target_fixture="record")
@when("操作员按凭证号查询该笔交易", target_fixture="record")
def looks_up(bench: Bench, purchase: Outcome) -> Outcome:
    return bench.terminal.query(purchase.stan)


@needs(Capability.LEDGER)
@then(step("the record shows the approved sale of {amount:Amount} as the acquirer booked it"))
def record_matches(bench: Bench, purchase: Outcome, record: Outcome, amount: int) -> None:
    assert record.ok, f"query refused: {_describe(record)}"
    fields = record.fields
    assert fields.get("type") == TxnType.SALE and fields.get("status") == "approved", fields
    assert int(fields.get("amt", "-1")) == amount, f"record amount {fields.get('amt')}"
    booked = [e for e in _booked(bench, purchase) if e.rrn == purchase.rrn and e.mti == "0200"]
    assert len(booked) == 1, f"the acquirer booked {len(booked)} entries with RRN {purchase.rrn}"
    entry = booked[0]
    assert (entry.amount_minor, entry.rrn, entry.auth_code, entry.pan_masked) == (
        amount, fields.get("rrn"), fields.get("auth"), fields.get("pan")), \
        f"terminal record {dict(fields)} differs from the acquirer's {entry}"


@when("the operator prints the totals report", target_fixture="totals")
@when("操作员打印交易汇总报表", target_fixture="totals")
def totals_report(bench: Bench) -> object:
    return bench.terminal.totals()


@needs(Capability.LEDGER, Capability.HOST_CONTROL)
@then("the totals by type equal what the acquirer booked for this batch")
@then("报表各类交易合计与收单机构账务一致")
def totals_match(bench: Bench, totals: object) -> None:
    from rigs.terminal import Totals

    assert isinstance(totals, Totals)
    tid = bench.config.terminal.terminal_id or ""
    host = bench.acquirer.control.totals(tid, totals.batch)
    all_sales = totals.by_type.get(TxnType.SALE, (0, 0))
    refunds = totals.by_type.get(TxnType.REFUND, (0, 0))
    # QR sales are paid through the QR platform, not the card acquirer: its totals lack them
    qr = totals.by_entry.get(EntryMode.QR.value, (0, 0))
    sales = (all_sales[0] - qr[0], all_sales[1] - qr[1])
    assert (sales[0], sales[1]) == (host.debit_count, host.debit_amount), \
        f"terminal card sales {sales} (all sales {all_sales}, QR {qr}) vs acquirer debits " \
        f"{host.debit_count}/{host.debit_amount}"
    assert (refunds[0], refunds[1]) == (host.credit_count, host.credit_amount), \
        f"terminal refunds {refunds} vs acquirer credits {host.credit_count}/" \
        f"{host.credit_amount}"


# -- settlement --------------------------------------------------------------------------------
@given("the administrator has settled the batch", target_fixture="settlement")
@given("管理员已完成日终结算", target_fixture="settlement")
@when("the administrator settles the batch", target_fixture="settlement")
@when("管理员进行日终结算", target_fixture="settlement")
def admin_settles(bench: Bench) -> Settlement:
    before = bench.terminal.status().batch_no
    _login_admin(bench)
    result = bench.terminal.settle(timeout=SETTLE_BOUND)
    _login_operator(bench)
    assert result.batch == before or not result.ok, \
        f"the terminal settled batch {result.batch}, its open batch was {before}"
    return result


@then("the settlement is balanced")
@then("结算平账")
def settled_balanced(settlement: Settlement) -> None:
    assert settlement.ok and settlement.balanced, \
        f"settlement {settlement.result}, balanced={settlement.balanced} ({settlement.display!r})"


@then("the batch number has advanced")
@then("批次号已递增")
def batch_advanced(bench: Bench, settlement: Settlement) -> None:
    now = bench.terminal.status().batch_no
    assert int(now) == int(settlement.batch) + 1 == int(settlement.next_batch), \
        f"settled batch {settlement.batch}, next {settlement.next_batch}, terminal now {now}"


@needs(Capability.WIRE)
@then("the acquirer received the settlement with the terminal's totals")
@then("收单机构收到结算请求及终端汇总")
def settlement_on_wire(bench: Bench, settlement: Settlement) -> None:
    requests = bench.acquirer.received("0500")
    assert requests, "no settlement request (0500) reached the acquirer"
    answers = bench.acquirer.answered("0510")
    assert answers and answers[-1].response_code == "00", "the acquirer did not answer 0510 00"
    totals = requests[-1].fields.get("48", "")
    assert len(totals) >= 30, f"field 48 of the 0500 is {totals!r}, not the totals"


@needs(Capability.HOST_CONTROL)
@given("the acquirer will disagree with the terminal's next settlement")
@given("收单机构将对下次结算对账不平")
def host_disagrees(bench: Bench) -> None:
    bench.acquirer.control.disagree_next(bench.config.terminal.terminal_id or "")


@then("the settlement is balanced after uploading every transaction of the batch")
@then("批上送所有交易后结算平账")
def balanced_after_upload(settlement: Settlement) -> None:
    assert settlement.ok and settlement.balanced, \
        f"settlement {settlement.result}, balanced={settlement.balanced}"
    assert settlement.uploaded >= 1, "the terminal uploaded no transaction"


@needs(Capability.WIRE)
@then("the acquirer received the batch upload before the second settlement")
@then("收单机构在第二次结算前收到批上送")
def upload_on_wire(bench: Bench, settlement: Settlement) -> None:
    msgs = [m for m in bench.acquirer.received() if m.mti in ("0500", "0320")]
    order = [m.mti for m in msgs]
    assert order[:1] == ["0500"] and order[-1] == "0500" and "0320" in order, \
        f"expected 0500, 0320…, 0500 on the wire, got {order}"
    uploads = [m for m in msgs if m.mti == "0320"]
    assert len(uploads) == settlement.uploaded + 1, \
        f"{len(uploads)} 0320 messages for {settlement.uploaded} uploads plus the end"


@when("the operator asks the terminal to shut down", target_fixture="shutdown")
@when("操作员要求终端关机", target_fixture="shutdown")
def asks_shutdown(bench: Bench) -> Outcome:
    return bench.terminal.shutdown()


@then("the terminal refuses because the batch is not settled")
@then("终端拒绝关机：批次未结算")
def shutdown_refused(shutdown: Outcome) -> None:
    assert shutdown.result == Result.UNSETTLED_BATCH, \
        f"expected UNSETTLED_BATCH, got {_describe(shutdown)}"
    assert shutdown.display, "the terminal gave no warning text"


@then("the terminal agrees to shut down")
@then("终端同意关机")
def shutdown_ok(shutdown: Outcome) -> None:
    assert shutdown.ok, f"shutdown refused after settlement: {_describe(shutdown)}"


# -- a lost response and its reversal ----------------------------------------------------------
@needs(Capability.HOST_CONTROL)
@given("the acquirer will not answer the next purchase")
@given("收单机构将不应答下一笔消费")
def host_drops_next_sale(bench: Bench) -> None:
    sale = transaction_type(TxnType.SALE)
    bench.acquirer.control.add_rule(
        {"terminal_id": bench.config.terminal.terminal_id, "mti": sale.mti,
         "proc_code": sale.proc_code}, {"drop": True}, times=1)


@then("the purchase fails with a communication error")
@then("交易失败并提示通讯错误")
def purchase_comms_error(purchase: Outcome) -> None:
    assert purchase.result == Result.COMMS_ERROR, \
        f"expected COMMS_ERROR, got {_describe(purchase)}"


@then("the terminal keeps a reversal pending", target_fixture="lost")
@then("终端保留待发冲正", target_fixture="lost")
def reversal_pending(bench: Bench, purchase: Outcome) -> Outcome:
    assert bench.terminal.status().reversal_pending, "the terminal has no reversal pending"
    return purchase


@needs(Capability.WIRE)
@then("the acquirer received the reversal before the next purchase")
@then("收单机构在下一笔消费前收到冲正")
def reversal_before_sale(bench: Bench, lost: Outcome) -> None:
    order = [(m.mti, m.stan) for m in bench.acquirer.received() if m.mti in ("0200", "0400")]
    reversals = [i for i, (mti, stan) in enumerate(order) if mti == "0400" and stan == lost.stan]
    assert reversals, f"no reversal (0400) of STAN {lost.stan} reached the acquirer: {order}"
    later_sales = [i for i, (mti, _) in enumerate(order) if mti == "0200" and i > reversals[0]]
    assert later_sales, f"the reversal did not come before the next purchase: {order}"
    assert not bench.terminal.status().reversal_pending, "the reversal is still pending"


@needs(Capability.LEDGER)
@then("the acquirer's ledger nets the lost purchase to zero")
@then("收单机构账务中丢失应答的消费已冲正为零")
def lost_sale_netted(bench: Bench, lost: Outcome) -> None:
    sale = transaction_type(TxnType.SALE)
    entries = [e for e in _booked(bench, lost) if e.stan == lost.stan
               and (e.mti, e.proc_code) == sale.iso_key]
    assert len(entries) == 1, f"the acquirer has {len(entries)} sale(s) with STAN {lost.stan}"
    assert entries[0].status == "reversed", \
        f"the lost sale is {entries[0].status} at the acquirer, not reversed"


# -- power lost in the middle of a sale --------------------------------------------------------
CUT_BOUND = 30.0
HOLD_ANSWER_S = 4.0
"""How long the acquirer holds its answer while the power is cut "after the request left"."""


@dataclass
class CutSale:
    stage: str
    amount: int
    journal_before: int
    receipts_before: int
    stan: str = ""


def _wait_prompt(bench: Bench, code: str, since: int) -> None:
    bench.terminal.wait_for_event(code, timeout=CUT_BOUND, since=since)


POLL_S = 0.05


def _wait_until(check: Callable[[], bool], bound: float, what: str) -> None:
    """Poll *check* (evidence read from a capture or a ledger, which publish no event) every
    POLL_S until it holds, at most *bound* seconds."""
    deadline = time.monotonic() + bound
    pause = threading.Event()
    while not check():
        if time.monotonic() >= deadline:
            raise NoResponse(f"waited {bound:.0f} s for {what}")
        pause.wait(POLL_S)


def _cut_power(bench: Bench) -> None:
    bench.inject(FaultSpec.of(FaultKind.POWER_CUT))


def _drive_until_cut(bench: Bench, stage: str, amount: int) -> None:
    """Start the sale, play the cardholder, and cut the power at *stage*."""
    terminal, cards = bench.terminal, bench.cards
    mark = len(terminal.events)
    terminal.start_transaction(TxnType.SALE, amount)
    _wait_prompt(bench, Prompt.INSERT_CARD, mark)
    cards.insert("good")
    _wait_prompt(bench, Prompt.ENTER_PIN, mark)
    if stage == "before the request leaves":
        bench.inject(FaultSpec.of(FaultKind.CABLE_PULL))  # the request cannot leave
        terminal.enter_pin(bench.card_pin("good"))
        _wait_prompt(bench, Prompt.CONNECTING, mark)
        _cut_power(bench)
        bench.clear_faults(FaultKind.CABLE_PULL)
    elif stage == "after the request left":
        sale = transaction_type(TxnType.SALE)
        bench.acquirer.control.add_rule(
            {"terminal_id": bench.config.terminal.terminal_id, "mti": sale.mti,
             "proc_code": sale.proc_code}, {"delay_s": HOLD_ANSWER_S}, times=1)
        terminal.enter_pin(bench.card_pin("good"))
        _wait_until(lambda: bool(bench.acquirer.received(sale.mti)), CUT_BOUND,
                    "the purchase request to reach the acquirer")
        _cut_power(bench)
    elif stage == "after the approval arrived":
        terminal.enter_pin(bench.card_pin("good"))
        _wait_prompt(bench, Prompt.PRINTING, mark)
        _cut_power(bench)
    elif stage == "while the receipt is printing":
        terminal.enter_pin(bench.card_pin("good"))
        _wait_prompt(bench, "PRINT", mark)  # the first copy is out
        _cut_power(bench)
    else:
        raise AssertionError(f"unknown stage {stage!r}")


@needs(Capability.CARDS, Capability.POWER, Capability.NETWORK, Capability.HOST_CONTROL,
       Capability.WIRE)
@when(step("the power is cut {stage} of a sale of {amount:Amount} with the good card"),
      target_fixture="cut")
def power_cut_during_sale(bench: Bench, stage: str, amount: int) -> CutSale:
    status = bench.terminal.status()
    cut = CutSale(stage, amount, status.journal_entries, len(bench.terminal.receipts))
    try:
        _drive_until_cut(bench, stage, amount)
    finally:
        if bench.cards.inserted is not None:
            bench.cards.remove()
    return cut


@when("the power comes back and the terminal restarts")
def power_back(bench: Bench) -> None:
    terminal = bench.terminal
    mark = len(terminal.events)
    bench.clear_faults(FaultKind.POWER_CUT)
    bound = bench.config.terminal.boot_timeout
    terminal.wait_for_event(EventCode.READY, timeout=bound, since=mark)
    try:  # the sale the cut interrupted: the reboot ends it without an outcome
        outcome = terminal.wait_outcome(timeout=1.0)
        raise AssertionError(f"the interrupted sale answered {_describe(outcome)} after a reboot")
    except DeviceStateError:
        pass
    terminal.wait_ready(timeout=bound)
    _login_operator(bench)


@then("the terminal's journal still holds that sale")
def journal_holds(bench: Bench, cut: CutSale) -> None:
    status = bench.terminal.status()
    assert status.journal_entries == cut.journal_before + 1, \
        f"the open batch's journal had {cut.journal_before} entries before the sale and has " \
        f"{status.journal_entries} after the restart"
    sent = bench.acquirer.sent_by_terminal("0200")
    if sent:
        cut.stan = sent[-1].stan
        record = bench.terminal.query(cut.stan)
        assert record.ok and int(record.fields.get("amt", "-1")) == cut.amount, \
            f"the journal's record of STAN {cut.stan} is {dict(record.fields)}"


@needs(Capability.LEDGER)
@then("after signing in again and one more sale the acquirer has charged the card at most once")
def charged_at_most_once(bench: Bench, cut: CutSale) -> None:
    if not bench.terminal.status().signed_in:
        outcome = bench.terminal.sign_in()
        assert outcome.ok, f"sign-in after the restart failed: {_describe(outcome)}"
    after = pay_by_chip(bench, 1, "good", bench.card_pin("good"))
    assert after.ok, f"the sale after the restart failed: {_describe(after)}"
    status = bench.terminal.status()
    assert not status.reversal_pending, "a reversal is still pending after the next sale"
    sale = transaction_type(TxnType.SALE)
    standing = [e for e in bench.acquirer.booked() if (e.mti, e.proc_code) == sale.iso_key
                and e.amount_minor == cut.amount and e.status == "booked"]
    assert len(standing) <= 1, f"the card was charged {len(standing)} times for the cut sale"


@needs(Capability.LEDGER)
@then("the sale is either booked once with its receipt printed or reversed")
def booked_and_printed_or_reversed(bench: Bench, cut: CutSale) -> None:
    sale = transaction_type(TxnType.SALE)
    entries = [e for e in bench.acquirer.booked() if (e.mti, e.proc_code) == sale.iso_key
               and e.amount_minor == cut.amount]
    standing = [e for e in entries if e.status == "booked"]
    if standing:
        rrn = standing[0].rrn or ""
        printed = [r for r in bench.terminal.receipts[cut.receipts_before:]
                   if rrn and rrn in r and "CUSTOMER" in r.upper()]
        assert printed, f"the sale {rrn} stands at the acquirer but its customer copy was " \
                        f"never printed"
    else:
        assert all(e.status in ("reversed", "nothing_to_net") or e.response_code != "00"
                   for e in entries), f"the cut sale is neither standing nor reversed: {entries}"


# -- anomalies ---------------------------------------------------------------------------------
@needs(Capability.HOST_CONTROL)
@given(parsers.parse("the acquirer will decline the next {n:d} purchases with code {code}"))
@given(parsers.parse("收单机构将以应答码{code}拒绝接下来{n:d}笔消费"))
def host_declines(bench: Bench, n: int, code: str) -> None:
    sale = transaction_type(TxnType.SALE)
    bench.acquirer.control.add_rule(
        {"terminal_id": bench.config.terminal.terminal_id, "mti": sale.mti,
         "proc_code": sale.proc_code}, {"response_code": code}, times=n)


@needs(Capability.CARDS)
@when(step("the cardholder tries to pay {amount:Amount} by chip with the {card} card and its "
           "PIN {n:d} times"), target_fixture="purchases")
def tries_n_times(bench: Bench, amount: int, card: str, n: int) -> list[Outcome]:
    return [pay_by_chip(bench, amount, card, bench.card_pin(card)) for _ in range(n)]


@needs(Capability.WIRE)
@then(parsers.parse("each purchase is declined by the acquirer with code {code}"))
def each_declined(bench: Bench, purchases: list[Outcome], code: str) -> None:
    for p in purchases:
        assert p.result == Result.DECLINED and p.response_code == code, \
            f"expected a decline with code {code}, got {_describe(p)}"
    answered = {m.stan: m.response_code for m in bench.acquirer.answered("0210")}
    for p in purchases:
        assert answered.get(p.stan) == code, \
            f"the acquirer's 0210 for STAN {p.stan} on the wire says {answered.get(p.stan)!r}"


@then(parsers.parse("the totals report flags repeated declines of the {card} card"))
def flags_declines(totals: object, purchases: list[Outcome], card: str) -> None:
    from rigs.terminal import Totals

    assert isinstance(totals, Totals)
    masked = purchases[0].masked_pan
    assert masked and f"declines:{masked}" in totals.anomalies, \
        f"no 'declines:{masked}' among the anomalies {totals.anomalies}"


@then("the totals report flags the purchase refused for the limit")
def flags_limit(totals: object, purchase: Outcome) -> None:
    from rigs.terminal import Totals

    assert isinstance(totals, Totals)
    limits = [a for a in totals.anomalies if a.startswith("limit:")]
    assert limits, f"no limit breach among the anomalies {totals.anomalies}"
    if purchase.stan:
        assert f"limit:{purchase.stan}" in limits, \
            f"the refused purchase STAN {purchase.stan} is not flagged: {limits}"


# -- a card pulled before it takes the approval ------------------------------------------------
@needs(Capability.HOST_CONTROL)
@given(parsers.parse("the acquirer will hold its answer to the next purchase for {seconds:d} "
                     "seconds"))
def host_holds_answer(bench: Bench, seconds: int) -> None:
    sale = transaction_type(TxnType.SALE)
    bench.acquirer.control.add_rule(
        {"terminal_id": bench.config.terminal.terminal_id, "mti": sale.mti,
         "proc_code": sale.proc_code}, {"delay_s": float(seconds)}, times=1)


@needs(Capability.CARDS, Capability.WIRE)
@when(step("the cardholder pulls the card out while the terminal waits for the answer to a "
           "purchase of {amount:Amount}"), target_fixture="purchase")
def card_pulled_while_online(bench: Bench, amount: int) -> Outcome:
    terminal = bench.terminal
    sale = transaction_type(TxnType.SALE)
    mark = len(terminal.events)
    terminal.start_transaction(TxnType.SALE, amount)
    _wait_prompt(bench, Prompt.INSERT_CARD, mark)
    bench.cards.insert("good")
    _wait_prompt(bench, Prompt.ENTER_PIN, mark)
    before = len(bench.acquirer.received(sale.mti))
    terminal.enter_pin(bench.card_pin("good"))
    _wait_until(lambda: len(bench.acquirer.received(sale.mti)) > before, CUT_BOUND,
                "the purchase request to reach the acquirer")
    removed = len(terminal.events)
    bench.cards.remove()
    terminal.wait_for_event(EventCode.CARD_REMOVED, timeout=CUT_BOUND, since=removed)
    return terminal.wait_outcome(timeout=CUT_BOUND)


@then("the purchase fails with a card error saying the approval will be reversed")
def card_error_reversed(purchase: Outcome) -> None:
    assert purchase.result == Result.CARD_ERROR, \
        f"expected CARD_ERROR, got {_describe(purchase)}"
    assert "REVERSED" in purchase.display.upper() or "冲正" in purchase.display, \
        f"the display does not say the approval is reversed: {purchase.display!r}"

"""Steps about payments: the cardholder pays, the terminal answers, receipts, the ledger."""

from __future__ import annotations

import re

from pytest_bdd import then, when

from protocols.ecr import Reason, Result
from protocols.transactions import TxnType, transaction_type
from rigs.bench import Bench
from rigs.capabilities import Capability, needs
from rigs.cardholder import pay_by_chip
from rigs.errors import CapabilityMissing
from rigs.terminal import Outcome
from steps.parsers import MASKED_PAN_RE, format_amount, step


@needs(Capability.CARDS)
@when(step("the cardholder pays {amount:Amount} by chip with the {card} card and its PIN"),
      target_fixture="purchase")
@when(step("the cardholder tries to pay {amount:Amount} by chip with the {card} card and its PIN"),
      target_fixture="purchase")
@when(step("持卡人用{card}卡插卡支付{amount:Amount}元并输入密码"), target_fixture="purchase")
def pays_by_chip_with_pin(bench: Bench, amount: int, card: str) -> Outcome:
    return pay_by_chip(bench, amount, card, bench.card_pin(card))


@needs(Capability.CARDS)
@when(step("the cardholder tries to pay {amount:Amount} by chip with the {card} card"),
      target_fixture="purchase")
@when(step("持卡人尝试用{card}卡插卡支付{amount:Amount}元"), target_fixture="purchase")
def tries_to_pay_by_chip(bench: Bench, amount: int, card: str) -> Outcome:
    return pay_by_chip(bench, amount, card, pin=None)


def _describe(o: Outcome) -> str:
    return f"{o.result} (host code {o.response_code or '-'}, display {o.display!r})"


@then("the purchase is approved")
@then("交易成功")
def purchase_approved(bench: Bench, purchase: Outcome) -> None:
    assert purchase.ok and purchase.result == Result.APPROVED, \
        f"purchase not approved: {_describe(purchase)}"
    if purchase.response_code:
        assert purchase.response_code == "00", f"host response code {purchase.response_code}"
        return
    # A terminal link that does not carry the host's code (Concert): the acquirer's own answer
    # on the wire says it, for the trace the terminal reported.
    if not bench.has(Capability.WIRE):
        raise CapabilityMissing("the terminal link reports no host response code and the bench "
                                "captures no wire to read it from")
    answers = [m for m in bench.acquirer.answered("0210") if m.stan == purchase.stan]
    assert answers, f"no answer from the acquirer for STAN {purchase.stan or '(none reported)'}"
    assert answers[-1].response_code == "00", \
        f"the acquirer answered STAN {purchase.stan} with {answers[-1].response_code}"


def _refused(purchase: Outcome, result: Result) -> None:
    assert not purchase.ok and purchase.result == result, \
        f"expected the terminal to refuse with {result}, it answered {_describe(purchase)}"


@then("the purchase is refused because the terminal is not signed in")
@then("交易被拒绝，提示未签到")
def refused_not_signed_in(purchase: Outcome) -> None:
    _refused(purchase, Result.NOT_SIGNED_IN)


@then("the purchase is refused because the printer is out of paper")
@then("交易被拒绝，提示打印机缺纸")
def refused_paper_out(purchase: Outcome) -> None:
    _refused(purchase, Result.PAPER_OUT)


@then("the purchase is refused because the battery is low")
@then("交易被拒绝，提示电量低")
def refused_low_battery(purchase: Outcome) -> None:
    _refused(purchase, Result.LOW_BATTERY)


@then("the purchase is refused with a card error shown on the display")
@then("交易被拒绝，屏幕显示读卡失败")
def refused_card_error(purchase: Outcome) -> None:
    _refused(purchase, Result.CARD_ERROR)
    assert purchase.display, "no card error text on the display"


@then("the purchase is refused because the stripe could not be read")
@then("交易被拒绝，提示磁条无法读取")
def refused_unreadable(purchase: Outcome) -> None:
    _refused(purchase, Result.CARD_ERROR)
    assert purchase.reason == Reason.UNREADABLE, \
        f"refused for {purchase.reason or 'no reason'}, expected {Reason.UNREADABLE}"


@then(step("a customer receipt is printed showing the amount {amount:Amount} and the card "
           "number masked"))
@then(step("打印的持卡人存根显示金额{amount:Amount}元且卡号已屏蔽"))
def receipt_printed(bench: Bench, purchase: Outcome, amount: int) -> None:
    receipts = bench.terminal.receipts
    customer = [r for r in receipts if "CUSTOMER" in r.upper() or "持卡人" in r]
    assert customer, f"no customer copy among {len(receipts)} printed receipt(s)"
    text = customer[-1]
    assert format_amount(amount) in text, f"amount {format_amount(amount)} not on the receipt"
    assert MASKED_PAN_RE.search(text), "no masked card number (first 6, last 4) on the receipt"
    masked = purchase.masked_pan or ""
    if len(masked) >= 10:
        full = re.compile(rf"{re.escape(masked[:6])}\d{{3,9}}{re.escape(masked[-4:])}")
        assert not full.search(text), "the full card number is printed on the receipt"


@needs(Capability.LEDGER)
@then(step("the acquirer's ledger shows the approved purchase of {amount:Amount}"))
@then(step("收单机构账务中有这笔{amount:Amount}元的成功交易"))
def ledger_shows(bench: Bench, purchase: Outcome, amount: int) -> None:
    tid = bench.config.terminal.terminal_id
    sale_row = transaction_type(TxnType.SALE)
    sales = [e for e in bench.acquirer.booked()
             if (e.mti, e.proc_code) == sale_row.iso_key and e.terminal_id == tid
             and int(e.stan or -1) == int(purchase.stan)]
    assert len(sales) == 1, f"expected one sale with STAN {purchase.stan} from terminal {tid} " \
                            f"in this scenario, the acquirer has {len(sales)}"
    sale = sales[0]
    assert sale.amount_minor == amount, f"ledger amount {sale.amount_minor}, expected {amount}"
    assert sale.response_code == "00", f"ledger response code {sale.response_code}"
    assert sale.rrn == purchase.rrn, f"ledger RRN {sale.rrn}, terminal printed {purchase.rrn}"
    assert sale.pan_masked == purchase.masked_pan, \
        f"ledger card {sale.pan_masked}, terminal card {purchase.masked_pan}"

"""Steps about paying by QR code, both ways: the terminal shows the order's code and the
customer's wallet scans and pays it (merchant-presented), or the terminal scans the payment
code the customer's wallet shows (customer-presented), possibly waiting for the wallet
password.

The rig plays the customer's wallet against the QR payment platform (``bench.qr.wallet``) and
the terminal's scanner (``bench.cards.present_code``).  The Thens prove the payment from the
platform's own ledger, not from the terminal's word.
"""

from __future__ import annotations

from pytest_bdd import then, when

from protocols.ecr import EntryMode, Prompt, QrMode
from protocols.qr import OrderStatus, Wallet
from protocols.transactions import TxnType
from rigs.bench import Bench
from rigs.capabilities import Capability, needs
from rigs.terminal import Outcome, TerminalEvent
from steps.parsers import step

QR_BOUND = 60.0
"""Longest wait for the terminal's QR prompts and its result (s)."""


def _wallet(name: str) -> Wallet:
    try:
        return Wallet(name)
    except ValueError:
        raise AssertionError(f"no wallet {name!r}; known: {', '.join(Wallet)}") from None


def _prompt(bench: Bench, code: Prompt, since: int) -> TerminalEvent | Outcome:
    got = bench.terminal.wait_for_prompt_or_outcome((code,), timeout=QR_BOUND, since=since)
    return got if isinstance(got, Outcome) else got[1]


@needs(Capability.QR)
@when(step("the customer pays {amount:Amount} by scanning the terminal's QR code with the "
           "{wallet} wallet"), target_fixture="purchase")
@when(step("顾客用{wallet}钱包扫描终端的二维码支付{amount:Amount}元"), target_fixture="purchase")
def pays_merchant_presented(bench: Bench, amount: int, wallet: str) -> Outcome:
    terminal = bench.terminal
    since = len(terminal.events)
    terminal.start_transaction(TxnType.SALE, amount, entry=EntryMode.QR, qr=QrMode.MERCHANT)
    shown = _prompt(bench, Prompt.SHOW_QR, since)
    if isinstance(shown, Outcome):
        return shown
    assert shown.qr_code, "the terminal showed no QR code"
    bench.qr.wallet.pay_order(shown.qr_code, wallet=_wallet(wallet))
    return terminal.wait_outcome(timeout=QR_BOUND)


@needs(Capability.QR, Capability.CARDS)
@when(step("the customer pays {amount:Amount} by showing the {wallet} wallet's payment code "
           "to the terminal"), target_fixture="purchase")
@when(step("顾客出示{wallet}钱包的付款码支付{amount:Amount}元"), target_fixture="purchase")
def pays_customer_presented(bench: Bench, amount: int, wallet: str) -> Outcome:
    return _customer_presented(bench, amount, wallet, password=False)


@needs(Capability.QR, Capability.CARDS)
@when(step("the customer pays {amount:Amount} by showing the {wallet} wallet's payment code, "
           "typing the wallet password when asked"), target_fixture="purchase")
@when(step("顾客出示{wallet}钱包的付款码支付{amount:Amount}元并按提示输入支付密码"),
      target_fixture="purchase")
def pays_customer_presented_password(bench: Bench, amount: int, wallet: str) -> Outcome:
    return _customer_presented(bench, amount, wallet, password=True)


def _customer_presented(bench: Bench, amount: int, wallet: str, password: bool) -> Outcome:
    terminal = bench.terminal
    code = bench.qr.wallet.new_payment_code(_wallet(wallet), password=password)
    since = len(terminal.events)
    terminal.start_transaction(TxnType.SALE, amount, entry=EntryMode.QR, qr=QrMode.CUSTOMER)
    asked = _prompt(bench, Prompt.SCAN_CODE, since)
    if isinstance(asked, Outcome):
        return asked
    bench.cards.present_code(code.auth_code)
    if password:
        waiting = _prompt(bench, Prompt.WAIT_PASSWORD, since)
        if isinstance(waiting, Outcome):
            return waiting
        bench.qr.wallet.confirm()
    return terminal.wait_outcome(timeout=QR_BOUND)


@then(step("the QR payment is approved, paid by the {wallet} wallet"))
@then(step("扫码支付成功，付款钱包为{wallet}"))
def qr_approved(purchase: Outcome, wallet: str) -> None:
    assert purchase.ok, f"QR payment not approved: {purchase.result} {purchase.reason or ''} " \
                        f"{purchase.display!r}"
    assert purchase.entry_mode == EntryMode.QR and purchase.wallet == _wallet(wallet), \
        f"entry {purchase.entry_mode}, wallet {purchase.wallet}"


@needs(Capability.QR_LEDGER)
@then(step("the QR platform booked that order paid for {amount:Amount}"))
@then(step("二维码支付平台记录该订单已支付{amount:Amount}元"))
def platform_booked(bench: Bench, purchase: Outcome, amount: int) -> None:
    orders = [o for o in bench.qr.orders() if o.order_id == purchase.qr_order_id]
    assert orders, f"the platform has no order {purchase.qr_order_id!r} from this scenario"
    order = orders[-1]
    assert order.status is OrderStatus.SUCCESS, f"the platform's order is {order.status}"
    assert order.amount == amount, f"the platform booked {order.amount}, expected {amount}"

"""QR payments in the pure firmware (docs/terminal-behaviour.md, "QR payments"; OP-08, OP-09):
merchant-presented (create, show, poll until paid / closed / cancelled) and customer-presented
(scan, micropay, USERPAYING polled until paid / cancelled), refusals, the platform unreachable
and the order of unknown outcome cancelled at the next chance.  Every QrJob answered by hand."""

from __future__ import annotations

from typing import Any

from protocols.ecr import EntryMode, MsgCode, Prompt, Result
from protocols.qr import ErrorCode, Operation, OrderKind, OrderStatus, QrOrder, Wallet
from protocols.transactions import SALE
from sim.terminal.firmware import QrAnswer, QrJob, State, TerminalFirmware
from sim.terminal.journal import EntryState, MemoryJournal
from sim.terminal.nvram import MemoryNvram
from tests.terminal.fakes import (
    NOW,
    FakeSignInResult,
    FirmwareHands,
    codes,
    ecr_out,
    fast_profile,
    final,
    job_of,
)

PU = SALE.ecr_code
CODE = "134567890123456789"  # a wechat payment code's shape
URL = "qrsim://pay/0123456789abcdef01234567"


def order(status: OrderStatus, *, kind: OrderKind = OrderKind.NATIVE, amount: int = 1888,
          wallet: Wallet | None = None) -> QrOrder:
    paid = status in (OrderStatus.SUCCESS,)
    return QrOrder(order_id="Q2026000000000001", out_trade_no="x", merchant_id="898100012340001",
                   terminal_id="10000001", kind=kind, amount=amount, status=status,
                   code_url=URL if kind is OrderKind.NATIVE else None,
                   wallet=wallet or (Wallet.WECHAT if paid or kind is OrderKind.MICROPAY
                                     else None),
                   paid_amount=amount if paid else 0)


class Till(FirmwareHands):
    def __init__(self, **profile: Any) -> None:
        self.journal = MemoryJournal()
        base: dict[str, Any] = dict(qr_wait_s=5.0, qr_scan_s=3.0, qr_password_s=4.0,
                                    qr_poll_s=1.0)
        base.update(profile)
        self.fw = TerminalFirmware(fast_profile(**base), MemoryNvram(), journal=self.journal,
                                   clock=lambda: NOW, qr=True)
        self.boot()
        assert codes(self.req(MsgCode.LOGIN, op="01", pw="0000")) == ["LI:OK"]
        assert codes(self.result(job_of(self.req(MsgCode.SIGN_IN)), FakeSignInResult())) == [
            "SI:APPROVED"]

    def answer(self, out: Any, op: Operation, ans: QrAnswer) -> Any:
        job = job_of(out)
        assert isinstance(job, QrJob) and job.op is op, job
        return self.result(job, ans)

    def merchant(self) -> Any:
        out = self.req(PU, amt="1888", cur="156", entry="qr", qr="merchant")
        assert codes(out) == ["PG:CONNECTING"]
        job = job_of(out)
        assert (job.op, job.amount_minor, job.out_trade_no) == (
            Operation.CREATE, 1888, f"10000001{self.fw.nv.batch_no:06d}{job.out_trade_no[-6:]}")
        out = self.answer(out, Operation.CREATE, QrAnswer(order(OrderStatus.NOTPAY)))
        (shown,) = [m for m in ecr_out(out) if m.get("code") == Prompt.SHOW_QR]
        assert shown.code == MsgCode.PROGRESS and shown.get("qrcode") == URL
        assert "18.88" in shown.get("text") and self.fw.state is State.WAIT_QR
        return out

    def customer(self) -> Any:
        out = self.req(PU, amt="1888", cur="156", entry="qr", qr="customer")
        assert codes(out) == ["PG:CONNECTING", "PG:SCAN_CODE"]
        out = self.hw(t="scan", code=CODE)
        job = job_of(out)
        assert (job.op, job.auth_code) == (Operation.MICROPAY, CODE)
        return out

    def printed(self) -> Any:
        out: list[Any] = []
        for _ in range(4):
            out += self.advance(0.02)
        return out


def test_merchant_presented_paid_prints_the_order_and_the_wallet() -> None:
    till = Till()
    till.merchant()
    out = till.advance(1.0)  # the first query
    out = till.answer(out, Operation.QUERY, QrAnswer(order(OrderStatus.NOTPAY)))
    assert ecr_out(out) == [] and till.fw.state is State.WAIT_QR
    out = till.answer(till.advance(1.0), Operation.QUERY, QrAnswer(order(OrderStatus.SUCCESS)))
    out += till.printed()
    msg = final(out)
    assert msg.get("rc") == Result.APPROVED and msg.get("entry") == EntryMode.QR
    assert (msg.get("order"), msg.get("wallet"), msg.get("qr")) == (
        "Q2026000000000001", "wechat", "merchant")
    receipts = [m.get("text") for m in ecr_out(out) if m.code == MsgCode.PRINT]
    # the receipt is scrubbed as every printout: a PAN-like digit run of the id is masked
    assert len(receipts) == 2 and all("订单号 ORDER: Q202600" in r and r.count("0001\n") and
                                      "钱包 WALLET: wechat" in r for r in receipts)
    (entry,) = till.journal.entries(till.fw.nv.batch_no)
    assert (entry.state, entry.entry_mode, entry.qr_order, entry.app_label) == (
        EntryState.APPROVED, "qr", "Q2026000000000001", "wechat")


def test_merchant_presented_not_paid_in_time_is_closed_timeout() -> None:
    till = Till(qr_wait_s=2.0)
    till.merchant()
    till.answer(till.advance(1.0), Operation.QUERY, QrAnswer(order(OrderStatus.NOTPAY)))
    out = till.advance(1.0)  # the bound: no more queries, the order is closed
    out = till.answer(out, Operation.CLOSE, QrAnswer(order(OrderStatus.CLOSED)))
    assert final(out).get("rc") == Result.TIMEOUT and till.fw.state is State.IDLE
    assert till.journal.entries(till.fw.nv.batch_no) == []


def test_merchant_presented_closed_by_the_platform_is_a_timeout() -> None:
    till = Till()
    till.merchant()
    out = till.answer(till.advance(1.0), Operation.QUERY, QrAnswer(order(OrderStatus.CLOSED)))
    assert final(out).get("rc") == Result.TIMEOUT


def test_merchant_presented_cancelled_by_the_cashier_cancels_the_order() -> None:
    till = Till()
    till.merchant()
    out = till.req(MsgCode.CANCEL)
    assert codes(out)[0] == "CN:OK"
    out = till.answer(out, Operation.CANCEL, QrAnswer(order(OrderStatus.REVOKED)))
    assert final(out).get("rc") == Result.CANCELLED and till.fw.state is State.IDLE


def test_cancel_while_a_query_is_under_way_cancels_after_it() -> None:
    till = Till()
    till.merchant()
    query = till.advance(1.0)
    assert codes(till.req(MsgCode.CANCEL)) == ["CN:OK"]
    out = till.answer(query, Operation.QUERY, QrAnswer(order(OrderStatus.SUCCESS)))
    out = till.answer(out, Operation.CANCEL, QrAnswer(order(OrderStatus.REVOKED)))
    assert final(out).get("rc") == Result.CANCELLED  # paid meanwhile: the payment revoked


def test_platform_unreachable_is_comms_error_and_a_maybe_paid_order_is_cancelled_next() -> None:
    till = Till()
    out = till.req(PU, amt="1888", cur="156", entry="qr", qr="merchant")
    out = till.answer(out, Operation.CREATE, QrAnswer(comms="connection refused"))
    assert final(out).get("rc") == Result.COMMS_ERROR and till.fw.qr_unknown == []
    out = till.answer(till.customer(), Operation.MICROPAY, QrAnswer(comms="no answer"))
    assert final(out).get("rc") == Result.COMMS_ERROR and len(till.fw.qr_unknown) == 1
    unknown = till.fw.qr_unknown[0]
    out = till.req(PU, amt="100", cur="156", entry="qr", qr="merchant")
    job = job_of(out)
    assert (job.op, job.out_trade_no) == (Operation.CANCEL, unknown)
    out = till.answer(out, Operation.CANCEL, QrAnswer(order(OrderStatus.REVOKED)))
    assert job_of(out).op is Operation.CREATE and till.fw.qr_unknown == []


def test_customer_presented_paid_at_once() -> None:
    till = Till()
    out = till.customer()
    out = till.answer(out, Operation.MICROPAY,
                      QrAnswer(order(OrderStatus.SUCCESS, kind=OrderKind.MICROPAY)))
    out += till.printed()
    msg = final(out)
    assert (msg.get("rc"), msg.get("wallet"), msg.get("qr")) == (
        Result.APPROVED, "wechat", "customer")
    (entry,) = till.journal.entries(till.fw.nv.batch_no)
    assert entry.masked_pan == "134567********6789" and CODE not in str(ecr_out(out))


def test_customer_presented_user_paying_then_paid() -> None:
    till = Till()
    out = till.customer()
    out = till.answer(out, Operation.MICROPAY,
                      QrAnswer(order(OrderStatus.USERPAYING, kind=OrderKind.MICROPAY)))
    (wait,) = [m for m in ecr_out(out) if m.get("code") == Prompt.WAIT_PASSWORD]
    assert wait.get("text") == "请用户输入支付密码 WAITING FOR THE CUSTOMER'S PASSWORD"
    out = till.answer(till.advance(1.0), Operation.QUERY,
                      QrAnswer(order(OrderStatus.USERPAYING, kind=OrderKind.MICROPAY)))
    assert codes(out) == []  # the prompt is shown once
    out = till.answer(till.advance(1.0), Operation.QUERY,
                      QrAnswer(order(OrderStatus.SUCCESS, kind=OrderKind.MICROPAY)))
    assert final(out + till.printed()).get("rc") == Result.APPROVED


def test_customer_presented_no_password_in_time_cancels_the_order() -> None:
    till = Till(qr_password_s=1.5)
    out = till.customer()
    till.answer(out, Operation.MICROPAY,
                QrAnswer(order(OrderStatus.USERPAYING, kind=OrderKind.MICROPAY)))
    till.answer(till.advance(1.0), Operation.QUERY,
                QrAnswer(order(OrderStatus.USERPAYING, kind=OrderKind.MICROPAY)))
    out = till.advance(0.6)
    out = till.answer(out, Operation.CANCEL,
                      QrAnswer(order(OrderStatus.REVOKED, kind=OrderKind.MICROPAY)))
    assert final(out).get("rc") == Result.TIMEOUT


def test_customer_presented_cancelled_while_the_password_is_awaited() -> None:
    till = Till()
    out = till.customer()
    till.answer(out, Operation.MICROPAY,
                QrAnswer(order(OrderStatus.USERPAYING, kind=OrderKind.MICROPAY)))
    out = till.req(MsgCode.CANCEL)
    out = till.answer(out, Operation.CANCEL,
                      QrAnswer(order(OrderStatus.REVOKED, kind=OrderKind.MICROPAY)))
    assert final(out).get("rc") == Result.CANCELLED


def test_customer_presented_refused_shows_the_platform_code() -> None:
    till = Till()
    out = till.customer()
    out = till.answer(out, Operation.MICROPAY, QrAnswer(
        order(OrderStatus.PAYERROR, kind=OrderKind.MICROPAY), refused=ErrorCode.NOT_ENOUGH,
        message="balance short"))
    msg = final(out)
    assert (msg.get("rc"), msg.get("reason"), msg.get("qrc")) == (
        Result.DECLINED, "qr_refused", "NOT_ENOUGH")
    assert "NOT_ENOUGH" in msg.get("text")
    (entry,) = till.journal.entries(till.fw.nv.batch_no)
    assert (entry.state, entry.response_code) == (EntryState.DECLINED, "NOT_ENOUGH")


def test_no_code_scanned_in_time_is_a_timeout() -> None:
    till = Till(qr_scan_s=1.0)
    till.req(PU, amt="1888", cur="156", entry="qr", qr="customer")
    out = till.advance(1.1)
    assert final(out).get("rc") == Result.TIMEOUT


def test_bad_qr_requests_are_refused() -> None:
    till = Till()
    assert final(till.req(PU, amt="1", cur="156", entry="qr")).get("rc") == Result.BAD_REQUEST
    assert final(till.req(PU, amt="1", cur="156", entry="chip", qr="merchant")).get(
        "rc") == Result.BAD_REQUEST
    off = Till()
    off.fw.qr_enabled = False
    assert "QR" in final(off.req(PU, amt="1", cur="156", entry="qr", qr="merchant")).get("text")


def test_a_qr_sale_is_not_in_the_iso_settlement() -> None:
    from sim.terminal import books
    till = Till()
    out = till.customer()
    till.answer(out, Operation.MICROPAY,
                QrAnswer(order(OrderStatus.SUCCESS, kind=OrderKind.MICROPAY)))
    till.printed()
    entries = till.journal.entries(till.fw.nv.batch_no)
    assert books.settlement_totals(entries, till.fw.transactions).debit_count == 0
    assert books.by_entry(entries, till.fw.transactions)["qr"] == (1, 1888)

"""End to end QR payments (OP-08, OP-09): the rig's driver ⇄ pty ⇄ runner ⇄ firmware, and the
real QR platform (``python -m sim.qr`` as a subprocess on 127.0.0.1, ephemeral port) reached
by the runner's real platform client; the rig's wallet pays over the platform's control
socket.  Card kernel and acquirer are fakes (the ``make_services`` seam); the journal is real.
A merchant-presented sale: the code shown on PG SHOW_QR is paid by the wallet.  A
customer-presented sale: the wallet's code goes to the scanner (the harness ``scan`` the probe
forwards), the platform answers USERPAYING, the customer types the password, the terminal's
poll sees it paid."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from protocols import ecr
from protocols.qr import OrderStatus, Wallet
from rigs.qr import SocketQrWallet, SqliteQrPlatformLedger
from rigs.terminal import SerialTerminalLink
from rigs.transport import serial_transport
from sim.terminal.__main__ import build_qr_client
from sim.terminal.firmware import QrAnswer, QrJob, TerminalFirmware
from sim.terminal.journal import SqliteJournal, journal_key
from sim.terminal.nvram import FileNvram
from sim.terminal.runner import KernelServices, TerminalRunner
from sim.terminal.slot import HarnessSlot
from tests.qr.test_e2e import TERMINALS, Running, running  # noqa: F401  (the fixture)
from tests.terminal.fakes import FakeHarnessPeer, FakeServices, fast_profile

BOUND = 10.0


class QrServices(FakeServices):
    """Fake card kernel and acquirer; the QR platform for real (KernelServices.qr)."""

    def __init__(self, slot: HarnessSlot, kernel: KernelServices) -> None:
        super().__init__(slot)
        self.kernel = kernel

    def qr(self, job: QrJob) -> QrAnswer:
        return self.kernel.qr(job)


@pytest.fixture
def till(tmp_path: Path, running: Running  # noqa: F811
         ) -> Iterator[tuple[SerialTerminalLink, FakeHarnessPeer, SocketQrWallet,
                             SqliteQrPlatformLedger]]:
    profile = fast_profile(qr_wait_s=8.0, qr_password_s=8.0, qr_poll_s=0.2, qr_request_s=3.0)
    client = build_qr_client(profile, f"{running.host}:{running.port}", str(TERMINALS))
    assert client is not None
    master, slave = os.openpty()
    bench_sock, term_sock = socket.socketpair()
    bench = FakeHarnessPeer(bench_sock, {})
    journal = SqliteJournal(tmp_path, data_key=journal_key(bytes(16)))
    firmware = TerminalFirmware(profile, FileNvram(tmp_path), journal=journal, qr=True)

    def services(slot: HarnessSlot) -> QrServices:
        return QrServices(slot, KernelServices(slot, profile, profile.host, profile.port,
                                               qr_client=client))

    runner = TerminalRunner(ecr_fd=master, harness=term_sock, firmware=firmware,
                            make_services=services)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    bench.send(t="rail", volts=7.40)
    bench.send(t="paper", present=True)
    link = SerialTerminalLink("term", serial_transport(os.ttyname(slave)))
    wallet = SocketQrWallet("qr-wallet", running.control)
    ledger = SqliteQrPlatformLedger("qr-ledger", running.ledger)
    link.open()
    wallet.open()
    ledger.open()
    try:
        link.wait_ready(timeout=3.0)
        assert link.login("01", "0000").result == "OK"
        assert link.sign_in(timeout=3.0).result == "APPROVED"
        yield link, bench, wallet, ledger
    finally:
        ledger.close()
        wallet.close()
        link.close()
        runner.stop()
        thread.join(timeout=2.0)
        journal.close()
        bench.close()
        term_sock.close()
        os.close(slave)


def test_merchant_presented_sale_paid_by_the_wallet(till: tuple[
        SerialTerminalLink, FakeHarnessPeer, SocketQrWallet, SqliteQrPlatformLedger]) -> None:
    link, _, wallet, ledger = till
    mark = ledger.mark()
    link.start_purchase(1888, entry="qr", qr=ecr.QrMode.MERCHANT)
    shown = link.wait_for_event(ecr.Prompt.SHOW_QR, BOUND)
    assert shown.qr_code.startswith("qrsim://pay/") and "18.88" in shown.text
    paid = wallet.pay_order(shown.qr_code, wallet=Wallet.ALIPAY)
    assert paid.status is OrderStatus.SUCCESS
    outcome = link.wait_outcome(BOUND)
    assert (outcome.result, outcome.entry_mode, outcome.qr_mode, outcome.wallet) == (
        "APPROVED", "qr", "merchant", "alipay")
    assert outcome.qr_order_id == paid.order_id and outcome.fields.get("print") == "OK"
    (booked,) = ledger.orders(mark, status=OrderStatus.SUCCESS)
    assert (booked.order_id, booked.amount, booked.terminal_id) == (
        paid.order_id, 1888, "10000001")
    assert any("扫码支付 QR PAYMENT" in r and "钱包 WALLET: alipay" in r for r in link.receipts)


def test_customer_presented_sale_with_the_wallet_password(till: tuple[
        SerialTerminalLink, FakeHarnessPeer, SocketQrWallet, SqliteQrPlatformLedger]) -> None:
    link, bench, wallet, ledger = till
    code = wallet.new_payment_code(Wallet.WECHAT, password=True)
    link.start_purchase(2500, entry="qr", qr=ecr.QrMode.CUSTOMER)
    link.wait_for_event(ecr.Prompt.SCAN_CODE, BOUND)
    bench.send(t="scan", code=code.auth_code)  # what the probe forwards from a rig's SCAN
    waiting = link.wait_for_event(ecr.Prompt.WAIT_PASSWORD, BOUND)
    assert waiting.text == "请用户输入支付密码 WAITING FOR THE CUSTOMER'S PASSWORD"
    confirmed = wallet.confirm()
    assert confirmed.status is OrderStatus.SUCCESS
    outcome = link.wait_outcome(BOUND)
    assert (outcome.result, outcome.qr_mode, outcome.wallet, outcome.qr_order_id) == (
        "APPROVED", "customer", "wechat", confirmed.order_id)
    assert code.auth_code not in "\n".join(link.receipts)

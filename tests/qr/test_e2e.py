"""End to end: ``python -m sim.qr`` as a subprocess on 127.0.0.1, merchant-presented and
customer-presented payments through the terminal's client and the rig's wallet driver, the
rig reading the platform's ledger, and a clean stop on SIGTERM."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from protocols.qr import OPERATIONS, ErrorCode, OrderStatus, Wallet
from protocols.qrclient import HttpTransport, QrPlatformClient, QrRefused, wait_for_payment
from rigs.qr import SocketQrPlatformControl, SocketQrWallet, SqliteQrPlatformLedger
from sim.qr.config import load_terminals

REPO = Path(__file__).resolve().parents[2]
TERMINALS = REPO / "fixtures/qr/terminals.yaml"
RULES = REPO / "fixtures/qr/rules.yaml"
BOUND = 15.0


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    host: str
    port: int
    ledger: Path
    control: Path


def _ready_line(proc: subprocess.Popen[bytes], bound: float) -> str:
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    line = b""
    deadline = time.monotonic() + bound
    try:
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(timeout=left):
                raise AssertionError(f"python -m sim.qr said nothing within {bound} s")
            chunk = os.read(proc.stdout.fileno(), 1)
            if not chunk:
                break
            line += chunk
    finally:
        sel.close()
    return line.decode().strip()


@pytest.fixture
def running(short_dir: Path) -> Iterator[Running]:
    ledger, control = short_dir / "qr.sqlite", short_dir / "qr.ctl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sim.qr", "--listen", "127.0.0.1:0", "--ledger", str(ledger),
         "--control", str(control), "--terminals", str(TERMINALS), "--rules", str(RULES),
         "--order-ttl", "30", "--user-paying-timeout", "20", "--code-ttl", "20",
         "--log-level", "WARNING"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = _ready_line(proc, BOUND)
        assert line.startswith("READY 127.0.0.1:"), line
        host, port = line.split()[1].rsplit(":", 1)
        yield Running(proc, host, int(port), ledger, control)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(BOUND)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(BOUND)
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        proc.stderr.close()


def test_both_ways_to_pay_end_to_end(running: Running) -> None:
    term = load_terminals(TERMINALS)["10000001"]
    client = QrPlatformClient(HttpTransport(running.host, running.port, timeout=3.0),
                              terminal_id=term.terminal_id, merchant_id=term.merchant_id,
                              key=term.sign_key)
    wallet = SocketQrWallet("qr-wallet", running.control)
    control = SocketQrPlatformControl("qr-control", running.control)
    ledger = SqliteQrPlatformLedger("qr-ledger", running.ledger)
    for part in (wallet, control, ledger):
        part.open()
    try:
        mark = ledger.mark()
        # OP-08, merchant-presented: the terminal shows the code, the customer scans and pays
        shown = client.create_order("E2E-N1", 1888, "lunch")
        assert shown.status is OrderStatus.NOTPAY and shown.code_url
        wallet.pay_order(shown.code_url, wallet=Wallet.WECHAT)
        paid = wait_for_payment(client, out_trade_no="E2E-N1", timeout_s=BOUND,
                                interval_s=0.1)
        assert paid.status is OrderStatus.SUCCESS and paid.paid_amount == 1888
        # OP-09, customer-presented with the wallet password: the terminal polls until paid
        code = wallet.new_payment_code(Wallet.ALIPAY, password=True)
        charged = client.micropay("E2E-M1", 520, code.auth_code)
        assert charged.status is OrderStatus.USERPAYING

        def customer_types_password() -> None:
            time.sleep(0.3)
            wallet.confirm(out_trade_no="E2E-M1")

        typing = threading.Thread(target=customer_types_password)
        typing.start()
        done = wait_for_payment(client, out_trade_no="E2E-M1", timeout_s=BOUND,
                                interval_s=0.1)
        typing.join(BOUND)
        assert done.status is OrderStatus.SUCCESS and done.wallet is Wallet.ALIPAY
        # customer-presented, declined; then a refund of the first order (OP-13)
        declined_code = wallet.new_payment_code(Wallet.WECHAT, password=True)
        client.micropay("E2E-M2", 60, declined_code.auth_code)
        wallet.refuse(out_trade_no="E2E-M2")
        assert wait_for_payment(client, out_trade_no="E2E-M2", timeout_s=BOUND,
                                interval_s=0.1).status is OrderStatus.PAYERROR
        client.refund("E2E-R1", 888, out_trade_no="E2E-N1")
        with pytest.raises(QrRefused) as err:
            client.refund("E2E-R2", 1001, out_trade_no="E2E-N1")
        assert err.value.code is ErrorCode.REFUND_EXCEEDED
        # a platform rule, set by the rig, refuses the next create
        control.add_rule({"operation": "create"}, {"error": "SYSTEM_ERROR"}, times=1)
        with pytest.raises(QrRefused, match="SYSTEM_ERROR"):
            client.create_order("E2E-N2", 1)
        # what the platform booked, read by the rig
        booked = {o.out_trade_no: o for o in ledger.orders(mark)}
        assert {k: v.status for k, v in booked.items()} == {
            "E2E-N1": OrderStatus.REFUND, "E2E-M1": OrderStatus.SUCCESS,
            "E2E-M2": OrderStatus.PAYERROR}
        assert booked["E2E-N1"].refunded_amount == 888
        assert code.auth_code not in ledger.text(mark)
        ops = {r.operation for r in ledger.requests(mark)}
        assert ops >= {"create", "query", "micropay", "refund"} and ops <= set(
            op.value for op in OPERATIONS)
        assert [r.result for r in ledger.requests(mark)][-1] == "SYSTEM_ERROR"
        for part in (wallet, control):
            part.restore_nominal()
            assert part.is_nominal()
    finally:
        for part in (wallet, control, ledger):
            part.close()
    running.proc.send_signal(signal.SIGTERM)
    assert running.proc.wait(BOUND) == 0
    assert not running.control.exists()


def test_a_bad_terminals_file_stops_it_with_the_key_path(tmp_path: Path) -> None:
    bad = tmp_path / "terminals.yaml"
    bad.write_text('terminals:\n  - terminal_id: "10000001"\n    merchant_id: "898100012340001"\n'
                   '    sign_key: "ABCD"\n')
    done = subprocess.run(
        [sys.executable, "-m", "sim.qr", "--listen", "127.0.0.1:0", "--ledger",
         str(tmp_path / "l.sqlite"), "--terminals", str(bad)],
        cwd=REPO, capture_output=True, timeout=BOUND)
    assert done.returncode == 2 and done.stdout == b""
    err = done.stderr.decode()
    assert "terminals[0].sign_key: expected a key of 16 to 64 bytes, got 2 bytes" in err
    assert "ABCD" not in err and "Traceback" not in err


def test_bad_options_are_named(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "sim.qr", "--listen", "nowhere", "--ledger",
                           "x", "--terminals", str(TERMINALS)],
                          cwd=REPO, capture_output=True, timeout=BOUND)
    assert done.returncode == 2 and b"expected HOST:PORT, e.g. 198.18.0.20:8600" in done.stderr
    done = subprocess.run([sys.executable, "-m", "sim.qr", "--listen", "127.0.0.1:0",
                           "--ledger", "x", "--terminals", str(TERMINALS), "--order-ttl", "0"],
                          cwd=REPO, capture_output=True, timeout=BOUND)
    assert done.returncode == 2 and b"must be above 0 seconds" in done.stderr

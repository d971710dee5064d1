"""Runner + driver end to end over a real pty pair and a harness socketpair.

The kernel and acquirer are fakes injected through the runner's ``make_services`` seam; the
fake kernel still drives the real HarnessSlot (card_power/capdu over the harness).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from protocols.ecr import EventCode, FaultCode, Prompt
from protocols.transactions import TRANSACTIONS, OriginalRef, TransactionTable
from rigs.errors import DeviceStateError, NoResponse
from rigs.terminal import Outcome, SerialTerminalLink
from rigs.transport import serial_transport
from sim.terminal.firmware import AuthJob, TerminalFirmware
from sim.terminal.journal import SqliteJournal, journal_key
from sim.terminal.nvram import FileNvram
from sim.terminal.runner import TerminalRunner
from sim.terminal.slot import HarnessSlot
from tests.terminal.fakes import (
    MASKED,
    PAN,
    PROFILE_PATH,
    REFUND,
    TEST_TABLE,
    FakeHarnessPeer,
    FakeServices,
    FakeTxn,
    fast_profile,
)

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Terminal:
    master: int
    slave_path: str
    state_dir: Path
    peer: FakeHarnessPeer
    term_sock: socket.socket
    services: list[FakeServices] = field(default_factory=list)
    runner: TerminalRunner | None = None
    thread: threading.Thread | None = None
    transactions: TransactionTable = TRANSACTIONS
    journal: SqliteJournal | None = None

    def power_on(self) -> None:
        self.journal = SqliteJournal(  # the state dir's, as python -m sim.terminal
            self.state_dir, data_key=journal_key(fast_profile().master_key))
        fw = TerminalFirmware(fast_profile(), FileNvram(self.state_dir), journal=self.journal,
                              transactions=self.transactions)

        def make(slot: HarnessSlot) -> FakeServices:
            svc = FakeServices(slot)
            self.services.append(svc)
            return svc

        self.runner = TerminalRunner(ecr_fd=self.master, harness=self.term_sock, firmware=fw,
                                     make_services=make)
        self.thread = threading.Thread(target=self.runner.run, daemon=True)
        self.thread.start()
        self.peer.send(t="rail", volts=7.40)
        self.peer.send(t="paper", present=True)

    def power_off(self) -> None:
        if self.runner is not None and self.thread is not None:
            self.runner.stop()
            self.thread.join(timeout=2.0)
            assert not self.thread.is_alive(), "runner did not stop within 2 s"
        self.runner = self.thread = None
        if self.journal is not None:
            self.journal.close()
            self.journal = None


@pytest.fixture(params=[TRANSACTIONS], ids=["real-table"])
def terminal(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Terminal]:
    """A terminal running the firmware with the table in ``request.param`` (override with
    ``@pytest.mark.parametrize("terminal", [TABLE], indirect=True)``)."""
    master, slave = os.openpty()
    bench_sock, term_sock = socket.socketpair()
    peer = FakeHarnessPeer(bench_sock)
    term = Terminal(master, os.ttyname(slave), tmp_path, peer, term_sock,
                    transactions=request.param)
    try:
        term.power_on()
        yield term
    finally:
        term.power_off()
        peer.close()
        term_sock.close()
        os.close(slave)
        os.close(master)


@pytest.fixture
def link(terminal: Terminal) -> Iterator[SerialTerminalLink]:
    drv = SerialTerminalLink("term", serial_transport(terminal.slave_path),
                             transactions=terminal.transactions)
    drv.open()
    try:
        yield drv
    finally:
        drv.close()


def test_purchase_end_to_end(terminal: Terminal, link: SerialTerminalLink) -> None:
    st = link.wait_ready(timeout=3.0)
    assert (st.state, st.signed_in, st.paper_present, st.battery_low) == (
        "IDLE", False, True, False)
    link.start_purchase(100)
    assert link.wait_outcome(timeout=2.0).result == "NOT_LOGGED_IN"
    assert link.login("01", "0000").result == "OK"
    assert link.sign_in(timeout=3.0).result == "APPROVED"
    mark = len(link.events)
    link.start_purchase(2500)
    link.wait_for_event(Prompt.INSERT_CARD, timeout=2.0, since=mark)
    terminal.peer.send(t="card", present=True)
    link.wait_for_event(Prompt.ENTER_PIN, timeout=3.0, since=mark)
    link.enter_pin("2468")
    out = link.wait_outcome(timeout=5.0)
    assert (out.result, out.ok, out.masked_pan, out.amount_minor, out.auth_code) == (
        "APPROVED", True, MASKED, 2500, "123456")
    assert [job.pin for job in terminal.services[0].jobs if hasattr(job, "pin")] == ["2468"]
    assert len(link.receipts) == 2 and all(MASKED in r and PAN not in r for r in link.receipts)
    codes = [e.code for e in link.events[mark:]]
    assert codes[:5] == ["INSERT_CARD", "CARD_INSERTED", "READING_CARD", "ENTER_PIN",
                         "PROCESSING"]
    assert {"booting", "idle", "card", "comms", "printing"} <= set(terminal.peer.loads())
    with terminal.peer.lock:
        slot_msgs = [o["t"] for o in terminal.peer.seen if o["t"] in ("card_power", "capdu")]
    assert slot_msgs == ["card_power", "capdu", "card_power"]
    text = link.transcript_text()
    # " k=2" (with its separator): STATUS's "clock=2026…" must not count as a PIN digit
    assert "KY(KEY) k=*" in text and " k=2" not in text and PAN not in text
    assert "pw=****" in text
    assert link.status().batch_no == "000002"
    assert link.is_nominal()


def test_paper_out_event_and_refusal(terminal: Terminal, link: SerialTerminalLink) -> None:
    link.wait_ready(timeout=3.0)
    link.login("01", "0000")
    link.sign_in(timeout=3.0)
    mark = len(link.events)
    terminal.peer.send(t="paper", present=False)
    assert link.wait_for_event(EventCode.PAPER_OUT, timeout=2.0, since=mark).kind == "EVENT"
    link.start_purchase(100)
    assert link.wait_outcome(timeout=2.0).result == "PAPER_OUT"


def test_reboot_mid_transaction_loses_sign_in_not_the_driver(
        terminal: Terminal, link: SerialTerminalLink) -> None:
    link.wait_ready(timeout=3.0)
    link.login("01", "0000")
    link.sign_in(timeout=3.0)
    link.start_purchase(100)
    link.wait_for_event(Prompt.INSERT_CARD, timeout=2.0)
    terminal.power_off()  # the process is gone: nothing answers
    with pytest.raises(NoResponse, match=r"no PURCHASE outcome within 0.3 s"):
        link.wait_outcome(timeout=0.3)
    terminal.power_on()
    with pytest.raises(DeviceStateError, match="rebooted"):
        link.wait_outcome(timeout=3.0)
    st = link.wait_ready(timeout=3.0)
    assert (st.signed_in, st.operator) == (False, None)
    assert st.batch_no == "000002"  # NVRAM survived
    link.login("01", "0000")
    link.start_purchase(100)
    assert link.wait_outcome(timeout=2.0).result == "NOT_SIGNED_IN"


def test_unpowered_terminal_wait_ready_times_out(terminal: Terminal,
                                                 link: SerialTerminalLink) -> None:
    terminal.power_off()
    with pytest.raises(NoResponse, match=r"wait_ready\(\): terminal not ready within 0.6 s"):
        link.wait_ready(timeout=0.6)


def test_module_entry_point_boots_and_stops_on_sigterm(tmp_path: Path) -> None:
    master, slave = os.openpty()
    bench_sock, term_sock = socket.socketpair()
    proc = None
    drv = SerialTerminalLink("term", serial_transport(os.ttyname(slave)))
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sim.terminal", "--ecr-fd", str(master),
             "--harness-fd", str(term_sock.fileno()), "--state-dir", str(tmp_path),
             "--profile", str(PROFILE_PATH), "--host", "198.18.0.20:8583"],
            pass_fds=(master, term_sock.fileno()), cwd=ROOT, stderr=subprocess.PIPE)
        bench_sock.sendall(b'{"t":"rail","volts":6.5}\n{"t":"paper","present":true}\n')
        drv.open()
        st = drv.wait_ready(timeout=5.0)
        assert (st.state, st.battery_low, st.supply_volts) == ("IDLE", True, 6.5)
        assert (tmp_path / "terminal-nvram.json").exists()
        assert (tmp_path / "terminal-journal.sqlite").exists()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5.0) == 0
        assert proc.stderr is not None
        assert b"Traceback" not in proc.stderr.read()
    finally:
        drv.close()
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5.0)
        if proc is not None and proc.stderr is not None:
            proc.stderr.close()
        for s in (bench_sock, term_sock):
            s.close()
        os.close(slave)
        os.close(master)


def test_module_entry_point_refuses_a_network_interface_that_is_not_there(
        tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sim.terminal", "--ecr-fd", "0", "--harness-fd", "0",
         "--state-dir", str(tmp_path), "--profile", str(PROFILE_PATH), "--netif", "nosuchif9"],
        cwd=ROOT, capture_output=True, text=True, timeout=10.0, stdin=subprocess.DEVNULL,
        check=False)
    assert done.returncode == 2, done.stderr
    assert ("--netif nosuchif9: carrier of nosuchif9: cannot read "
            "/sys/class/net/nosuchif9/carrier") in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("terminal", [TEST_TABLE], indirect=True, ids=["test-table"])
def test_second_transaction_type_end_to_end(terminal: Terminal,
                                            link: SerialTerminalLink) -> None:
    """A test-only refund row (card, original, no PIN) through runner, firmware and driver."""
    link.wait_ready(timeout=3.0)
    link.login("01", "0000")
    assert link.sign_in(timeout=3.0).result == "APPROVED"
    link.start_transaction(FakeTxn.REFUND, 800)  # no original: the terminal refuses
    refused = link.wait_outcome(timeout=2.0)
    assert refused.result == "BAD_REQUEST" and "ostan" in refused.display
    mark = len(link.events)
    link.start_transaction(FakeTxn.REFUND, 800, original=OriginalRef.by_trace(7))
    prompts = (Prompt.INSERT_CARD, Prompt.ENTER_PIN)
    got = link.wait_for_prompt_or_outcome(prompts, timeout=2.0, since=mark)
    assert not isinstance(got, Outcome) and got[1].code == Prompt.INSERT_CARD
    terminal.peer.send(t="card", present=True)
    out = link.wait_for_prompt_or_outcome(prompts, timeout=5.0, since=got[0] + 1)
    assert isinstance(out, Outcome), f"the refund asked for {out[1].code}"
    assert (out.result, out.masked_pan, out.amount_minor) == ("APPROVED", MASKED, 800)
    (auth,) = [j for j in terminal.services[0].jobs if isinstance(j, AuthJob)]
    assert (auth.txn_type, auth.original, auth.pin) == (REFUND, OriginalRef.by_trace(7), None)
    assert len(link.receipts) == 2 and all("退货 REFUND" in r for r in link.receipts)
    assert "RF(REFUND) amt=800" in link.transcript_text()
    assert link.is_nominal()


def test_bad_harness_line_is_skipped_not_fatal(terminal: Terminal, link: SerialTerminalLink,
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="sim.terminal.runner")
    link.wait_ready(timeout=3.0)
    # a bad line between two good ones, in one write: the good ones still count
    terminal.peer.sock.sendall(b'{"t":"paper","present":false}\nnot json ' + PAN.encode() +
                               b'\n{"t":"rail","volts":6.5}\n{"no_type":1}\n')
    st_ev = link.wait_for_event(EventCode.LOW_BATTERY, timeout=2.0)
    assert st_ev.kind == "EVENT"
    st = link.status()
    assert (st.paper_present, st.battery_low) == (False, True)
    bad = [r.getMessage() for r in caplog.records if "bad harness line" in r.getMessage()]
    assert len(bad) == 2, bad  # the non-JSON line and the object without "t"
    assert PAN not in caplog.text and MASKED in bad[0]


# ------------------------------------------------------------------------- power faults

def test_hung_terminal_acknowledges_nothing_until_a_power_cycle(
        terminal: Terminal, link: SerialTerminalLink) -> None:
    link.wait_ready(timeout=3.0)
    terminal.peer.send(t="rail", volts=6.10)  # below min_operating, above brown-out
    deadline = time.monotonic() + 5.0
    while True:  # a STATUS sent before the hang fell due may still be answered
        try:
            link.status(timeout=0.5)
        except NoResponse as exc:
            assert "did not acknowledge STATUS" in str(exc)
            break
        assert time.monotonic() < deadline, "the terminal still answers 5 s after the dip"
    terminal.peer.send(t="rail", volts=7.40)  # back above the range, but no reset came
    with pytest.raises(NoResponse, match="did not acknowledge STATUS"):
        link.status(timeout=0.5)
    assert "hung" not in [o.get("t") for o in terminal.peer.seen]  # a hung MCU says nothing
    terminal.power_off()
    terminal.power_on()
    assert link.wait_ready(timeout=3.0).state == "IDLE"


def test_cutoff_says_so_then_powers_off(terminal: Terminal, link: SerialTerminalLink) -> None:
    link.wait_ready(timeout=3.0)
    mark = len(link.events)
    terminal.peer.send(t="rail", volts=6.30)
    ev = link.wait_for_event(EventCode.SHUTDOWN, timeout=3.0, since=mark)
    assert ev.faults == (FaultCode.BATTERY_CRITICAL,) and "BATTERY EMPTY" in ev.text
    notice = terminal.peer.wait_for("power_off", timeout=3.0)
    assert (notice["reason"], notice["volts"]) == ("cutoff", 6.3)
    assert terminal.thread is not None
    terminal.thread.join(timeout=3.0)
    assert not terminal.thread.is_alive(), "the runner did not end after powering off"
    terminal.runner = terminal.thread = None  # it ended by itself
    with pytest.raises(NoResponse):
        link.status(timeout=0.5)

"""Driver ⇄ pty ⇄ runner ⇄ firmware with a swipe, a tap and a signature: the harness carries
``swipe`` and ``field`` to the firmware and ``cl_atr`` / ``cl_rapdu`` to the contactless
reader; the rig's Outcome and events carry the entry mode, the CVM and the signature.  Fake
kernel and acquirer (through the runner's ``make_services`` seam), real journal."""

from __future__ import annotations

import dataclasses
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from protocols.ecr import Message, Prompt
from rigs.errors import ConfigError, DecodeError
from rigs.terminal import Outcome, SerialTerminalLink
from rigs.transport import serial_transport
from sim.terminal.emv import PinCheck
from sim.terminal.firmware import TerminalFirmware
from sim.terminal.journal import SqliteJournal, journal_key
from sim.terminal.nvram import FileNvram
from sim.terminal.runner import TerminalRunner
from sim.terminal.slot import HarnessSlot
from tests.terminal.fakes import (
    MASKED,
    PAN,
    FakeCard,
    FakeHarnessPeer,
    FakeServices,
    fast_profile,
)
from tests.terminal.test_entry_modes import tracks

#: The slot's card and the card in the contactless field answer.
ANSWERS: dict[tuple[str, object], tuple[str, str, str]] = {
    ("card_power", True): ("atr", "atr", "3b6500002063cb6600"),
    ("cl_power", True): ("cl_atr", "atr", "3b8f8001"),
    ("capdu", None): ("rapdu", "data", "9000"),
    ("cl_capdu", None): ("cl_rapdu", "data", "9000"),
}


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[tuple[SerialTerminalLink, FakeHarnessPeer, FakeServices]]:
    master, slave = os.openpty()
    bench_sock, term_sock = socket.socketpair()
    bench = FakeHarnessPeer(bench_sock, ANSWERS)
    journal = SqliteJournal(tmp_path, data_key=journal_key(bytes(16)))
    firmware = TerminalFirmware(fast_profile(contactless_cvm_limit=5000), FileNvram(tmp_path),
                                journal=journal)
    made: list[FakeServices] = []

    def services(slot: HarnessSlot) -> FakeServices:
        made.append(FakeServices(slot))
        return made[-1]

    runner = TerminalRunner(ecr_fd=master, harness=term_sock, firmware=firmware,
                            make_services=services)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    bench.send(t="rail", volts=7.40)
    bench.send(t="paper", present=True)
    link = SerialTerminalLink("term", serial_transport(os.ttyname(slave)))
    link.open()
    try:
        link.wait_ready(timeout=3.0)
        assert link.login("01", "0000").result == "OK"
        assert link.sign_in(timeout=3.0).result == "APPROVED"
        yield link, bench, made[0]
    finally:
        link.close()
        runner.stop()
        thread.join(timeout=2.0)
        journal.close()
        bench.close()
        term_sock.close()
        os.close(slave)
        os.close(master)


def test_swipe_with_signature_on_the_pad(
        rig: tuple[SerialTerminalLink, FakeHarnessPeer, FakeServices]) -> None:
    link, bench, _ = rig
    mark = len(link.events)
    link.start_purchase(1200, entry="swipe")
    link.wait_for_event(Prompt.INSERT_CARD, timeout=2.0, since=mark)
    bench.send(t="swipe", **tracks("220"))                   # a chip card: insert it
    link.wait_for_event(Prompt.INSERT_CHIP, timeout=2.0, since=mark)
    bench.send(t="swipe", **tracks("101"))                   # a stripe card, signature
    link.wait_for_event(Prompt.SIGNATURE, timeout=3.0, since=mark)
    link.sign()
    out = link.wait_outcome(timeout=5.0)
    assert (out.result, out.entry_mode, out.fallback, out.cvm, out.signature_captured) == (
        "APPROVED", "swipe", False, "signature", True)
    assert out.masked_pan == MASKED
    assert all("SIGNATURE CAPTURED" in r and PAN not in r for r in link.receipts)
    assert PAN not in link.transcript_text()


def test_tap_reaches_the_contactless_reader_and_asks_pin_over_the_limit(
        rig: tuple[SerialTerminalLink, FakeHarnessPeer, FakeServices]) -> None:
    link, bench, services = rig
    services.tap_card = dataclasses.replace(FakeCard(), cvm="online_pin")
    services.tap_card.entry = "tap"  # type: ignore[attr-defined]
    mark = len(link.events)
    link.start_purchase(5001, entry="tap")
    link.wait_for_event(Prompt.INSERT_CARD, timeout=2.0, since=mark)
    bench.send(t="field", cards=2)
    link.wait_for_event(Prompt.ONE_CARD_ONLY, timeout=2.0, since=mark)
    bench.send(t="field", cards=1)
    link.wait_for_event(Prompt.ENTER_PIN, timeout=3.0, since=mark)
    link.enter_pin("2468")
    out = link.wait_outcome(timeout=5.0)
    assert (out.result, out.entry_mode, out.cvm) == ("APPROVED", "tap", "online_pin")
    assert [k for k in bench.kinds() if k.startswith("cl_")] == ["cl_power", "cl_capdu",
                                                                 "cl_power"]
    tap = [j for j in services.jobs if type(j).__name__ == "TapJob"]
    assert len(tap) == 1 and tap[0].cvm_required


def test_the_driver_checks_the_entry_and_the_outcome_vocabulary(
        rig: tuple[SerialTerminalLink, FakeHarnessPeer, FakeServices]) -> None:
    link, _, _ = rig
    with pytest.raises(ConfigError, match="entry must be one of chip, swipe, tap, qr"):
        link.start_purchase(100, entry="telepathy")
    with pytest.raises(DecodeError, match="field cvm must be one of"):
        Outcome.from_message(Message("PU", {"rc": "APPROVED", "cvm": "fingerprint"}))
    with pytest.raises(DecodeError, match="field fallback must be 1 or 0"):
        Outcome.from_message(Message("PU", {"rc": "APPROVED", "fallback": "yes"}))
    fields = {"rc": "DECLINED", "reason": "pin_blocked", "entry": "chip", "cvm": "offline_pin"}
    out = Outcome.from_message(Message("PU", fields))
    assert (out.reason, out.signature_captured, out.entry_mode) == ("pin_blocked", None, "chip")


def test_wrong_pin_tries_reach_the_rig_event(
        rig: tuple[SerialTerminalLink, FakeHarnessPeer, FakeServices]) -> None:
    link, bench, services = rig
    services.card = dataclasses.replace(FakeCard(), cvm="offline_pin")
    services.card.cryptogram_type = ""  # type: ignore[attr-defined]
    services.pin_checks = [PinCheck(False, 2)]
    mark = len(link.events)
    link.start_purchase(700)
    link.wait_for_event(Prompt.INSERT_CARD, timeout=2.0, since=mark)
    bench.send(t="card", present=True)
    link.wait_for_event(Prompt.ENTER_PIN, timeout=3.0, since=mark)
    link.enter_pin("9999")
    wrong = link.wait_for_event(Prompt.WRONG_PIN, timeout=3.0, since=mark)
    assert wrong.tries_left == 2 and "剩余2次" in wrong.text
    link.enter_pin("1234")
    out = link.wait_outcome(timeout=5.0)
    assert (out.result, out.cvm) == ("APPROVED", "offline_pin")
    verifies = [j for j in services.jobs if type(j).__name__ == "VerifyJob"]
    assert [v.pin for v in verifies] == ["9999", "1234"]
    assert "9999" not in link.transcript_text()
    bench.send(t="card", present=False)

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rigs.cards import PcscCardBank, SocketCardEmulator
from rigs.transport import serial_transport
from sim.pcsc import PcscDaemon
from sim.probe import SimProbe
from tests.cards.probe_host import PtyProbeHost

ROOT = Path(__file__).resolve().parents[2]
CARDS_DIR = ROOT / "fixtures" / "cards"
GOOD = CARDS_DIR / "good.yaml"
MUTE = CARDS_DIR / "mute.yaml"


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="private pcscd needs root")

READERS = {"good": "Virtual PCD 00 00", "mute": "Virtual PCD 00 01"}
EMULATOR_READER = "Virtual PCD 00 01"
#: The bank of the relay tests: good on its reader, mute through the emulator (its initial card).
EMULATED = {"mute": "mute"}


@dataclass(frozen=True)
class PcscBench:
    daemon: PcscDaemon
    card: subprocess.Popen[bytes]
    control: Path
    """The card emulator's control socket."""


@pytest.fixture(scope="session")
def pcsc_bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PcscBench]:
    """One per session (libpcsclite reads PCSCLITE_CSOCK_NAME once per process).
    A private pcscd in its own netns + a card process hosting good (00 00) and the card
    emulator (00 01, mute at start, every profile of fixtures/cards on request)."""
    tmp_path = tmp_path_factory.mktemp("pcsc")
    control = tmp_path / "cards.ctl"
    netns = f"tcards-{uuid.uuid4().hex[:8]}"
    daemon = PcscDaemon(tmp_path / "pcsc", 35963, netns)
    card: subprocess.Popen[bytes] | None = None
    card_log = open(tmp_path / "card.log", "wb")  # noqa: SIM115 - closed in finally
    try:
        daemon.start()
        card = subprocess.Popen(
            ["ip", "netns", "exec", netns, sys.executable, "-m", "sim.card",
             "--vpcd", "127.0.0.1:35963", "--profile", str(GOOD),
             "--emulator", "127.0.0.1:35964", "--profiles-dir", str(CARDS_DIR),
             "--initial", "mute", "--control", str(control), "--connect-timeout", "5"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=card_log)
        assert card.stdout is not None
        line = card.stdout.readline()    # bounded by --connect-timeout in the card process
        assert line.strip() == b"ready", (tmp_path / "card.log").read_text()
        yield PcscBench(daemon, card, control)
    finally:
        if card is not None:
            card.terminate()
            try:
                card.wait(timeout=3)
            except subprocess.TimeoutExpired:
                card.kill()
                card.wait(timeout=3)
        daemon.stop()
        card_log.close()


@contextmanager
def open_relay(bench: PcscBench, emulated: dict[str, str] | None = None, **bank_options: Any
               ) -> Iterator[tuple[PcscCardBank, PtyProbeHost]]:
    """A SimProbe on a pty (retry 0.5 s, 2 retries, as docs/probe-link.md) and an open
    PcscCardBank relaying it to the private pcscd's readers: good on its reader, the cards of
    *emulated* (default: mute) through the card emulator."""
    with PtyProbeHost(SimProbe(retry_interval=0.5, max_retries=2)) as host:
        emulator = SocketCardEmulator("card-emulator", bench.control, EMULATOR_READER,
                                      load_timeout=5.0)
        bank = PcscCardBank("cards", serial_transport(host.slave_path, timeout=0.02),
                            {"good": READERS["good"]}, bench.daemon.client_socket,
                            emulator=emulator,
                            emulated=EMULATED if emulated is None else emulated,
                            **bank_options)
        bank.open()
        try:
            bank.wait_ready(3.0)
            yield bank, host
        finally:
            bank.close()


@pytest.fixture
def relay(pcsc_bench: PcscBench) -> Iterator[tuple[PcscCardBank, PtyProbeHost]]:
    with open_relay(pcsc_bench) as opened:
        yield opened

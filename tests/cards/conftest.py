from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from rigs.cards import PcscCardBank
from rigs.transport import serial_transport
from sim.pcsc import PcscDaemon
from sim.probe import SimProbe
from tests.cards.probe_host import PtyProbeHost

ROOT = Path(__file__).resolve().parents[2]
GOOD = ROOT / "fixtures" / "cards" / "good.yaml"
MUTE = ROOT / "fixtures" / "cards" / "mute.yaml"


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="private pcscd needs root")

READERS = {"good": "Virtual PCD 00 00", "mute": "Virtual PCD 00 01"}


@pytest.fixture(scope="session")
def pcsc_bench(tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[tuple[PcscDaemon, subprocess.Popen[bytes]]]:
    """One per session (libpcsclite reads PCSCLITE_CSOCK_NAME once per process).
    A private pcscd in its own netns + a card process hosting good (00 00) and mute (00 01)."""
    tmp_path = tmp_path_factory.mktemp("pcsc")
    netns = f"tcards-{uuid.uuid4().hex[:8]}"
    daemon = PcscDaemon(tmp_path / "pcsc", 35963, netns)
    card: subprocess.Popen[bytes] | None = None
    card_log = open(tmp_path / "card.log", "wb")  # noqa: SIM115 - closed in finally
    try:
        daemon.start()
        card = subprocess.Popen(
            ["ip", "netns", "exec", netns, sys.executable, "-m", "sim.card",
             "--vpcd", "127.0.0.1:35963", "--profile", str(GOOD),
             "--vpcd", "127.0.0.1:35964", "--profile", str(MUTE), "--connect-timeout", "5"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=card_log)
        assert card.stdout is not None
        line = card.stdout.readline()    # bounded by --connect-timeout in the card process
        assert line.strip() == b"ready", (tmp_path / "card.log").read_text()
        yield daemon, card
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
def open_relay(daemon: PcscDaemon, **bank_options: Any
               ) -> Iterator[tuple[PcscCardBank, PtyProbeHost]]:
    """A SimProbe on a pty (retry 0.5 s, 2 retries, as docs/probe-link.md) and an open
    PcscCardBank relaying it to the private pcscd's readers."""
    with PtyProbeHost(SimProbe(retry_interval=0.5, max_retries=2)) as host:
        bank = PcscCardBank("cards", serial_transport(host.slave_path, timeout=0.02), READERS,
                            daemon.client_socket, **bank_options)
        bank.open()
        try:
            bank.wait_ready(3.0)
            yield bank, host
        finally:
            bank.close()


@pytest.fixture
def relay(pcsc_bench: tuple[PcscDaemon, subprocess.Popen[bytes]]
          ) -> Iterator[tuple[PcscCardBank, PtyProbeHost]]:
    with open_relay(pcsc_bench[0]) as opened:
        yield opened

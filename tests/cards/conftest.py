from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sim.pcsc import PcscDaemon

ROOT = Path(__file__).resolve().parents[2]
GOOD = ROOT / "fixtures" / "cards" / "good.yaml"
MUTE = ROOT / "fixtures" / "cards" / "mute.yaml"


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="private pcscd needs root")


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

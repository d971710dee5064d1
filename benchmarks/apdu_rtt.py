"""APDU round trip: pyscard → private pcscd → vpcd → Python card, and the whole relay
(terminal harness → SimProbe → probe link (pty) → PcscCardBank → pcscd → card and back).

Run as root: ``.venv/bin/python benchmarks/apdu_rtt.py [-n 2000]``.  Prints median / p95 in µs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rigs.cards import PcscCardBank  # noqa: E402
from rigs.transport import serial_transport  # noqa: E402
from sim.pcsc import PcscDaemon  # noqa: E402
from sim.probe import SimProbe  # noqa: E402
from tests.cards.probe_host import HarnessSlot, PtyProbeHost  # noqa: E402

APDU = bytes.fromhex("80CA9F3600")   # GET DATA ATC


def stats(name: str, samples: list[float]) -> str:
    us = sorted(s * 1e6 for s in samples)
    p95 = us[int(len(us) * 0.95) - 1]
    return f"{name:<44} n={len(us):5d}  median {statistics.median(us):8.1f} µs  p95 {p95:8.1f} µs"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=2000)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (private pcscd in its own namespaces)", file=sys.stderr)
        return 2
    netns = f"bench-apdu-{uuid.uuid4().hex[:6]}"
    work = Path(tempfile.mkdtemp(prefix="apdu_rtt-"))
    daemon = PcscDaemon(work, 35963, netns)
    card: subprocess.Popen[bytes] | None = None
    try:
        daemon.start()
        card = subprocess.Popen(
            ["ip", "netns", "exec", netns, sys.executable, "-m", "sim.card", "--vpcd",
             "127.0.0.1:35963", "--profile", str(ROOT / "fixtures/cards/good.yaml")],
            cwd=ROOT, stdout=subprocess.PIPE)
        assert card.stdout is not None and card.stdout.readline().strip() == b"ready"
        with PtyProbeHost(SimProbe()) as host:
            bank = PcscCardBank("cards", serial_transport(host.slave_path, timeout=0.01),
                                {"good": "Virtual PCD 00 00"}, daemon.client_socket)
            bank.open()
            try:
                bank.wait_ready(3.0)
                from smartcard import scard
                ctx = bank._ctx  # same process context: direct PC/SC path
                hr, hcard, proto = scard.SCardConnect(ctx, "Virtual PCD 00 00",
                                                      scard.SCARD_SHARE_SHARED,
                                                      scard.SCARD_PROTOCOL_T0 |
                                                      scard.SCARD_PROTOCOL_T1)
                assert hr == 0, hex(hr)
                direct = []
                for _ in range(args.n):
                    t = time.perf_counter()
                    hr, resp = scard.SCardTransmit(hcard, proto, list(APDU))
                    direct.append(time.perf_counter() - t)
                    assert hr == 0 and bytes(resp)[-2:] == b"\x90\x00"
                scard.SCardDisconnect(hcard, scard.SCARD_LEAVE_CARD)
                print(stats("pyscard → pcscd → vpcd → card", direct))

                bank.insert("good")
                slot = HarnessSlot(host)
                slot.power_on(2.0)
                relay = []
                for _ in range(args.n):
                    t = time.perf_counter()
                    r = slot.transmit(APDU, 2.0)
                    relay.append(time.perf_counter() - t)
                    assert r[-2:] == b"\x90\x00"
                slot.power_off()
                bank.remove()
                print(stats("harness → probe link → card bank → card", relay))
            finally:
                bank.close()
    finally:
        if card is not None:
            card.terminate()
            card.wait(timeout=3)
        daemon.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

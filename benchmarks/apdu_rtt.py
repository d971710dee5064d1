"""APDU round trip: pyscard → private pcscd → vpcd → Python card, and the whole relay
(terminal harness → SimProbe → probe link (pty) → PcscCardBank → pcscd → card and back).

Run as root: ``.venv/bin/python benchmarks/apdu_rtt.py [-n 2000] [--warmup 20]``.  Prints
median / p95 in µs.  :func:`measure` returns both sets of samples (benchmarks/run_all.py).
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
from rigs.errors import NoResponse, ProtocolError  # noqa: E402
from rigs.transport import serial_transport  # noqa: E402
from sim.pcsc import PcscDaemon  # noqa: E402
from sim.probe import SimProbe  # noqa: E402
from tests.cards.probe_host import HarnessSlot, PtyProbeHost  # noqa: E402

APDU = bytes.fromhex("80CA9F3600")   # GET DATA ATC
READER = "Virtual PCD 00 00"
CARD_READY_S = 30.0
"""Bound on the card process saying ``ready``."""


def stats(name: str, samples: list[float]) -> str:
    us = sorted(s * 1e6 for s in samples)
    p95 = us[int(len(us) * 0.95) - 1]
    return f"{name:<44} n={len(us):5d}  median {statistics.median(us):8.1f} µs  p95 {p95:8.1f} µs"


def _ready_line(card: subprocess.Popen[bytes]) -> bytes:
    """The card process's first line, read with a bound (a card that never starts is an error)."""
    import selectors

    assert card.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(card.stdout, selectors.EVENT_READ)
        if not sel.select(CARD_READY_S):
            raise NoResponse(f"apdu_rtt: the card process said nothing within {CARD_READY_S} s")
    return card.stdout.readline().strip()


def measure(n: int = 2000, warmup: int = 20) -> tuple[list[float], list[float]]:
    """(direct pyscard transmit, whole relay) round trips of :data:`APDU`, in seconds.  Root:
    a private pcscd in a namespace of its own, the card on its vpcd port."""
    if os.geteuid() != 0:
        raise PermissionError("apdu_rtt needs root (private pcscd in its own namespaces)")
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
        said = _ready_line(card)
        if said != b"ready":
            raise ProtocolError(f"apdu_rtt: the card process said {said!r}, expected b'ready'")
        with PtyProbeHost(SimProbe()) as host:
            bank = PcscCardBank("cards", serial_transport(host.slave_path, timeout=0.01),
                                {"good": READER}, daemon.client_socket)
            bank.open()
            try:
                bank.wait_ready(3.0)
                from smartcard import scard
                ctx = bank._ctx  # same process context: direct PC/SC path
                hr, hcard, proto = scard.SCardConnect(ctx, READER, scard.SCARD_SHARE_SHARED,
                                                      scard.SCARD_PROTOCOL_T0 |
                                                      scard.SCARD_PROTOCOL_T1)
                if hr != 0:
                    raise ProtocolError(f"apdu_rtt: SCardConnect({READER}) failed: {hr:#x}")
                direct = []
                for i in range(warmup + n):
                    t = time.perf_counter()
                    hr, resp = scard.SCardTransmit(hcard, proto, list(APDU))
                    took = time.perf_counter() - t
                    if hr != 0 or bytes(resp)[-2:] != b"\x90\x00":
                        raise ProtocolError(f"apdu_rtt: direct transmit: hr {hr:#x}, "
                                            f"answer {bytes(resp).hex()}")
                    if i >= warmup:
                        direct.append(took)
                scard.SCardDisconnect(hcard, scard.SCARD_LEAVE_CARD)

                bank.insert("good")
                slot = HarnessSlot(host)
                slot.power_on(2.0)
                relay = []
                for i in range(warmup + n):
                    t = time.perf_counter()
                    r = slot.transmit(APDU, 2.0)
                    took = time.perf_counter() - t
                    if r[-2:] != b"\x90\x00":
                        raise ProtocolError(f"apdu_rtt: relay transmit answered {r.hex()}")
                    if i >= warmup:
                        relay.append(took)
                slot.power_off()
                bank.remove()
            finally:
                bank.close()
    finally:
        if card is not None:
            card.terminate()
            card.wait(timeout=3)
        daemon.stop()
    return direct, relay


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--warmup", type=int, default=20)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (private pcscd in its own namespaces)", file=sys.stderr)
        return 2
    direct, relay = measure(args.n, args.warmup)
    print(stats("pyscard → pcscd → vpcd → card", direct))
    print(stats("harness → probe link → card bank → card", relay))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""ECR round trip: STATUS request → response through SerialTerminalLink over a pty.

The terminal runner (firmware + link) runs in a thread on the pty master; the driver opens the
slave with pyserial.  Prints median and p95 in µs.

    .venv/bin/python benchmarks/ecr_rtt.py [N]
"""

from __future__ import annotations

import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rigs.terminal import SerialTerminalLink  # noqa: E402
from rigs.transport import serial_transport  # noqa: E402
from sim.terminal.firmware import TerminalFirmware, load_profile  # noqa: E402
from sim.terminal.nvram import MemoryNvram  # noqa: E402
from sim.terminal.runner import TerminalRunner  # noqa: E402
from sim.terminal.slot import HarnessSlot  # noqa: E402

PROFILE = Path(__file__).resolve().parents[1] / "fixtures" / "terminal" / "profile.yaml"


class _NoServices:
    card_errors: tuple[type[BaseException], ...] = ()
    comms_errors: tuple[type[BaseException], ...] = ()

    def __init__(self, slot: HarnessSlot) -> None:
        self.slot = slot

    def read_card(self, job: object) -> object:
        raise NotImplementedError("benchmark: no card")

    def sign_in(self, job: object) -> object:
        raise NotImplementedError("benchmark: no host")

    def authorize(self, job: object) -> object:
        raise NotImplementedError("benchmark: no host")


def main(n: int = 2000) -> int:
    master, slave = os.openpty()
    bench_sock, term_sock = socket.socketpair()
    with tempfile.TemporaryDirectory():
        fw = TerminalFirmware(load_profile(PROFILE), MemoryNvram())
        runner = TerminalRunner(ecr_fd=master, harness=term_sock, firmware=fw,
                                make_services=_NoServices)
        thread = threading.Thread(target=runner.run, daemon=True)
        link = SerialTerminalLink("bench", serial_transport(os.ttyname(slave)))
        try:
            thread.start()
            link.open()
            link.wait_ready(timeout=5.0)
            for _ in range(50):  # warm-up
                link.status()
            samples = []
            for _ in range(n):
                t0 = time.perf_counter()
                link.status()
                samples.append((time.perf_counter() - t0) * 1e6)
        finally:
            link.close()
            runner.stop()
            thread.join(timeout=2.0)
            bench_sock.close()
            term_sock.close()
            os.close(slave)
            os.close(master)
    samples.sort()
    p95 = samples[int(0.95 * (len(samples) - 1))]
    print(f"ECR STATUS round trip over a pty, n={n}: median {statistics.median(samples):.0f} µs, "
          f"p95 {p95:.0f} µs, max {samples[-1]:.0f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000))

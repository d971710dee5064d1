"""ECR round trip: STATUS request → response through SerialTerminalLink over a pty, and its
baseline: a raw write/read of the same request frame on the same pty, echoed back as it is.

The terminal runner (firmware + link) runs in a thread on the pty master; the driver opens the
slave with pyserial.  Then the runner is stopped, a trivial echo (select + read + write, nothing
decoded) takes the master, and a fresh pyserial port on the same slave writes the exact bytes the
driver sent for STATUS (taken from its transcript) and reads them back.  The two take turns in
4 blocks (a fresh runner each, so it boots each time), so both see the same machine.  Prints
median and p95 in µs for both.

    .venv/bin/python benchmarks/ecr_rtt.py [N]
"""

from __future__ import annotations

import os
import select
import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from protocols import ecr  # noqa: E402
from rigs.errors import NoResponse, hexdump  # noqa: E402
from rigs.terminal import SerialTerminalLink  # noqa: E402
from rigs.transport import Record, Transcript, serial_transport  # noqa: E402
from sim.terminal.firmware import TerminalFirmware, load_profile  # noqa: E402
from sim.terminal.nvram import MemoryNvram  # noqa: E402
from sim.terminal.runner import TerminalRunner  # noqa: E402
from sim.terminal.slot import HarnessSlot  # noqa: E402

PROFILE = Path(__file__).resolve().parents[1] / "fixtures" / "terminal" / "profile.yaml"
JOIN_S = 2.0
"""Bound on stopping the runner and the echo thread."""
RAW_READ_S = 1.0
"""Bound on reading one echoed frame back."""


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


def timed(fn: Callable[[], object], n: int) -> list[float]:
    """*n* calls of *fn*, each timed (µs)."""
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e6)
    return samples


def first_frame(records: list[Record]) -> bytes:
    """The first whole ECR frame (``STX | LEN(2) | SEQ | payload | ETX | LRC``) the driver sent
    in *records* (an ACK written in the same chunk is left out)."""
    for rec in records:
        if rec.direction != "tx":
            continue
        start = rec.data.find(bytes([ecr.STX]))
        if start < 0 or len(rec.data) < start + 3:
            continue
        length = int.from_bytes(rec.data[start + 1:start + 3], "big")
        end = start + length + 6
        if len(rec.data) >= end:
            return rec.data[start:end]
    raise ValueError(f"no whole ECR frame among the {len(records)} transcript records")


def _echo(fd: int, stop: threading.Event) -> None:
    """The baseline's other end: every byte read from *fd* is written back, nothing decoded."""
    while not stop.is_set():
        readable, _, _ = select.select([fd], [], [], 0.1)
        if not readable:
            continue
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            continue
        except OSError:
            return
        while data:
            try:
                data = data[os.write(fd, data):]
            except BlockingIOError:
                select.select([], [fd], [], 0.1)


def raw_round_trips(master: int, slave_path: str, frame: bytes, n: int, warmup: int) -> list[float]:
    """Write *frame* on the slave with pyserial and read it back from the echo on *master* (µs)."""
    stop = threading.Event()
    echo = threading.Thread(target=_echo, args=(master, stop), name="ecr-echo", daemon=True)
    port = serial_transport(slave_path, timeout=RAW_READ_S)
    echo.start()
    try:
        port.open()
        port.reset_input_buffer()

        def once() -> None:
            port.write(frame)
            back = port.read(len(frame))
            if back != frame:
                raise NoResponse(f"ecr_rtt baseline: echo of {len(frame)} bytes not back within "
                                 f"{RAW_READ_S} s: got {hexdump(back)}")

        timed(once, warmup)
        samples = timed(once, n)
    finally:
        port.close()
        stop.set()
        echo.join(JOIN_S)
    if echo.is_alive():
        raise NoResponse(f"ecr_rtt baseline: the echo thread did not stop within {JOIN_S} s")
    return samples


def link_round_trips(master: int, slave_path: str, n: int, warmup: int) -> tuple[list[float], bytes]:
    """STATUS through SerialTerminalLink to a fresh terminal runner on *master* (µs), and the
    STATUS frame the driver sent (from its transcript).  The runner is stopped at the end."""
    bench_sock, term_sock = socket.socketpair()
    transcript = Transcript()
    try:
        fw = TerminalFirmware(load_profile(PROFILE), MemoryNvram())
        runner = TerminalRunner(ecr_fd=master, harness=term_sock, firmware=fw,
                                make_services=_NoServices)
        thread = threading.Thread(target=runner.run, daemon=True)
        link = SerialTerminalLink("bench", serial_transport(slave_path), transcript=transcript)
        try:
            thread.start()
            link.open()
            link.wait_ready(timeout=5.0)
            timed(link.status, warmup)
            transcript.clear()
            link.status()
            frame = first_frame(transcript.snapshot())
            samples = timed(link.status, n)
        finally:
            link.close()
            runner.stop()
            thread.join(timeout=JOIN_S)
        if thread.is_alive():
            raise NoResponse(f"ecr_rtt: the terminal runner did not stop within {JOIN_S} s")
        return samples, frame
    finally:
        bench_sock.close()
        term_sock.close()


def measure(n: int = 2000, warmup: int = 50, blocks: int = 4) -> tuple[list[float], list[float]]:
    """STATUS through SerialTerminalLink and the raw echo baseline on the same pty (µs each),
    in *blocks* turns (runner, then echo, on the pty's master) so both see the same machine."""
    master, slave = os.openpty()
    linked: list[float] = []
    raw: list[float] = []
    try:
        path = os.ttyname(slave)
        blocks = max(1, min(blocks, n))
        for b in range(blocks):
            count = n // blocks + (1 if b < n % blocks else 0)
            got, frame = link_round_trips(master, path, count, warmup)
            linked += got
            raw += raw_round_trips(master, path, frame, count, warmup)
    finally:
        os.close(slave)
        os.close(master)
    return linked, raw


def _line(label: str, samples: list[float]) -> str:
    s = sorted(samples)
    p95 = s[int(0.95 * (len(s) - 1))]
    return (f"{label}, n={len(s)}: median {statistics.median(s):.0f} µs, p95 {p95:.0f} µs, "
            f"max {s[-1]:.0f} µs")


def main(n: int = 2000) -> int:
    linked, raw = measure(n)
    print(_line("ECR STATUS round trip over a pty", linked))
    print(_line("baseline: raw write/read of the same frame, echoed", raw))
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000))

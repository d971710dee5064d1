"""Round-trip time of ``MEAS:VOLT?`` through pyvisa-py against the simulated PSU (sim/scpi.py):
through the rig's :class:`~rigs.scpi.VisaScpiTransport`, and, as its baseline, a raw pyvisa
``query`` on a second session to the same resource (same terminations and timeout).  The two
take turns, one query each, so both see the same machine.

    .venv/bin/python benchmarks/scpi_rtt.py [--count 5000] [--warmup 200]

Prints median / p95 / p99 / max in microseconds for both.  Loopback only, ephemeral port.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import pyvisa

from rigs.errors import ProtocolError
from rigs.scpi import VisaScpiTransport
from sim.psu import SimPowerSupply
from sim.scpi import ScpiTcpServer

QUERY = "MEAS:VOLT?"
EXPECTED = "+7.40000000E+00"
TIMEOUT_MS = 2000


def percentile(sorted_values: list[float], fraction: float) -> float:
    index = min(len(sorted_values) - 1, round(fraction * (len(sorted_values) - 1)))
    return sorted_values[index]


def _check(answer: str, who: str) -> None:
    if answer.strip() != EXPECTED:
        raise ProtocolError(f"scpi_rtt: {who} answered {answer!r} to {QUERY}, expected "
                            f"{EXPECTED!r}")


def measure_side_by_side(count: int, warmup: int) -> tuple[list[float], list[float]]:
    """(through VisaScpiTransport, raw pyvisa query) round trips in µs, taken in turns."""
    sim = SimPowerSupply()
    server = ScpiTcpServer(sim, name="bench-rtt")
    server.start()
    rm: Any = None
    raw: Any = None
    try:
        transport = VisaScpiTransport(server.resource, timeout_ms=TIMEOUT_MS)
        transport.open()
        try:
            rm = pyvisa.ResourceManager("@py")
            raw = rm.open_resource(server.resource, read_termination="\n",
                                   write_termination="\n", timeout=TIMEOUT_MS)
            transport.write("VOLT 7.4;OUTP ON")
            for _ in range(warmup):
                transport.query(QUERY)
                raw.query(QUERY)
            rig: list[float] = []
            direct: list[float] = []
            for _ in range(count):
                t0 = time.perf_counter()
                answer = transport.query(QUERY)
                rig.append((time.perf_counter() - t0) * 1e6)
                _check(answer, "VisaScpiTransport")
                t0 = time.perf_counter()
                answer = raw.query(QUERY)
                direct.append((time.perf_counter() - t0) * 1e6)
                _check(answer, "raw pyvisa session")
            return rig, direct
        finally:
            if raw is not None:
                raw.close()
            if rm is not None:
                rm.close()
            transport.close()
    finally:
        server.stop(timeout=2.0)


def measure(count: int, warmup: int) -> list[float]:
    """Round trips through VisaScpiTransport only (µs)."""
    return measure_side_by_side(count, warmup)[0]


def _report(title: str, samples: list[float]) -> None:
    samples = sorted(samples)
    print(title)
    print(f"  median {statistics.median(samples):8.1f} us")
    print(f"  p95    {percentile(samples, 0.95):8.1f} us")
    print(f"  p99    {percentile(samples, 0.99):8.1f} us")
    print(f"  max    {samples[-1]:8.1f} us")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args()
    rig, raw = measure_side_by_side(args.count, args.warmup)
    _report(f"{QUERY} via VisaScpiTransport (pyvisa-py) -> sim/scpi.py over 127.0.0.1, "
            f"n={len(rig)}", rig)
    _report(f"baseline: raw pyvisa query on the same resource, n={len(raw)}", raw)


if __name__ == "__main__":
    main()

"""Round-trip time of ``MEAS:VOLT?`` through pyvisa-py against the simulated PSU (sim/scpi.py).

    .venv/bin/python benchmarks/scpi_rtt.py [--count 5000] [--warmup 200]

Prints median / p95 / p99 / max in microseconds.  Loopback only, ephemeral port.
"""

from __future__ import annotations

import argparse
import statistics
import time

from rigs.scpi import VisaScpiTransport
from sim.psu import SimPowerSupply
from sim.scpi import ScpiTcpServer


def percentile(sorted_values: list[float], fraction: float) -> float:
    index = min(len(sorted_values) - 1, round(fraction * (len(sorted_values) - 1)))
    return sorted_values[index]


def measure(count: int, warmup: int) -> list[float]:
    sim = SimPowerSupply()
    server = ScpiTcpServer(sim, name="bench-rtt")
    server.start()
    try:
        transport = VisaScpiTransport(server.resource, timeout_ms=2000)
        transport.open()
        try:
            transport.write("VOLT 7.4;OUTP ON")
            for _ in range(warmup):
                transport.query("MEAS:VOLT?")
            samples: list[float] = []
            for _ in range(count):
                t0 = time.perf_counter()
                answer = transport.query("MEAS:VOLT?")
                samples.append((time.perf_counter() - t0) * 1e6)
                if answer != "+7.40000000E+00":
                    raise SystemExit(f"unexpected answer {answer!r}")
            return samples
        finally:
            transport.close()
    finally:
        server.stop(timeout=2.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args()
    samples = sorted(measure(args.count, args.warmup))
    print(f"MEAS:VOLT? via pyvisa-py -> sim/scpi.py over 127.0.0.1, n={len(samples)}")
    print(f"  median {statistics.median(samples):8.1f} us")
    print(f"  p95    {percentile(samples, 0.95):8.1f} us")
    print(f"  p99    {percentile(samples, 0.99):8.1f} us")
    print(f"  max    {samples[-1]:8.1f} us")


if __name__ == "__main__":
    main()

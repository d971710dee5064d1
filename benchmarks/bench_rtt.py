"""Round trips on the whole virtual bench, through the rig's own drivers (root).

    .venv/bin/python benchmarks/bench_rtt.py [--count 1000]

Brings the virtual bench up (``python -m sim up``), opens the rig's bench façade and measures:
- one ECR command: STATUS request → response, SerialTerminalLink ↔ pty ↔ terminal firmware;
- one SCPI query: ``MEAS:VOLT?`` through pyvisa-py to the simulated supply;
- (one APDU through the card relay is measured by benchmarks/apdu_rtt.py: harness → probe →
  probe link → rig card bank → pcscd → vpcd → card; libpcsclite allows one pcscd per process);
- one ISO 8583 sale request/response from the terminal's namespace to the acquirer's, through the
  rig's scapy injector (benchmarks/iso_rtt.py run inside netns dut).
Prints median / p95 in microseconds; no pass/fail.  Tears the bench down at the end.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rigs.bench import Bench  # noqa: E402
from rigs.config import load_bench  # noqa: E402


def measure(fn: Callable[[], object], count: int, warmup: int = 50) -> tuple[float, float]:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(count):
        t0 = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - t0) / 1000)
    samples.sort()
    return statistics.median(samples), samples[int(0.95 * (len(samples) - 1))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=1000)
    args = ap.parse_args()
    workdir = ROOT / "reports" / "bench-rtt"
    bench_file = workdir / "bench.yaml"
    sim = [sys.executable, "-m", "sim"]
    subprocess.run([*sim, "up", "--workdir", str(workdir), "--bench-file", str(bench_file)],
                   check=True, cwd=ROOT, timeout=120)
    try:
        config = load_bench(bench_file)
        bench = Bench(config.model_copy(update={"cards": None}), workdir=workdir / "rig")
        bench.open()
        try:
            bench.restore_nominal()
            rows = [("ECR STATUS request→response", measure(bench.terminal.status, args.count))]
            assert bench.power is not None
            rows.append(("SCPI MEAS:VOLT? query", measure(bench.power.measure_voltage, args.count)))
            out = subprocess.run(
                [sys.executable, str(ROOT / "benchmarks/iso_rtt.py"), "--host",
                 config.host.address if config.host else "198.18.0.20:8583", "--netns", "dut",
                 "--mode", "sale", "--count", str(args.count)],
                capture_output=True, text=True, cwd=ROOT, timeout=600)
        finally:
            bench.close()
    finally:
        subprocess.run([*sim, "down", "--workdir", str(workdir)], cwd=ROOT, timeout=120)
    print(f"{'round trip':40} {'median µs':>10} {'p95 µs':>10}")
    for name, (med, p95) in rows:
        print(f"{name:40} {med:10.0f} {p95:10.0f}")
    print("ISO 8583 sale through the injector (iso_rtt.py in netns dut):")
    print("  " + (out.stdout.strip() or out.stderr.strip()).replace("\n", "\n  "))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

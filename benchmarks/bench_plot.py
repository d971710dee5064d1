"""Time to draw and render the power plot (rigs/plots.py) for scenarios of growing length.

    .tox/bench/bin/python benchmarks/bench_plot.py [--sizes 100 1000 10000] [--repeat 3]

For each number of supply samples (100 ms apart) it builds a synthetic scenario: a discharge
ramp with a sale in it (ISO 8583 messages, GENERATE AC, PRINTING), three faults (one never
cleared, one armed and never fired) and one ISO 8583 exchange every 50 samples, then prints the
best and median time of :func:`rigs.plots.power_png` and the PNG's size.  The first rendering of
the process (fonts loaded, caches filled) is timed apart.  Figures only, nothing asserted.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

from rigs.events import Event, EventStream, Source
from rigs.plots import power_png

T0 = 1_700_000_000.0
THRESHOLDS = {"low battery 6.80 V": 6.80, "cut-off 6.40 V": 6.40}


def scenario(samples: int, period_s: float = 0.1) -> list[Event]:
    """A synthetic scenario of *samples* supply samples, published out of time order (the ISO
    8583 messages last, as the bench decodes them from the capture at the scenario's end)."""
    stream = EventStream(clock=lambda: T0)
    end = T0 + samples * period_s
    stream.publish(Source.RIG, "scenario", "begin", "bench", t=T0)
    stream.publish(Source.POWER, "set", "voltage", "7.4 V", t=T0, data={"voltage": 7.4})
    stream.publish(Source.TERMINAL, "ready", "READY", t=T0 + 0.3)
    for i in range(samples):
        x = i / max(1, samples - 1)
        volts = 7.4 - 1.2 * max(0.0, x - 0.3) if i % 997 else math.nan
        amps = 0.25 + 0.6 * (0.5 < x < 0.55) + 0.01 * math.sin(i)
        stream.publish(Source.POWER, "sample", "supply", f"{volts:.2f} V {amps:.3f} A",
                       t=T0 + i * period_s, data={"volts": volts, "amps": amps})
    span = end - T0
    for fid, (kind, armed, fired, cleared) in enumerate((
            ("battery_discharge", 0.3, 0.3, None),
            ("drop_message", 0.1, 0.52, 0.7),
            ("paper_out", 0.8, None, 0.9)), start=1):
        stream.publish(Source.FAULT, "armed", kind, t=T0 + armed * span, data={"fault_id": fid})
        if fired is not None:
            stream.publish(Source.FAULT, "fired", kind, t=T0 + fired * span,
                           data={"fault_id": fid})
        if cleared is not None:
            stream.publish(Source.FAULT, "cleared", kind, t=T0 + cleared * span,
                           data={"fault_id": fid})
    stream.publish(Source.CARDS, "c-apdu", "GENERATE AC", t=T0 + 0.49 * span)
    stream.publish(Source.TERMINAL, "progress", "PRINTING", t=T0 + 0.56 * span)
    stream.publish(Source.TERMINAL, "response", "PU", "PU(PURCHASE) rc=APPROVED",
                   t=T0 + 0.57 * span)
    for i in range(0, samples, 50):
        stream.publish(Source.NETWORK, "iso8583", "0200", t=T0 + i * period_s + 0.01)
        stream.publish(Source.NETWORK, "iso8583", "0210", t=T0 + i * period_s + 0.2)
    stream.publish(Source.RIG, "scenario", "end", t=end)
    return stream.events()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1_000, 10_000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    start = time.perf_counter()
    power_png(scenario(10), title="warm-up", thresholds=THRESHOLDS)
    print(f"first rendering in this process (warm-up, 10 samples): "
          f"{(time.perf_counter() - start) * 1000:.0f} ms")
    print(f"{'samples':>8} {'events':>8} {'best ms':>9} {'median ms':>10} {'PNG bytes':>10}")
    for size in args.sizes:
        events = scenario(size)
        times: list[float] = []
        png = b""
        for _ in range(max(1, args.repeat)):
            start = time.perf_counter()
            png = power_png(events, title=f"bench {size} samples", thresholds=THRESHOLDS) or b""
            times.append(time.perf_counter() - start)
        print(f"{size:>8} {len(events):>8} {min(times) * 1000:>9.0f} "
              f"{statistics.median(times) * 1000:>10.0f} {len(png):>10}")


if __name__ == "__main__":
    main()

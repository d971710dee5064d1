"""Round-trip time of an ISO 8583 exchange (sign-in 0800/0810 or sale 0200/0210) through
:class:`sim.terminal.acquirer.AcquirerClient`, one TCP connection per transaction as a terminal
does it.

    .venv/bin/python benchmarks/iso_rtt.py [--mode signin|sale] [--count 2000] [--warmup 100]
    .venv/bin/python benchmarks/iso_rtt.py --host 198.18.0.20:8583 --netns dut --mode sale

Without ``--host`` an in-process host simulator is started on 127.0.0.1 (ephemeral port, ledger
in memory).  With ``--host`` the client talks to a running host (e.g. the virtual bench's, through
the rig's injector); ``--netns NS`` re-runs this script inside ``ip netns exec NS`` (root).
Prints median / p95 / p99 / max in microseconds; no pass/fail.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sim.host.engine import (  # noqa: E402
    AcquirerEngine,
    load_account,
    load_accounts,
    load_terminals,
)
from sim.host.ledger import MemoryLedger  # noqa: E402
from sim.host.server import AcquirerServer  # noqa: E402
from sim.terminal.acquirer import AcquirerClient  # noqa: E402


def _pct(sorted_us: list[float], p: float) -> float:
    return sorted_us[min(len(sorted_us) - 1, int(round(p / 100 * (len(sorted_us) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=("signin", "sale"), default="sale")
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--host", help="HOST:PORT of a running host (default: in-process, loopback)")
    ap.add_argument("--netns", help="run the client inside this network namespace (root)")
    ap.add_argument("--terminals", default=str(ROOT / "fixtures/host/terminals.yaml"))
    ap.add_argument("--cards-dir", default=str(ROOT / "fixtures/cards"))
    ap.add_argument("--card", default=str(ROOT / "fixtures/cards/good.yaml"),
                    help="card profile used for sales (pan, expiry, pin)")
    ap.add_argument("--terminal-id", default="10000001")
    ap.add_argument("--timeout", type=float, default=5.0)
    args = ap.parse_args()

    if args.netns:
        argv: list[str] = []
        skip = False
        for a in sys.argv[1:]:  # the same arguments without --netns
            if skip or a.startswith("--netns="):
                skip = False
                continue
            skip = a == "--netns"
            if not skip:
                argv.append(a)
        cmd = ["ip", "netns", "exec", args.netns, sys.executable, str(Path(__file__).resolve()),
               *argv]
        return subprocess.run(cmd, check=False, env={**os.environ, "PYTHONPATH": str(ROOT)},
                              timeout=max(60.0, (args.count + args.warmup) * args.timeout)
                              ).returncode

    terminals = load_terminals(args.terminals)
    term = terminals[args.terminal_id]
    server: AcquirerServer | None = None
    if args.host:
        host, _, port_text = args.host.rpartition(":")
        port = int(port_text)
    else:
        engine = AcquirerEngine(terminals, load_accounts(args.cards_dir), ledger=MemoryLedger())
        server = AcquirerServer(engine, "127.0.0.1", 0)
        host, port = server.start()
    try:
        client = AcquirerClient(host, port, terminal_id=term.terminal_id,
                                merchant_id=term.merchant_id, master_key=term.master_key,
                                connect_timeout=args.timeout, response_timeout=args.timeout)
        card = load_account(args.card)
        si = client.sign_in(operator="01", stan=1, batch_no=1)
        if si.keys is None:
            print(f"sign-in refused: {si.response_code}", file=sys.stderr)
            return 1
        keys, batch = si.keys, si.batch_no
        samples: list[float] = []
        stan = 1
        for i in range(args.warmup + args.count):
            stan = stan % 999999 + 1
            t0 = time.perf_counter()
            if args.mode == "signin":
                res = client.sign_in(operator="01", stan=stan, batch_no=batch)
                code = res.response_code
                keys = res.keys or keys
            else:
                auth = client.purchase(keys=keys, stan=stan, batch_no=batch, amount_minor=1,
                                       pan=card.pan, expiry=card.expiry, pan_seq="1",
                                       track2_equivalent=f"{card.pan}D{card.expiry}220",
                                       icc_data=bytes.fromhex("9F2701809F36020001"),
                                       pin=card.pin)
                code = auth.response_code
            dt_us = (time.perf_counter() - t0) * 1e6
            if code != "00":
                print(f"transaction {i} answered {code}; stopping", file=sys.stderr)
                return 1
            if i >= args.warmup:
                samples.append(dt_us)
        samples.sort()
        where = args.host or f"in-process host {host}:{port}"
        print(f"ISO 8583 {args.mode} round trip via AcquirerClient -> {where}, "
              f"{len(samples)} samples (connect + request + response + close):")
        print(f"  median {statistics.median(samples):8.0f} us   p95 {_pct(samples, 95):8.0f} us"
              f"   p99 {_pct(samples, 99):8.0f} us   max {samples[-1]:8.0f} us")
    finally:
        if server is not None:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

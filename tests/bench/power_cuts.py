"""Power cut at random instants during many sales, then the terminal's journal is checked
against the acquirer's ledger: nothing lost, nothing charged twice (root, the virtual bench).

    .tox/bench/bin/python -m tests.bench.power_cuts --sales 200 --seed 7      (make power-cuts)

Brings the virtual bench up in its own work folder, drives sales through the rig's own drivers
(the cardholder robot of steps/cardholder.py), and for a seeded share of them switches the
supply off at a seeded instant after the sale starts (before the request leaves, while it is
online, after the approval, while printing: wherever the instant falls), powers it back,
waits for the reboot, logs in and signs in again, and goes on.  A last sale without a cut lets
the terminal send any reversal it still owes.  Then, per sale of this run:

- approved in the journal (and not reversed) ⇒ the acquirer booked exactly that sale once,
  standing, same amount and RRN, and its receipt was printed (held receipts count);
- not approved in the journal (declined, failed, reversed) ⇒ the acquirer has no standing
  sale with that trace number;
- nothing is left pending or owing a reversal;
- every standing sale the acquirer booked in this run is an approved sale of the journal.

Prints a table of the figures, writes reports/power-cuts.json, and exits 1 on any violation
(each names the batch, trace number, the instant of the cut before it, and the seed).
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from protocols.faults import FaultKind, FaultSpec
from protocols.transactions import TxnType, transaction_type
from rigs.bench import Bench
from rigs.config import load_bench
from rigs.errors import DeviceStateError, NoResponse, RigError, TransportError
from rigs.virtualbench import virtual_bench

REPO = Path(__file__).resolve().parents[2]
SIM_BOUND = 120.0
SALE_BOUND = 40.0
JOURNAL_FILE = "terminal-journal.sqlite"  # sim.terminal.journal.JOURNAL_FILE (read, not imported)


@dataclass
class Sale:
    n: int
    amount: int
    cut_after_s: float | None
    result: str = ""
    stan: str = ""
    cut_done: bool = False
    mark: int = 0


@dataclass
class Report:
    seed: int
    sales: int
    cuts: int = 0
    approved_seen: int = 0
    aborted_by_cut: int = 0
    journal_states: dict[str, int] = field(default_factory=dict)
    host_standing: int = 0
    host_reversed: int = 0
    violations: list[str] = field(default_factory=list)
    seconds: float = 0.0


OFF_S = 0.3
"""How long the supply stays off for one cut (the terminal dies at once; this is the pause
before the operator switches it on again)."""


def _cut_and_restore(bench: Bench, sale: Sale, done: threading.Event) -> None:
    """In the timer thread: note the terminal's event mark, switch the supply off, then on
    again after OFF_S.  The sale's waits end with the reboot (READY) instead of timing out."""
    try:
        sale.mark = len(bench.terminal.events)
        record = bench.inject(FaultSpec.of(FaultKind.POWER_CUT))
        sale.cut_done = True
        done.wait(OFF_S)  # never set yet: a bounded pause with the power off
        bench.clear_fault(record, by="power back on")
    finally:
        done.set()


def _recover(bench: Bench, sale: Sale) -> None:
    """After a cut: wait for the reboot, drop the interrupted sale, take the card back, log
    in, sign in."""
    terminal = bench.terminal
    bound = bench.config.terminal.boot_timeout
    terminal.wait_for_event("READY", timeout=bound, since=sale.mark)
    # The interrupted sale ends one way or another: the reboot ends it (DeviceStateError), or
    # its request, resent to the rebooted terminal, is answered (BUSY while it boots, or a
    # whole sale).  Drain it, bounded, so the next sale never starts while it is pending.
    if terminal.pending_transaction is not None:
        try:
            terminal.wait_outcome(timeout=bound)
        except DeviceStateError:
            pass  # the reboot ended it
    if bench.cards.inserted is not None:
        bench.cards.remove()
    terminal.wait_ready(timeout=bound)
    _login_and_sign_in(bench)


def _login_and_sign_in(bench: Bench) -> None:
    creds = bench.config.terminal.operators["operator"]
    if not bench.terminal.login(creds.id, creds.password).ok:
        raise RigError("the operator cannot log in after the restart")
    if not bench.terminal.status().signed_in:
        outcome = bench.terminal.sign_in()
        if not outcome.ok:
            raise RigError(f"sign-in after the restart failed: {outcome.result}")


def drive(bench: Bench, sales: list[Sale], report: Report, progress: bool) -> None:
    from rigs.cardholder import pay_by_chip

    pin = bench.card_pin("good")
    for sale in sales:
        cut = threading.Event()
        timer = None
        if sale.cut_after_s is not None:
            timer = threading.Timer(sale.cut_after_s, _cut_and_restore, (bench, sale, cut))
            timer.start()
        try:
            outcome = pay_by_chip(bench, sale.amount, "good", pin, timeout=SALE_BOUND)
            sale.result, sale.stan = outcome.result, outcome.stan
            report.approved_seen += outcome.ok
        except (DeviceStateError, NoResponse, TransportError) as exc:
            sale.result = f"aborted: {type(exc).__name__}"
            report.aborted_by_cut += 1
        if timer is not None:
            if not cut.wait(SALE_BOUND):  # the cut happens whether or not the sale finished
                raise NoResponse(f"sale {sale.n}: the power cut did not happen within "
                                 f"{SALE_BOUND:.0f} s")
            report.cuts += sale.cut_done
            _recover(bench, sale)
        if progress and sale.n % 10 == 0:
            print(f"  {sale.n}/{report.sales} sales, {report.cuts} cuts, last {sale.result}",
                  flush=True)
    final = pay_by_chip(bench, 1, "good", pin, timeout=SALE_BOUND)  # flushes owed reversals
    if not final.ok:
        report.violations.append(f"the final sale without a cut was not approved: "
                                 f"{final.result} ({final.display})")


def check(bench: Bench, journal_path: Path, first_entry: int, report: Report,
          cut_before: dict[tuple[int, int], float | None]) -> None:
    db = sqlite3.connect(f"file:{journal_path}?mode=ro", uri=True, timeout=5.0)
    try:
        rows = db.execute(
            "SELECT batch_no, stan, amount_minor, state, rrn, printed FROM entries "
            "WHERE id > ? AND txn_type = ?", (first_entry, TxnType.SALE.value)).fetchall()
    finally:
        db.close()
    report.journal_states = dict(Counter(r[3] for r in rows))
    sale_key = transaction_type(TxnType.SALE).iso_key
    tid = bench.config.terminal.terminal_id
    host = [e for e in bench.acquirer.booked()
            if (e.mti, e.proc_code) == sale_key and e.terminal_id == tid]
    standing = {(int(e.batch_no or 0), int(e.stan or 0)): e for e in host
                if e.response_code == "00" and e.status == "booked"}
    counts = Counter((int(e.batch_no or 0), int(e.stan or 0)) for e in host
                     if e.response_code == "00" and e.status == "booked")
    report.host_standing = len(standing)
    report.host_reversed = sum(e.status == "reversed" for e in host)

    def where(key: tuple[int, int]) -> str:
        cut = cut_before.get(key)
        after = "no cut" if cut is None else f"cut {cut:.3f} s after it started"
        return f"batch {key[0]:06d} STAN {key[1]:06d} ({after}; seed {report.seed})"

    approved = set()
    for batch, stan, amount, state, rrn, printed in rows:
        key = (int(batch), int(stan))
        entry = standing.get(key)
        if state == "approved":
            approved.add(key)
            if entry is None:
                report.violations.append(f"{where(key)}: approved in the journal, not standing "
                                         f"at the acquirer (lost)")
            elif entry.amount_minor != amount or (entry.rrn or "") != (rrn or ""):
                report.violations.append(f"{where(key)}: journal {amount}/{rrn} vs acquirer "
                                         f"{entry.amount_minor}/{entry.rrn}")
            if not printed:
                report.violations.append(f"{where(key)}: approved but no receipt printed")
        elif state in ("pending", "reversal_pending"):
            report.violations.append(f"{where(key)}: still {state} after the final sale")
        elif entry is not None:
            report.violations.append(f"{where(key)}: {state} in the journal but standing at the "
                                     f"acquirer (charged without the terminal knowing)")
    for key, n in counts.items():
        if n > 1:
            report.violations.append(f"{where(key)}: booked {n} times (double charge)")
        if key not in approved:
            report.violations.append(f"{where(key)}: standing at the acquirer, not an approved "
                                     f"sale of this run's journal")


def render(report: Report) -> str:
    rows = [("sales", report.sales), ("power cuts", report.cuts),
            ("approved as the rig saw them", report.approved_seen),
            ("sales ended by a cut", report.aborted_by_cut),
            ("journal states", ", ".join(f"{k} {v}" for k, v in
                                         sorted(report.journal_states.items()))),
            ("standing sales at the acquirer", report.host_standing),
            ("reversed at the acquirer", report.host_reversed),
            ("seconds", f"{report.seconds:.0f}")]
    lines = [f"  {name:<32} {value}" for name, value in rows]
    lines += [f"  VIOLATION {v}" for v in report.violations]
    lines.append(f"power cuts: {report.sales} sales, {report.cuts} cuts, "
                 f"{len(report.violations)} invariant violations (seed {report.seed})")
    return "\n".join(lines)


def _run(bench_file: Path, workdir: Path, sales: list[Sale], report: Report,
         args: argparse.Namespace) -> None:
    bench = Bench(load_bench(bench_file), workdir=workdir / "rig")
    bench.open()
    try:
        bench.restore_nominal()
        bench.begin_scenario("power-cuts")
        journal = workdir / "bench" / "terminal" / JOURNAL_FILE
        first = _last_entry(journal)
        _login_and_sign_in(bench)
        if args.host_delay_s > 0:
            sale = transaction_type(TxnType.SALE)
            bench.acquirer.control.add_rule(
                {"terminal_id": bench.config.terminal.terminal_id, "mti": sale.mti,
                 "proc_code": sale.proc_code}, {"delay_s": args.host_delay_s})
        drive(bench, sales, report, progress=not args.quiet)
        cut_before: dict[tuple[int, int], float | None] = {}
        batch = int(bench.terminal.status().batch_no or 0)
        for s in sales:
            if s.stan:
                cut_before[(batch, int(s.stan))] = s.cut_after_s if s.cut_done else None
        check(bench, journal, first, report, cut_before)
        bench.end_scenario()
        bench.restore_nominal()
    finally:
        bench.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.power_cuts",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--sales", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--cut-ratio", type=float, default=0.5,
                        help="share of sales with a power cut (default %(default)s)")
    parser.add_argument("--max-cut-s", type=float, default=1.2,
                        help="latest cut instant after the sale starts; a sale on the virtual "
                             "bench takes about 1 s with the host delay (default %(default)s)")
    parser.add_argument("--host-delay-s", type=float, default=0.3,
                        help="the acquirer answers every sale this late, so that cuts land "
                             "while a request is in flight too (default %(default)s)")
    parser.add_argument("--workdir", type=Path, default=REPO / "reports" / "power-cuts")
    parser.add_argument("--json", type=Path, default=REPO / "reports" / "power-cuts.json")
    parser.add_argument("--bench-id", default="",
                        help="run on a virtual bench of this id, beside others (default: the "
                             "bench with the contract names)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    sales = [Sale(n + 1, rng.randint(100, 2000),
                  rng.uniform(0.0, args.max_cut_s) if rng.random() < args.cut_ratio else None)
             for n in range(args.sales)]
    report = Report(args.seed, args.sales)
    workdir = args.workdir.resolve()
    started = time.monotonic()
    try:
        # down even if this is killed
        with virtual_bench(workdir / "bench", bench_id=args.bench_id) as bench_file:
            _run(bench_file, workdir, sales, report, args)
    finally:
        report.seconds = time.monotonic() - started
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(asdict(report), indent=2), encoding="utf-8")
    print(render(report))
    return 1 if report.violations else 0


def _last_entry(journal: Path) -> int:
    if not journal.exists():
        return 0
    db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=5.0)
    try:
        row = db.execute("SELECT MAX(id) FROM entries").fetchone()
    except sqlite3.OperationalError:
        return 0
    finally:
        db.close()
    return int(row[0] or 0)


if __name__ == "__main__":
    raise SystemExit(main())

"""Soak with chaos: N transactions of mixed types on one bench, faults at seeded random protocol
moments, restored between them as an operator would, then invariants checked batch by batch.

    posrig soak --count 300 --seed 7            (make soak N=300 SEED=7; the virtual bench)
    posrig soak --bench lab.yaml --count 5000   (a lab bench)

The plan is a pure function of the seed (:func:`plan`): the operation of each transaction
(a sale by chip, swipe or tap, a refund, a void), its amount, and for a share of them a fault
of the soak's catalogue (:data:`CHAOS`: power cut, brown-out, cable pull, response drop,
corrupt byte, card pulled, paper out) armed on a protocol moment (the request crossing to the
acquirer, the card's GENERATE AC, the receipt printing, an instant after the request) or set
before the transaction starts.  A settlement closes the batch every ``settle_every``
transactions.  The same seed gives the same plan; what the terminal makes of it may differ
from run to run (time-outs race), which is what a soak is for.

After each transaction the operator restores what the fault took: switches the supply on,
plugs the cable back, reloads paper, takes the card back, power-cycles a terminal that stays
silent, logs in and signs in again.  After each settlement the batch is checked:

- every approval the terminal's journal holds (read back through the ECR: QUERY of every trace
  number of the batch) is booked exactly once by the acquirer, same amount, or was reversed;
- no reversal without its original; nothing charged twice or without the terminal knowing;
- the settlement balanced and the acquirer's totals equal the terminal's;
- no fault left active, every instrument nominal;

and at the end, the rig's own memory, open file descriptors and threads stayed flat.  A
violation names the batch, trace number, time, the fault before it and the seed.  The host
side needs the acquirer's ledger (the virtual bench has it; a lab host simulator may): without
it those checks say "not checked", they never pass by default.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import logging
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocols.digits import ascii_digits
from protocols.ecr import EntryMode, TxnStatus
from protocols.faults import FaultKind, FaultSpec
from protocols.ledger import KIND_REVERSAL, KIND_SETTLEMENT, Status
from protocols.transactions import TRANSACTIONS, OriginalRef, TxnType
from rigs.bench import Bench
from rigs.capabilities import Capability
from rigs.cardholder import Cardholder, pay, take_card_back
from rigs.errors import DeviceStateError, NoResponse, RigError, TransportError
from rigs.faults import FaultRecord
from rigs.host import LedgerEntry
from rigs.terminal import Outcome, Settlement, Totals
from rigs.triggers import Trigger, on_apdu, on_mti, on_terminal

log = logging.getLogger(__name__)

TXN_BOUND = 40.0
"""Bound on one transaction (owed reversals first, the request, the answer, the receipt)."""
SETTLE_BOUND = 120.0
RESPONSIVE_BOUND = 4.0
"""How long the operator waits for a terminal to answer after a fault before power-cycling it
(a brown-out or power cut reboots it in about a second)."""
RECOVERY_OFF_MS = 500.0
IDLE_BOUND = 10.0
"""How long a terminal may stay busy after a transaction (printing held receipts)."""
AMOUNTS = (1, 300)
"""Sale amounts in minor units: small, so thousands of sales stay within the test card's
balance (a decline for funds would be a true result, but not the soak's point)."""


class Op(enum.StrEnum):
    CHIP = "sale by chip"
    SWIPE = "sale by swipe"
    TAP = "sale by tap"
    REFUND = "refund"
    VOID = "void"


SALE_ENTRY: Mapping[Op, EntryMode] = {Op.CHIP: EntryMode.CHIP, Op.SWIPE: EntryMode.SWIPE,
                                      Op.TAP: EntryMode.TAP}
OP_WEIGHTS: Mapping[Op, int] = {Op.CHIP: 5, Op.SWIPE: 2, Op.TAP: 3, Op.REFUND: 1, Op.VOID: 1}
OP_TYPE: Mapping[Op, TxnType] = {**dict.fromkeys(SALE_ENTRY, TxnType.SALE),
                                 Op.REFUND: TxnType.REFUND, Op.VOID: TxnType.VOID}


# -- the catalogue of faults -----------------------------------------------------------------------
class Moment(enum.StrEnum):
    BEFORE = "set before the transaction starts"
    REQUEST = "as the request crosses to the acquirer"
    GENERATE_AC = "as the terminal asks the card for its cryptogram"
    PRINT = "as the receipt prints"
    INSTANT = "at a random instant after the request to the terminal"


@dataclass(frozen=True)
class Chaos:
    """One fault of the soak: what it is, the moments it may be armed on, what it needs of the
    bench and the transaction, and what the operator does about it afterwards."""

    name: str
    kind: FaultKind
    moments: tuple[Moment, ...]
    needs: Capability
    operator: str
    card_only: bool = False
    """Only in a sale by chip (the card must be in the slot)."""

    def params(self, rng: random.Random, op: Op) -> dict[str, Any]:
        row = TRANSACTIONS.get(OP_TYPE[op])
        if self.kind is FaultKind.POWER_CYCLE:  # the operator switches it on again meanwhile
            return {"off_ms": rng.choice((200, 500, 1000))}
        if self.kind is FaultKind.BROWNOUT_DIP:  # below the 6.0 V brown-out: the MCU resets
            return {"volts": round(rng.uniform(3.0, 5.5), 2), "ms": rng.choice((80, 150, 300))}
        if self.kind is FaultKind.DROP_MESSAGE:
            return {"mti": answer_mti(row.mti), "times": 1}
        if self.kind is FaultKind.CORRUPT_BYTE:
            return {"mti": rng.choice((row.mti, answer_mti(row.mti))),
                    "offset": rng.randint(12, 40), "times": 1}
        if self.kind is FaultKind.CARD_PULLED:
            return {"ins": rng.choice(("GENERATE AC", "READ RECORD", "GET PROCESSING OPTIONS")),
                    "nth": 1}
        return {}


CHAOS: tuple[Chaos, ...] = (
    Chaos("power cut", FaultKind.POWER_CYCLE,
          (Moment.REQUEST, Moment.GENERATE_AC, Moment.PRINT, Moment.INSTANT), Capability.POWER,
          "switches the supply on again (after the time the plan gives)"),
    Chaos("brown-out", FaultKind.BROWNOUT_DIP,
          (Moment.REQUEST, Moment.GENERATE_AC, Moment.INSTANT), Capability.POWER,
          "waits for the terminal to restart"),
    Chaos("cable pull", FaultKind.CABLE_PULL, (Moment.REQUEST, Moment.INSTANT),
          Capability.NETWORK, "plugs the network cable back"),
    Chaos("response drop", FaultKind.DROP_MESSAGE, (Moment.BEFORE,), Capability.NETWORK,
          "lets the terminal recover on its own"),
    Chaos("corrupt byte", FaultKind.CORRUPT_BYTE, (Moment.BEFORE,), Capability.NETWORK,
          "lets the terminal recover on its own"),
    Chaos("card pulled", FaultKind.CARD_PULLED, (Moment.BEFORE,), Capability.CARDS,
          "takes the card back", card_only=True),
    Chaos("paper out", FaultKind.PAPER_OUT, (Moment.BEFORE, Moment.PRINT),
          Capability.PAPER_SENSOR, "reloads paper"),
)
CHAOS_BY_NAME: Mapping[str, Chaos] = {c.name: c for c in CHAOS}


def answer_mti(mti: str) -> str:
    """The answer's MTI (0200 → 0210, 0220 → 0230)."""
    return f"{int(mti) + 10:04d}"


MAX_DELAY_MS: Mapping[Moment, float] = {Moment.REQUEST: 250.0, Moment.INSTANT: 600.0}
"""The latest a fault fires after its moment (a sale on the virtual bench takes ~0.7 s)."""


@dataclass(frozen=True)
class Planned:
    n: int
    op: Op
    amount: int
    chaos: str = ""
    moment: Moment | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    delay_ms: float = 0.0
    nth: int = 1


def plan(seed: int, count: int, *, fault_ratio: float, chaos: Sequence[Chaos] = CHAOS,
         ops: Sequence[Op] = tuple(Op)) -> list[Planned]:
    """The soak's transactions, a pure function of its arguments."""
    rng = random.Random(seed)
    weights = [OP_WEIGHTS[o] for o in ops]
    out = []
    for n in range(1, count + 1):
        op = rng.choices(list(ops), weights)[0]
        amount = rng.randint(*AMOUNTS)
        if not chaos or rng.random() >= fault_ratio:
            out.append(Planned(n, op, amount))
            continue
        fitting = [c for c in chaos if not c.card_only or op is Op.CHIP]
        if not fitting:  # only card faults asked for, and this is no chip sale
            out.append(Planned(n, op, amount))
            continue
        c = rng.choice(fitting)
        moments = [m for m in c.moments if m is not Moment.GENERATE_AC or op is Op.CHIP]
        moment = rng.choice(moments)
        out.append(Planned(n, op, amount, c.name, moment, c.params(rng, op),
                           delay_ms=round(rng.uniform(0.0, MAX_DELAY_MS.get(moment, 0.0)), 1),
                           nth=rng.choice((1, 2)) if moment is Moment.GENERATE_AC else 1))
    return out


def trigger_for(p: Planned) -> Trigger | None:
    """The trigger *p*'s fault is armed on (None: set before the transaction starts)."""
    row = TRANSACTIONS.get(OP_TYPE[p.op])
    if p.moment is Moment.REQUEST:
        return on_mti(row.mti, delay_ms=p.delay_ms, text=f"{p.delay_ms:.0f} ms after the "
                                                          f"{row.mti} crosses to the acquirer")
    if p.moment is Moment.GENERATE_AC:
        return on_apdu("GENERATE AC", nth=p.nth, text=f"at GENERATE AC #{p.nth}")
    if p.moment is Moment.PRINT:
        return on_terminal("PRINT", text="as the receipt prints")
    if p.moment is Moment.INSTANT:
        from rigs.events import Source

        return Trigger(source=Source.TERMINAL, kind="request", name=frozenset({row.ecr_code}),
                       delay_ms=p.delay_ms,
                       text=f"{p.delay_ms:.0f} ms after the {row.ecr_name} request")
    return None


# -- what happened ---------------------------------------------------------------------------------
@dataclass
class Done:
    """One transaction as the rig saw it."""

    n: int
    op: str
    amount: int
    batch: str
    result: str = ""
    stan: str = ""
    chaos: str = ""
    moment: str = ""
    fired: bool = False
    started: float = 0.0
    seconds: float = 0.0

    def fault_text(self) -> str:
        if not self.chaos:
            return "no fault"
        return f"{self.chaos} {self.moment}" + ("" if self.fired else " (never fired)")


@dataclass
class Violation:
    check: str
    batch: str
    stan: str
    when: str
    fault_before: str
    text: str
    seed: int

    def line(self) -> str:
        where = f"batch {self.batch}" + (f" STAN {self.stan}" if self.stan else "")
        return (f"{self.check}: {where} at {self.when or '?'}: {self.text}; fault before it: "
                f"{self.fault_before}; replay: seed {self.seed}")


class Check(enum.StrEnum):
    BOOKED_ONCE = "every approval in the journal booked exactly once (or reversed)"
    REVERSAL_ORIGINAL = "no reversal without its original"
    NO_DOUBLE_CHARGE = "no double charge, nothing charged the terminal does not know"
    TOTALS = "settlement balanced, acquirer's totals equal the terminal's"
    NO_FAULT_LEFT = "no fault left active, every instrument nominal"
    FLAT = "rig memory, open files and threads flat"


@dataclass
class CheckTally:
    checked: int = 0
    violations: int = 0
    note: str = ""


@dataclass
class Sample:
    after: int
    rss_kib: int
    fds: int
    threads: int


@dataclass
class SoakReport:
    seed: int
    count: int
    settle_every: int
    fault_ratio: float
    bench: str = ""
    done: int = 0
    results: dict[str, int] = field(default_factory=dict)
    ops: dict[str, int] = field(default_factory=dict)
    faults_planned: dict[str, int] = field(default_factory=dict)
    faults_fired: dict[str, int] = field(default_factory=dict)
    settlements: int = 0
    journal_entries: int = 0
    host_rows: int = 0
    checks: dict[str, CheckTally] = field(default_factory=lambda: {c.value: CheckTally()
                                                                   for c in Check})
    violations: list[Violation] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    transactions: list[Done] = field(default_factory=list)
    power_cycles: list[str] = field(default_factory=list)
    """Terminals the operator had to switch off and on again because they stayed silent."""
    seconds: float = 0.0
    stopped: str = ""

    @property
    def faults_injected(self) -> int:
        return sum(self.faults_fired.values())

    def add(self, v: Violation) -> None:
        self.violations.append(v)
        self.checks[v.check].violations += 1
        log.error("soak violation: %s", v.line())

    def last_line(self) -> str:
        return (f"soak: {self.done} transactions, {self.faults_injected} faults injected, "
                f"{len(self.violations)} invariant violations")

    def to_json(self) -> str:
        doc = dataclasses.asdict(self)
        doc["faults_injected"] = self.faults_injected
        doc["rate_per_s"] = round(self.done / self.seconds, 2) if self.seconds else 0.0
        doc["last_line"] = self.last_line()
        return json.dumps(doc, indent=2, ensure_ascii=False)

    def table(self) -> str:
        rows = [
            ("transactions", f"{self.done} of {self.count} ({_counts(self.ops)})"),
            ("results", _counts(self.results)),
            ("faults injected (fired)", f"{self.faults_injected} ({_counts(self.faults_fired)})"),
            ("faults armed, never fired", str(sum(self.faults_planned.values())
                                              - self.faults_injected)),
            ("settlements", str(self.settlements)),
            ("silent terminal power-cycled", str(len(self.power_cycles))),
            ("journal entries read back", str(self.journal_entries)),
            ("acquirer ledger rows", str(self.host_rows)),
            ("rate", f"{self.done / self.seconds:.2f} transactions/s" if self.seconds else "-"),
            ("seconds", f"{self.seconds:.0f}"),
        ]
        if self.samples:
            first, last = self.samples[0], self.samples[-1]
            rows.append(("rig RSS / fds / threads", f"{first.rss_kib // 1024} MiB → "
                         f"{last.rss_kib // 1024} MiB, {first.fds} → {last.fds}, "
                         f"{first.threads} → {last.threads}"))
        width = max(len(r[0]) for r in rows)
        lines = [f"  {name:<{width}}  {value}" for name, value in rows]
        lines.append("")
        lines.append(f"  {'invariant':<70} {'checked':>8} {'violations':>10}")
        for name, tally in self.checks.items():
            verdict = "HOLDS" if tally.violations == 0 and tally.checked else (
                "NOT CHECKED" if not tally.checked else "VIOLATED")
            lines.append(f"  {name:<70} {tally.checked:>8} {tally.violations:>10}  {verdict}"
                         + (f" ({tally.note})" if tally.note else ""))
        if self.stopped:
            lines.append(f"  STOPPED: {self.stopped}")
        for line in self.power_cycles[:20]:
            lines.append(f"  POWER-CYCLED {line}")
        for v in self.violations[:50]:
            lines.append(f"  VIOLATION {v.line()}")
        if len(self.violations) > 50:
            lines.append(f"  … {len(self.violations) - 50} more in the JSON summary")
        lines.append(self.last_line())
        return "\n".join(lines)


def _counts(c: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(c.items())) or "-"


def sample(after: int) -> Sample:
    """The rig process's resident memory, open file descriptors and threads now (Linux)."""
    with open("/proc/self/statm", encoding="ascii") as f:
        rss_pages = int(f.read().split()[1])
    return Sample(after, rss_pages * os.sysconf("SC_PAGE_SIZE") // 1024,
                  len(os.listdir("/proc/self/fd")), threading.active_count())


FD_SLACK = 4
THREAD_SLACK = 2
RSS_SLACK_KIB = 24 * 1024
"""How much the rig may grow after its warm-up (the first batches fill caches and pools)."""


def flat(samples: Sequence[Sample]) -> list[str]:
    """What grew after the warm-up (a fifth of the samples, at least two), beyond the slack."""
    if len(samples) < 4:
        return []
    base = samples[max(2, len(samples) // 5) - 1]
    later = samples[max(2, len(samples) // 5):]
    out = []
    for what, get, slack, unit in (("open file descriptors", lambda s: s.fds, FD_SLACK, ""),
                                   ("threads", lambda s: s.threads, THREAD_SLACK, ""),
                                   ("resident memory", lambda s: s.rss_kib, RSS_SLACK_KIB,
                                    " KiB")):
        top = max(later, key=get)
        if get(top) - get(base) > slack:
            out.append(f"{what} grew from {get(base)}{unit} (after transaction {base.after}) to "
                       f"{get(top)}{unit} (after transaction {top.after}), more than "
                       f"{slack}{unit}")
    return out


# -- the soak --------------------------------------------------------------------------------------
@dataclass
class Sale:
    """An approved sale of the open batch, what refunds and voids may name."""

    stan: str
    rrn: str
    amount: int
    refunded: int = 0
    voided: bool = False
    #: A refund or void of it started and ended without an approval the rig saw (a fault may
    #: have cut the answer off after the acquirer booked it): the operator names it no more.
    unsure: bool = False

    @property
    def refundable(self) -> bool:
        return self.amount > self.refunded and not self.voided and not self.unsure

    @property
    def voidable(self) -> bool:
        return not self.voided and not self.refunded and not self.unsure


class Soak:
    """Drives the plan on an open bench and checks each batch (see the module's text)."""

    def __init__(self, bench: Bench, planned: Sequence[Planned], report: SoakReport, *,
                 evidence_dir: Path, progress: Callable[[str], None] | None = None,
                 progress_every: int = 25) -> None:
        self.bench = bench
        self.planned = planned
        self.report = report
        self.evidence_dir = evidence_dir
        self.progress = progress
        self.progress_every = progress_every
        self.rng = random.Random(report.seed ^ 0x50A4)
        self.done: list[Done] = report.transactions
        self.sales: list[Sale] = []
        self.batch = ""
        self.batch_open = False
        self.batch_first = 0
        self.last_stan_checked = 0
        self.ledger_mark = 0
        self.started = 0.0
        cards = bench.config.cards
        bank = cards.bank if cards is not None else {}
        self.card = "good" if "good" in bank else next(iter(bank), "")
        self.swipe_card = "magstripe" if "magstripe" in bank else self.card
        self.tid = bench.config.terminal.terminal_id or ""
        self.has_ledger = bench.acquirer.has_ledger
        self.has_totals = bench.has(Capability.HOST_CONTROL)

    # -- driving -----------------------------------------------------------------------------
    def run(self) -> None:
        bench = self.bench
        self.started = time.monotonic()
        self._log_in_and_sign_in()
        if bench.terminal.status().journal_entries:  # start from a settled terminal
            self._settle()
        self._begin_batch()
        self.report.samples.append(sample(0))
        try:
            for p in self.planned:
                self._one(p)
                if p.n % self.report.settle_every == 0 or p.n == len(self.planned):
                    self._settle_and_check(p.n)
                if self.progress and (p.n % self.progress_every == 0 or p.n == len(self.planned)):
                    self.progress(self._progress_line(p.n))
        finally:
            self.report.seconds = time.monotonic() - self.started
            if self.batch_open:  # stopped inside a batch: its evidence says what happened
                self._keep_evidence(bench.end_scenario())
        flat_problems = flat(self.report.samples)
        tally = self.report.checks[Check.FLAT]
        tally.checked = len(self.report.samples)
        for problem in flat_problems:
            self.report.add(Violation(Check.FLAT, self.batch, "", _now(), "the whole run",
                                      problem, self.report.seed))

    def _progress_line(self, n: int) -> str:
        r = self.report
        rate = n / max(time.monotonic() - self.started, 1e-6)
        return (f"  {n}/{r.count} transactions, {rate:.2f}/s, {r.faults_injected} faults, "
                f"{len(r.violations)} violations, batch {self.batch}")

    def _begin_batch(self) -> None:
        bench = self.bench
        bench.begin_scenario(f"soak-{len(self.done) + 1:06d}")
        self.batch_open = True
        self.batch = bench.terminal.status().batch_no
        self.batch_first = len(self.done)
        self.sales = []
        if self.has_ledger:
            self.ledger_mark = bench.acquirer.ledger.mark()

    def _one(self, p: Planned) -> None:
        bench = self.bench
        op = self._feasible(p.op)
        done = Done(p.n, op.value, p.amount, self.batch, chaos=p.chaos,
                    moment=p.moment.value if p.moment else "", started=time.time())
        self.report.ops[op.value] = self.report.ops.get(op.value, 0) + 1
        rec = None
        if p.chaos and (op is p.op or not CHAOS_BY_NAME[p.chaos].card_only):
            rec = self._arm(p)
        mark = len(bench.terminal.events)
        try:
            outcome = self._do(op, p.amount)
            done.result, done.stan = outcome.result, outcome.stan
            if outcome.ok and op in SALE_ENTRY:
                self.sales.append(Sale(outcome.stan, outcome.rrn, p.amount))
        except (DeviceStateError, NoResponse, TransportError) as exc:
            done.result = f"interrupted ({type(exc).__name__})"
            log.info("soak #%d %s interrupted: %s", p.n, op.value, exc)
        finally:
            self._recover(p, rec, done, mark)
        done.seconds = round(time.time() - done.started, 3)
        self.done.append(done)
        self.report.done = len(self.done)
        self.report.results[done.result] = self.report.results.get(done.result, 0) + 1

    def _feasible(self, op: Op) -> Op:
        """A refund or void needs an approved sale of the open batch to name: else a chip
        sale takes its place."""
        if op is Op.REFUND and not any(s.refundable for s in self.sales):
            return Op.CHIP
        if op is Op.VOID and not any(s.voidable for s in self.sales):
            return Op.CHIP
        return op

    def _arm(self, p: Planned) -> FaultRecord:
        spec = FaultSpec.of(CHAOS_BY_NAME[p.chaos].kind, **dict(p.params))
        self.report.faults_planned[p.chaos] = self.report.faults_planned.get(p.chaos, 0) + 1
        trigger = trigger_for(p)
        if trigger is None:
            return self.bench.inject(spec)
        return self.bench.arm(spec, trigger)

    def _do(self, op: Op, amount: int) -> Outcome:
        bench = self.bench
        terminal = bench.terminal
        if op in SALE_ENTRY:
            entry = SALE_ENTRY[op]
            card = self.swipe_card if op is Op.SWIPE else self.card
            who = Cardholder(card, entry, bench.card_pin(card), chip_retries=1)  # reinserts once
            return pay(bench, amount, who, TXN_BOUND)
        if op is Op.REFUND:
            sale = self.rng.choice([s for s in self.sales if s.refundable])
            amount = self.rng.randint(1, sale.amount - sale.refunded)
            record = terminal.query(sale.stan)
            when = record.fields.get("time", "")
            ref = (OriginalRef.by_rrn(sale.rrn, when[4:8]) if sale.rrn and len(when) >= 8
                   else OriginalRef.by_trace(sale.stan))
            sale.unsure = True  # until approved: an answer cut off may have been booked
            terminal.start_transaction(TxnType.REFUND, amount, original=ref)
            outcome = terminal.wait_outcome(timeout=TXN_BOUND)
            if outcome.ok:
                sale.refunded += amount
                sale.unsure = False
            return outcome
        sale = [s for s in self.sales if s.voidable][-1]
        sale.unsure = True
        terminal.start_transaction(TxnType.VOID, None, original=OriginalRef.by_trace(sale.stan))
        outcome = terminal.wait_outcome(timeout=TXN_BOUND)
        if outcome.ok:
            sale.voided, sale.unsure = True, False
        return outcome

    # -- the operator ------------------------------------------------------------------------
    def _recover(self, p: Planned, rec: FaultRecord | None, done: Done, mark: int) -> None:
        """Clear the fault as the operator would, bring the terminal back to idle, logged in
        and signed in; a fault still active afterwards is a violation."""
        bench = self.bench
        if rec is not None:
            bench.armer.settle()
            bench.sync_faults()
            done.fired = bool(rec.fired)
            if done.fired:
                self.report.faults_fired[p.chaos] = self.report.faults_fired.get(p.chaos, 0) + 1
            bench.clear_fault(rec, by=f"operator {CHAOS_BY_NAME[p.chaos].operator}")
        terminal = bench.terminal
        silent: NoResponse | None = None
        if terminal.pending_transaction is not None:  # interrupted: the reboot ends it
            try:
                terminal.wait_outcome(timeout=RESPONSIVE_BOUND)
            except DeviceStateError:
                pass
            except NoResponse as exc:
                silent = exc
        if bench.cards.inserted is not None:
            try:
                take_card_back(bench)
            except NoResponse:  # a terminal rebooting does not report the card leaving
                if bench.cards.inserted is not None:
                    bench.cards.remove()
        if silent is None:
            try:
                terminal.wait_ready(timeout=RESPONSIVE_BOUND)
            except NoResponse as exc:
                silent = exc
        if silent is not None:
            self._power_cycle(p, done, silent)
        self._until_idle(p, done)
        self._until_idle(p, done)
        self._log_in_and_sign_in()
        left = bench.faults.active()
        tally = self.report.checks[Check.NO_FAULT_LEFT]
        tally.checked += 1
        for r in left:
            self.report.add(Violation(Check.NO_FAULT_LEFT, self.batch, done.stan, _now(),
                                      done.fault_text(), f"fault {r.kind.value} #{r.id} still "
                                      f"active after the operator's recovery", self.report.seed))
            bench.clear_fault(r, by="soak: left active")

    def _power_cycle(self, p: Planned, done: Done, why: NoResponse) -> None:
        """The operator switches a terminal that stays silent off and on again (TS-18); the
        report counts each one with the transaction and the fault before it."""
        bench = self.bench
        log.warning("soak #%d: the terminal is silent after %s (%s); power-cycling it", p.n,
                    done.fault_text(), why)
        self.report.power_cycles.append(f"#{p.n} {done.op} after {done.fault_text()}: {why}")
        terminal = bench.terminal
        bench.power.power_cycle(RECOVERY_OFF_MS)
        if terminal.pending_transaction is not None:
            try:
                terminal.wait_outcome(timeout=bench.config.terminal.boot_timeout)
            except DeviceStateError:
                pass  # the reboot ended it
        terminal.wait_ready(timeout=bench.config.terminal.boot_timeout)

    def _until_idle(self, p: Planned, done: Done) -> None:
        """Wait (bounded) until the terminal is idle: it may still be printing a receipt it held
        for paper, or be answering the interrupted transaction; one that stays busy is brought
        back the way the bench restores it, and that is a violation of its own."""
        try:
            self.bench.terminal.wait_idle(IDLE_BOUND)
            return
        except NoResponse as exc:
            state = str(exc)
        self.report.add(Violation(Check.NO_FAULT_LEFT, self.batch, done.stan, _now(),
                                  done.fault_text(), f"after #{p.n}: {state}", self.report.seed))
        self.bench.restore_nominal()

    def _log_in_and_sign_in(self, role: str = "operator") -> None:
        terminal = self.bench.terminal
        status = terminal.status()
        if status.operator is None or role != "operator":
            creds = self.bench.config.terminal.operators[role]
            outcome = terminal.login(creds.id, creds.password)
            if not outcome.ok:
                raise RigError(f"soak: the {role} cannot log in: {outcome.result} "
                               f"{outcome.display!r}")
        if not status.signed_in:
            outcome = terminal.sign_in()
            if not outcome.ok:  # once more: the first may meet a reversal still owed
                outcome = terminal.sign_in()
            if not outcome.ok:
                raise RigError(f"soak: sign-in failed twice: {outcome.result} "
                               f"{outcome.display!r}")

    # -- settlement and the checks -----------------------------------------------------------
    def _settle_and_check(self, n: int) -> None:
        bench = self.bench
        terminal = bench.terminal
        before = terminal.totals()
        settlement = self._settle()
        self.report.settlements += 1
        batch_done = self.done[self.batch_first:]
        violations_before = len(self.report.violations)
        self._check_totals(before, settlement, batch_done)
        self._check_batch(batch_done)
        evidence = bench.end_scenario()
        self.batch_open = False
        self._check_nominal(batch_done)
        if len(self.report.violations) > violations_before:
            self._keep_evidence(evidence)
        self.report.samples.append(sample(n))
        if n < len(self.planned):
            self._begin_batch()

    def _settle(self) -> Settlement:
        self._log_in_and_sign_in("admin")  # settlement is the administrator's
        try:
            return self.bench.terminal.settle(timeout=SETTLE_BOUND)
        finally:
            self._log_in_and_sign_in("operator")

    def _violation(self, check: Check, stan: str, when: str, text: str,
                   batch_done: Sequence[Done]) -> None:
        self.report.add(Violation(check, self.batch, stan, when,
                                  fault_before(batch_done, stan), text, self.report.seed))

    def _check_totals(self, before: Totals, settlement: Settlement,
                      batch_done: Sequence[Done]) -> None:
        tally = self.report.checks[Check.TOTALS]
        tally.checked += 1
        if not settlement.ok:
            self._violation(Check.TOTALS, "", _now(), f"settlement of batch {self.batch} "
                            f"failed: {settlement.result} {settlement.display!r}", batch_done)
            return
        if not self.has_totals:
            tally.note = "acquirer's totals not readable on this bench: the settlement's own " \
                         "balance only"
            if not settlement.balanced:
                self._violation(Check.TOTALS, "", _now(), "the settlement did not balance "
                                f"({settlement.uploaded} uploaded)", batch_done)
            return
        host = self.bench.acquirer.control.totals(self.tid, settlement.batch or self.batch)
        sales = before.by_type.get(TxnType.SALE.value, (0, 0))
        refunds = before.by_type.get(TxnType.REFUND.value, (0, 0))
        mine = (sales[0], sales[1], refunds[0], refunds[1])
        theirs = (host.debit_count, host.debit_amount, host.credit_count, host.credit_amount)
        if mine != theirs or not host.settled:
            self._violation(Check.TOTALS, "", _now(),
                            f"terminal totals (sales {mine[0]}/{mine[1]}, refunds "
                            f"{mine[2]}/{mine[3]}) vs acquirer's (debits {theirs[0]}/"
                            f"{theirs[1]}, credits {theirs[2]}/{theirs[3]}, settled "
                            f"{host.settled}); settlement balanced={settlement.balanced}, "
                            f"uploaded {settlement.uploaded}", batch_done)

    def _journal(self, host: Sequence[LedgerEntry], batch_done: Sequence[Done]) -> list[Outcome]:
        """The terminal's journal of the batch just settled, read back through QUERY for every
        trace number from the last one checked to the highest the batch used."""
        known = [int(d.stan) for d in batch_done if ascii_digits(d.stan)]
        known += [int(e.stan) for e in host if e.stan and ascii_digits(e.stan)]
        if not known:
            return []
        low = self.last_stan_checked + 1 if self.last_stan_checked else max(1, min(known) - 5)
        high = max(known)
        out = []
        for stan in range(low, high + 1):
            got = self.bench.terminal.query(stan, batch=self.batch)
            if got.ok:
                out.append(got)
        self.last_stan_checked = high
        return out

    def _check_batch(self, batch_done: Sequence[Done]) -> None:
        report = self.report
        if not self.has_ledger:
            for check in (Check.BOOKED_ONCE, Check.REVERSAL_ORIGINAL, Check.NO_DOUBLE_CHARGE):
                report.checks[check].note = "the bench has no acquirer ledger"
            return
        rows = [e for e in self.bench.acquirer.ledger.entries(since_id=self.ledger_mark)
                if e.terminal_id == self.tid]
        report.host_rows += len(rows)
        journal = self._journal(rows, batch_done)
        report.journal_entries += len(journal)
        findings, checked = check_batch(rows, [JournalRecord.of(j) for j in journal])
        for check, n in checked.items():
            report.checks[check].checked += n
        for f in findings:
            self._violation(f.check, f.stan, f.when, f.text, batch_done)

    def _check_nominal(self, batch_done: Sequence[Done]) -> None:
        tally = self.report.checks[Check.NO_FAULT_LEFT]
        for instrument in self.bench.instruments():
            tally.checked += 1
            try:
                ok = instrument.is_nominal()
                why = "not nominal"
            except RigError as exc:
                ok, why = False, f"checking nominal: {exc}"
            if not ok:
                self._violation(Check.NO_FAULT_LEFT, "", _now(), f"{instrument!r} {why} at the "
                                f"end of the batch", batch_done)
                self.bench.restore_nominal()

    def _keep_evidence(self, evidence: Sequence[Any]) -> None:
        """A batch with a violation keeps its evidence (all masked): the ECR transcript, the
        APDU trace, the acquirer's ledger, the faults and the timeline."""
        folder = self.evidence_dir / f"batch-{self.batch}"
        folder.mkdir(parents=True, exist_ok=True)
        for n, ev in enumerate(evidence):
            if ev.kind in ("text", "csv") and isinstance(ev.content, str):
                name = "".join(c if c.isalnum() else "-" for c in ev.name)[:60]
                (folder / f"{n:02d}-{name}.{'csv' if ev.kind == 'csv' else 'txt'}").write_text(
                    ev.content, encoding="utf-8")


@dataclass(frozen=True)
class JournalRecord:
    """One entry of the terminal's journal as QUERY reports it."""

    type: str
    stan: str
    status: str
    amount: int | None
    time: str

    @classmethod
    def of(cls, answer: Outcome) -> JournalRecord:
        f = answer.fields
        return cls(f.get("type", ""), f.get("stan", ""), f.get("status", ""),
                   answer.amount_minor, f.get("time", ""))


@dataclass(frozen=True)
class Finding:
    check: Check
    stan: str
    when: str
    text: str


APPROVED_STATES = frozenset({TxnStatus.APPROVED, TxnStatus.VOIDED, TxnStatus.REFUNDED})
STANDING = frozenset({Status.BOOKED, Status.VOIDED})
"""Host statuses of an approved row the money moved for (a voided sale was booked first)."""


def check_batch(rows: Sequence[LedgerEntry], journal: Sequence[JournalRecord]
                ) -> tuple[list[Finding], Counter[Check]]:
    """The ledger invariants of one settled batch: the acquirer's rows of the terminal against
    the terminal's journal.  Returns what is violated and how many items each check saw."""
    table = TRANSACTIONS.by_iso
    findings: list[Finding] = []
    checked: Counter[Check] = Counter()
    standing: dict[tuple[str, str], list[LedgerEntry]] = {}
    for e in rows:
        row = table.get((e.mti or "", e.proc_code or ""))
        if row is None or e.kind in (KIND_REVERSAL, KIND_SETTLEMENT):
            continue
        if e.approved and e.status in STANDING:
            standing.setdefault((row.type.value, f"{int(e.stan or 0):06d}"), []).append(e)
    by_key = {(j.type, j.stan): j for j in journal}
    for j in journal:
        booked = standing.get((j.type, j.stan), [])
        checked[Check.BOOKED_ONCE] += 1
        if j.status in APPROVED_STATES:
            if len(booked) != 1:
                findings.append(Finding(Check.BOOKED_ONCE, j.stan, j.time,
                                        f"{j.type} {j.status} in the journal, booked "
                                        f"{len(booked)} times by the acquirer"))
            elif j.amount is not None and booked[0].amount_minor != j.amount:
                findings.append(Finding(Check.BOOKED_ONCE, j.stan, j.time,
                                        f"{j.type} of {j.amount} in the journal, booked as "
                                        f"{booked[0].amount_minor}"))
        elif j.status == TxnStatus.PENDING:
            findings.append(Finding(Check.BOOKED_ONCE, j.stan, j.time,
                                    f"{j.type} still pending (or owing its reversal) after "
                                    f"the settlement"))
        elif booked:
            findings.append(Finding(Check.NO_DOUBLE_CHARGE, j.stan, j.time,
                                    f"{j.type} {j.status} in the journal but booked by the "
                                    f"acquirer (charged without the terminal knowing)"))
    for (kind, stan), entries in standing.items():
        checked[Check.NO_DOUBLE_CHARGE] += 1
        if len(entries) > 1:
            findings.append(Finding(Check.NO_DOUBLE_CHARGE, stan, entries[0].received_at,
                                    f"{kind} booked {len(entries)} times"))
        if (kind, stan) not in by_key:
            findings.append(Finding(Check.NO_DOUBLE_CHARGE, stan, entries[0].received_at,
                                    f"{kind} booked by the acquirer, not in the terminal's "
                                    f"journal"))
    for e in rows:
        if e.kind != KIND_REVERSAL:
            continue
        checked[Check.REVERSAL_ORIGINAL] += 1
        ostan = f"{int(e.original_stan or 0):06d}"
        originals = [j for j in journal if j.stan == ostan]
        if e.status == Status.NETTED and e.original_id is None:
            findings.append(Finding(Check.REVERSAL_ORIGINAL, ostan, e.received_at,
                                    "a reversal netted against no original row"))
        elif not originals:
            findings.append(Finding(Check.REVERSAL_ORIGINAL, ostan, e.received_at,
                                    "a reversal of a trace number the terminal's journal does "
                                    "not hold"))
        elif all(j.status != TxnStatus.REVERSED for j in originals):
            findings.append(Finding(Check.REVERSAL_ORIGINAL, ostan, e.received_at,
                                    f"a reversal of a transaction the journal holds as "
                                    f"{originals[0].status}"))
    return findings, checked


def fault_before(batch_done: Sequence[Done], stan: str) -> str:
    """The last fault the rig armed up to the transaction that used *stan* (the transactions
    whose own trace number the rig never learnt are placed by those around them)."""
    target = int(stan) if ascii_digits(stan) else None
    last = "no fault in the batch"
    for d in batch_done:
        if target is not None and ascii_digits(d.stan) and int(d.stan) > target:
            break
        if d.chaos:
            last = f"#{d.n} {d.op}: {d.fault_text()}"
        if target is not None and ascii_digits(d.stan) and int(d.stan) == target:
            break
    return last


def _now() -> str:
    return dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")


def usable_chaos(bench: Bench, names: Sequence[str] | None = None) -> list[Chaos]:
    """The catalogue's faults this bench can carry out (and, if *names*, only those)."""
    return [c for c in CHAOS if bench.has(c.needs) and (names is None or c.name in names)]


def run_soak(bench: Bench, *, seed: int, count: int, settle_every: int, fault_ratio: float,
             evidence_dir: Path, progress: Callable[[str], None] | None = None,
             chaos_names: Sequence[str] | None = None) -> SoakReport:
    """Open *bench*, restore it, run the soak and restore it again; the report holds the
    figures, the invariants and the violations (a bench that breaks stops the soak and says
    why in ``stopped``)."""
    report = SoakReport(seed, count, settle_every, fault_ratio, bench=bench.config.bench.name)
    bench.defer_plots = True  # a supply plot per batch is drawn only if asked, never here
    bench.open()
    try:
        bench.restore_nominal()
        if not bench.has(Capability.CARDS) or bench.config.cards is None \
                or not bench.config.cards.bank:
            raise RigError(f"bench {bench.config.bench.name}: a soak needs a card bank with "
                           f"at least one card (cards.bank)")
        chaos = usable_chaos(bench, chaos_names)
        planned = plan(seed, count, fault_ratio=fault_ratio, chaos=chaos)
        soak = Soak(bench, planned, report, evidence_dir=evidence_dir, progress=progress)
        try:
            soak.run()
        except RigError as exc:
            report.stopped = (f"after {report.done} transactions: {exc} (seed {seed}; the "
                              f"evidence of the last batch is in {evidence_dir})")
            log.error("soak stopped: %s", report.stopped)
        bench.restore_nominal()
    finally:
        bench.close()
    return report



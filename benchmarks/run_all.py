"""Every benchmark figure next to its baseline, measured in the same run; JSON and a table.

    python -m benchmarks.run_all [--quick] [--out reports/benchmarks.json] [--only NAME,…]
    python benchmarks/run_all.py …

Writes a JSON list, one object per figure::

    {"name", "median", "p95", "unit", "baseline", "baseline_median", "ratio", "n", "better", …}

``ratio`` = median / baseline_median; ``better`` says which way is better ("lower" for times and
memory, "higher" for throughput); ``target_ratio`` and ``meets_target`` where the project set a
target; ``skipped`` (with the reason) or ``error`` when a figure could not be measured.  Then the
same as a table.  What each figure and each baseline is: docs/performance.md.

No root: ``ecr_rtt`` and ``scpi_rtt`` (in this process).  Root (skipped with the reason
otherwise): ``apdu_rtt``, ``iso_rtt`` and ``iso_rtt_delay_rule`` (each in a child process of this
script, ``--worker``, so a hang is bounded and its namespaces and pcscd are cleaned up on the
way out), the scenario and suite figures (pytest in a child process on the virtual bench).
Nothing else may use the virtual bench meanwhile.  Every child has a bound; past it, it is
interrupted (pytest: SIGINT, so the bench is taken down), then killed.  ``--quick`` (CI): small
counts and the smallest subsets.  Figures only: the exit code is 0 once the JSON is written
(``--strict``: 1 if any figure has an error).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.pytest_bench import vmhwm_kib  # noqa: E402

Better = Literal["lower", "higher"]
NEEDS_ROOT = "needs root"
PROFILE = ROOT / "fixtures" / "terminal" / "profile.yaml"
MIB = 1024.0


# ----------------------------------------------------------------------------- figures, JSON

@dataclass(frozen=True)
class Spec:
    """What one figure is: its name, unit, what is measured and how its baseline is."""

    name: str
    unit: str
    what: str
    baseline: str
    label: str
    """The baseline in a few words, for the table."""
    better: Better = "lower"
    target_ratio: float | None = None
    """The ratio (median / baseline median) the project's issue asks for, if any."""


@dataclass
class Samples:
    """What a measurement returns for one figure: its samples and its baseline's (same unit)."""

    figure: list[float]
    baseline: list[float]
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    """Set when the figure could not be measured (the samples are then empty)."""


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of *values* (not empty)."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def meets(ratio: float | None, target: float | None, better: Better) -> bool | None:
    """Whether *ratio* meets *target* in the direction that is better (None: nothing to judge)."""
    if ratio is None or target is None:
        return None
    return ratio <= target if better == "lower" else ratio >= target


def entry(spec: Spec, samples: Samples | None = None, *, skipped: str | None = None,
          error: str | None = None) -> dict[str, Any]:
    """One JSON object: the figure's median and p95, its baseline's median, the ratio."""
    figure = samples.figure if samples is not None else []
    base = samples.baseline if samples is not None else []
    median = statistics.median(figure) if figure else None
    base_median = statistics.median(base) if base else None
    ratio = median / base_median if median is not None and base_median else None
    out: dict[str, Any] = {
        "name": spec.name,
        "median": _round(median),
        "p95": _round(percentile(figure, 0.95)) if figure else None,
        "unit": spec.unit,
        "baseline": spec.baseline,
        "baseline_median": _round(base_median),
        "ratio": _round(ratio),
        "n": len(figure),
        "better": spec.better,
        "what": spec.what,
        "baseline_label": spec.label,
        "baseline_n": len(base),
    }
    if spec.target_ratio is not None:
        out["target_ratio"] = spec.target_ratio
        out["meets_target"] = meets(ratio, spec.target_ratio, spec.better)
    if samples is not None and samples.notes:
        out["notes"] = list(samples.notes)
    if skipped:
        out["skipped"] = skipped
    why = error or (samples.error if samples is not None else None)
    if why:
        out["error"] = why
    return out


@dataclass(frozen=True)
class Measurement:
    """A function that measures one or more figures (and their baselines) in one go."""

    specs: tuple[Spec, ...]
    run: Callable[[Settings], dict[str, Samples]]
    needs_root: bool = False

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.specs)


def run_measurement(m: Measurement, settings: Settings, *,
                    is_root: Callable[[], bool] = lambda: os.geteuid() == 0,
                    log: Callable[[str], None] = lambda _: None) -> list[dict[str, Any]]:
    """The JSON objects of *m*'s figures: skipped with the reason when it needs root and this is
    not root; an error (never an exception) when it fails or leaves a figure out."""
    if m.needs_root and not is_root():
        return [entry(s, skipped=NEEDS_ROOT) for s in m.specs]
    log(f"measuring {', '.join(m.names)} …")
    t0 = time.monotonic()
    try:
        got = m.run(settings)
    except Exception as exc:  # noqa: BLE001 - recorded in the figure, the run goes on
        log("".join(traceback.format_exception(exc)).rstrip())
        why = f"{type(exc).__name__}: {exc}"
        return [entry(s, error=why) for s in m.specs]
    log(f"  done in {time.monotonic() - t0:.1f} s")
    return [entry(s, got[s.name]) if s.name in got else
            entry(s, error=f"{m.run.__name__} returned no samples for {s.name}")
            for s in m.specs]


# ----------------------------------------------------------------------------- the table

def _num(value: float | None) -> str:
    if value is None:
        return "—"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"


ERROR_CELL = 100
"""Characters of an error's first line shown in the table (the JSON has all of it)."""


def render_table(entries: Iterable[dict[str, Any]], title: str = "benchmarks") -> Any:
    """The JSON objects as a rich Table (the same figures, one row each)."""
    from rich.table import Table

    table = Table(title=title, show_lines=False,
                  caption="ratio = median / baseline median; ↑ higher is better, else lower; "
                          "target: the project's (✓ met, ✗ not)")
    for name, justify in (("figure", "left"), ("median", "right"), ("p95", "right"),
                          ("baseline median", "right"), ("unit", "left"), ("ratio", "right"),
                          ("target", "right"), ("n", "right"), ("baseline / status", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for e in entries:
        ratio = f"{e['ratio']:.2f}×" if e.get("ratio") is not None else "—"
        target = ""
        if e.get("target_ratio") is not None:
            sign = "≤" if e.get("better") == "lower" else "≥"
            verdict = {True: " ✓", False: " ✗"}.get(e.get("meets_target"), "")  # type: ignore[arg-type]
            target = f"{sign} {e['target_ratio']:.2f}×{verdict}"
        if e.get("skipped"):
            status = f"skipped: {e['skipped']}"
        elif e.get("error"):
            first = str(e["error"]).strip().splitlines()[0] if str(e["error"]).strip() else "?"
            status = f"error: {first[:ERROR_CELL]}{'…' if len(first) > ERROR_CELL else ''}"
        else:
            status = str(e.get("baseline_label") or e.get("baseline", ""))
        better = " ↑" if e.get("better") == "higher" else ""
        table.add_row(e["name"], _num(e.get("median")), _num(e.get("p95")),
                      _num(e.get("baseline_median")), f"{e.get('unit', '')}{better}", ratio,
                      target, str(e.get("n", 0)), status)
    return table


def write_json(entries: list[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(entries, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


# ----------------------------------------------------------------------------- settings

FULL_SUITE = (
    "features/operating/purchase.feature",
    "features/operating/ways_to_pay.feature",
    "features/troubleshooting/card_declines.feature",
    "features/troubleshooting/card_failure.feature",
    "features/troubleshooting/printer.feature",
    "features/troubleshooting/wrong_pin.feature",
    "features/business/refund_void.feature",
)
"""The fixed subset of the feature suite for the suite figures (31 scenarios)."""
QUICK_SUITE = (
    "features/operating/purchase.feature",
    "features/troubleshooting/printer.feature",
    "features/troubleshooting/not_signed_in.feature",
    "features/troubleshooting/wrong_pin.feature::"
    "test_a_wrong_pin_is_declined_by_the_issuer_and_the_right_pin_then_pays",
)
"""The smallest subset (4 scenarios, none waiting out a long time-out) for ``--quick``."""


@dataclass(frozen=True)
class Settings:
    quick: bool
    workdir: Path
    ecr_n: int
    ecr_warmup: int
    scpi_n: int
    scpi_warmup: int
    apdu_n: int
    apdu_warmup: int
    iso_n: int
    iso_warmup: int
    scenario_runs: int
    """Measured runs of each scenario (one more runs first and is left out)."""
    suite_runs: int
    """Runs of the subset on one bench and on two, taken in turns."""
    suite: tuple[str, ...]
    delay_ms: float = 1.0

    @classmethod
    def make(cls, *, quick: bool, workdir: Path) -> Settings:
        if quick:
            return cls(True, workdir, ecr_n=200, ecr_warmup=20, scpi_n=300, scpi_warmup=30,
                       apdu_n=200, apdu_warmup=10, iso_n=300, iso_warmup=50, scenario_runs=1,
                       suite_runs=1, suite=QUICK_SUITE)
        return cls(False, workdir, ecr_n=2000, ecr_warmup=50, scpi_n=5000, scpi_warmup=200,
                   apdu_n=2000, apdu_warmup=20, iso_n=5000, iso_warmup=200, scenario_runs=5,
                   suite_runs=2, suite=FULL_SUITE)


# ----------------------------------------------------------------------------- child processes

@dataclass(frozen=True)
class Finished:
    """A bounded child process: exit code (None: it was stopped at its bound), wall time, its
    own peak RSS as last seen in /proc (KiB), and its log."""

    returncode: int | None
    wall_s: float
    peak_kib: int | None
    log: Path

    def tail(self, lines: int = 25) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"
        return "\n".join(text.rstrip().splitlines()[-lines:])


POLL_S = 0.2


def _read_vmhwm(pid: int) -> int | None:
    try:
        return vmhwm_kib(Path(f"/proc/{pid}/status").read_text(encoding="ascii"))
    except OSError:
        return None


def _stop_group(proc: subprocess.Popen[bytes], first: signal.Signals, grace_s: float) -> None:
    """Stop the child we started and its process group: *first* (SIGINT lets pytest take the
    bench down), then SIGKILL after *grace_s*."""
    for sig, wait_s in ((first, grace_s), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def run_bounded(cmd: list[str], bound_s: float, log: Path, *,
                first_signal: signal.Signals = signal.SIGTERM, grace_s: float = 20.0,
                env: dict[str, str] | None = None) -> Finished:
    """Run *cmd* in ROOT, output to *log*, for at most *bound_s*; then stopped (see
    :func:`_stop_group`) and ``returncode`` None."""
    log.parent.mkdir(parents=True, exist_ok=True)
    child_env = dict(os.environ if env is None else env)
    child_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), child_env.get("PYTHONPATH", "")) if p)
    peak: int | None = None
    with open(log, "wb") as out:
        out.write(f"$ {' '.join(cmd)}\n".encode())
        out.flush()
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True, env=child_env)
        code: int | None = None
        try:
            while True:
                try:
                    code = proc.wait(timeout=POLL_S)
                    break
                except subprocess.TimeoutExpired:
                    seen = _read_vmhwm(proc.pid)
                    if seen is not None:
                        peak = max(peak or 0, seen)
                    if time.perf_counter() - start > bound_s:
                        _stop_group(proc, first_signal, grace_s)
                        break
        except KeyboardInterrupt:
            _stop_group(proc, first_signal, grace_s)
            raise
        wall = time.perf_counter() - start
    if code is None:
        with open(log, "a", encoding="utf-8") as out:
            out.write(f"\n[run_all] stopped: still running after its bound of {bound_s:.0f} s\n")
    return Finished(code, wall, peak, log)


def _child_failure(what: str, fin: Finished, bound_s: float) -> str:
    if fin.returncode is None:
        return f"{what}: still running after its bound of {bound_s:.0f} s (log {fin.log})"
    return f"{what}: exited {fin.returncode} (log {fin.log}):\n{fin.tail()}"


class ChildFailed(RuntimeError):
    """A child process of a measurement failed; the message has its log's tail."""


def run_worker(kind: str, args: list[str], settings: Settings, bound_s: float) -> dict[str, Any]:
    """``run_all --worker KIND``: a root measurement in a child process (bounded), its samples
    read back from the JSON file it writes."""
    with tempfile.TemporaryDirectory(prefix="run_all-") as tmp:
        out = Path(tmp) / "samples.json"
        cmd = [sys.executable, "-m", "benchmarks.run_all", "--worker", kind, "--worker-out",
               str(out), *args]
        fin = run_bounded(cmd, bound_s, settings.workdir / "logs" / f"{kind}.log")
        if fin.returncode != 0 or not out.exists():
            raise ChildFailed(_child_failure(f"the {kind} measurement", fin, bound_s))
        return dict(json.loads(out.read_text(encoding="utf-8")))


# ----------------------------------------------------------------------------- ecr, scpi

ECR = Spec(
    "ecr_rtt", "µs",
    "STATUS request → response through SerialTerminalLink over a pty to the terminal runner "
    "(firmware + link in a thread): frame, ACK, response frame, ACK",
    "raw pyserial write/read of the same STATUS frame on the same pty, echoed back unchanged "
    "by a trivial select/read/write loop on the master; the two take turns in 4 blocks",
    "raw write/read of the frame, echoed")


def measure_ecr(settings: Settings) -> dict[str, Samples]:
    from benchmarks import ecr_rtt

    linked, raw = ecr_rtt.measure(settings.ecr_n, settings.ecr_warmup)
    return {ECR.name: Samples(linked, raw)}


SCPI = Spec(
    "scpi_rtt", "µs",
    "MEAS:VOLT? through the rig's VisaScpiTransport (pyvisa-py) to the simulated PSU on "
    "127.0.0.1",
    "raw pyvisa query of MEAS:VOLT? on a second session to the same resource (same "
    "terminations, timeout); the two take turns, one query each",
    "raw pyvisa query, same resource")


def measure_scpi(settings: Settings) -> dict[str, Samples]:
    from benchmarks import scpi_rtt

    rig, raw = scpi_rtt.measure_side_by_side(settings.scpi_n, settings.scpi_warmup)
    return {SCPI.name: Samples(rig, raw)}


# ----------------------------------------------------------------------------- apdu, iso (root)

APDU = Spec(
    "apdu_rtt", "µs",
    "one APDU (GET DATA 9F36) through the whole card relay: terminal harness → probe → probe "
    "link (pty) → PcscCardBank → private pcscd → vpcd → card and back",
    "direct pyscard SCardTransmit of the same APDU to the same card through the same pcscd",
    "direct pyscard transmit", target_ratio=1.3)


def measure_apdu(settings: Settings) -> dict[str, Samples]:
    got = run_worker("apdu", ["--count", str(settings.apdu_n), "--warmup",
                              str(settings.apdu_warmup)], settings,
                     bound_s=120 + settings.apdu_n * 0.05)
    return {APDU.name: Samples(list(got["relay"]), list(got["direct"]))}


def iso_specs(delay_ms: float) -> tuple[Spec, Spec]:
    bridge = ("kernel bridge (Linux bridge in the rig namespace) between the same terminal and "
              "host namespaces, on the same veth ends")
    return (
        Spec("iso_rtt", "µs",
             "200-byte framed ISO 8583-sized request → 200-byte response on one TCP connection, "
             "terminal namespace → host namespace, through the rig's injector (no rule)",
             bridge, "kernel bridge, same namespaces"),
        Spec("iso_rtt_delay_rule", "µs",
             f"the same round trip through the injector with a delay rule of {delay_ms:g} ms on "
             f"every frame, both ways; raw figure, nothing subtracted",
             f"{bridge}, no delay; the rule configures {delay_ms:g} ms per frame each way, so "
             f"at least {2 * delay_ms:g} ms of each round trip (request + response) is the "
             f"configured delay",
             f"kernel bridge; rule adds ≥ {2 * delay_ms:g} ms"),
    )


def measure_iso(settings: Settings) -> dict[str, Samples]:
    got = run_worker("iso", ["--count", str(settings.iso_n), "--warmup",
                             str(settings.iso_warmup), "--delay-ms", str(settings.delay_ms)],
                     settings, bound_s=300 + 3 * (settings.iso_n + settings.iso_warmup) *
                     (0.01 + 2 * settings.delay_ms / 1000))
    bridge = list(got["kernel_bridge"])
    no_rule, delayed = iso_specs(settings.delay_ms)
    return {no_rule.name: Samples(list(got["injector"]), bridge),
            delayed.name: Samples(list(got["injector_delay"]), bridge)}


# ----------------------------------------------------------------------------- pytest, JUnit

@dataclass(frozen=True)
class Case:
    """One JUnit testcase: its call duration (``junit_duration_report=call``) and outcome."""

    name: str
    classname: str
    time_s: float
    outcome: str
    """passed, failed, skipped, error (at setup: the scenario did not run) or teardown_error
    (it ran; the bench could not be restored after it)."""
    message: str = ""

    @property
    def ran(self) -> bool:
        return self.outcome in ("passed", "failed", "teardown_error")


def read_junit(text: str) -> list[Case]:
    """The testcases of a JUnit XML document, in order."""
    cases = []
    for tc in ET.fromstring(text).iter("testcase"):
        tags = {child.tag: child for child in tc}
        outcome, message = "passed", ""
        if "skipped" in tags:
            outcome, message = "skipped", tags["skipped"].get("message", "")
        elif "failure" in tags:
            outcome, message = "failed", tags["failure"].get("message", "")
        elif "error" in tags:
            message = tags["error"].get("message", "")
            outcome = "teardown_error" if "teardown" in message else "error"
        cases.append(Case(tc.get("name", ""), tc.get("classname", ""),
                          float(tc.get("time", "0") or 0), outcome, message))
    return cases


_RUN = re.compile(r"\[(?:.*-)?run(\d+)of(\d+)(?:-.*)?\]$")


def run_index(name: str) -> int | None:
    """Which run of a repeated scenario a testcase is (1-based; benchmarks/pytest_bench.py)."""
    m = _RUN.search(name)
    return int(m.group(1)) if m else None


def pytest_command(targets: Sequence[str], *, junit: Path, bench_workdir: Path,
                   extra: Sequence[str] = ()) -> list[str]:
    """pytest on the virtual bench, JUnit XML with call durations only (bench up/down and the
    restore between scenarios are setup/teardown), no Allure; supply plots deferred, as
    ``python -m rigs.report`` runs the suite (they are drawn after it)."""
    return [sys.executable, "-m", "pytest", *targets, "-p", "no:allure_pytest_bdd", "-p",
            "no:allure_pytest", "-p", "no:cacheprovider", "-p", "benchmarks.pytest_bench",
            f"--junitxml={junit}", "-o", "junit_duration_report=call", "--bench-workdir",
            str(bench_workdir), "--defer-plots", "-q", "-rfE", "--tb=short", *extra]


def _junit_cases(junit: Path, fin: Finished, what: str, bound_s: float) -> list[Case]:
    if fin.returncode not in (0, 1) or not junit.exists():
        raise ChildFailed(_child_failure(what, fin, bound_s))
    return read_junit(junit.read_text(encoding="utf-8"))


# ----------------------------------------------------------------------------- scenarios (root)

@dataclass(frozen=True)
class Wait:
    """A wait the protocol imposes: *times* × the terminal profile value at *key* (seconds)."""

    key: str
    times: int
    why: str


@dataclass(frozen=True)
class Scenario:
    figure: str
    node: str
    title: str
    waits: tuple[Wait, ...]

    @property
    def test_name(self) -> str:
        return self.node.rpartition("::")[2]


SCENARIOS = (
    Scenario("scenario_purchase",
             "features/operating/purchase.feature::"
             "test_chip_purchase_with_online_pin_is_approved_printed_and_booked_by_the_acquirer",
             "OP-05 chip purchase with online PIN, approved, printed, booked (Background: idle, "
             "logged in, signed in)",
             (Wait("timeouts.print_copy", 2, "the approved sale prints its merchant and its "
                   "customer copy, one print_copy each"),)),
    Scenario("scenario_fault",
             "features/troubleshooting/network_faults.feature::"
             "test_only_the_acquirers_answer_is_lost_the_terminal_reverses_the_sale",
             "TS-13 the acquirer's answer (0210) is dropped by the injector: the terminal times "
             "out, keeps a reversal, and the next purchase sends it first and is approved",
             (Wait("timeouts.response", 1, "the first purchase's 0210 never arrives: the "
                   "terminal waits out its response time-out, counted from the request sent"),
              Wait("timeouts.print_copy", 2, "the second purchase is approved and prints two "
                   "copies (the failed one prints nothing)"))),
)
"""The scenario figures and the waits the protocol imposes in each (docs/performance.md)."""


def profile_value(profile: Any, key: str) -> float:
    """The value at a dotted key path of the terminal profile file (``timeouts.print_copy``)."""
    node = profile
    for part in key.split("."):
        node = getattr(node, part)
    return float(node)


def inherent_wait(waits: Sequence[Wait], profile: Any) -> tuple[float, str]:
    """The sum of the waits (seconds) and how it is made: ``2 × timeouts.print_copy (0.3 s)``."""
    total = 0.0
    terms = []
    for w in waits:
        value = profile_value(profile, w.key)
        total += w.times * value
        terms.append(f"{w.times} × {w.key} ({value:g} s)")
    return total, " + ".join(terms) + f" = {total:g} s"


def load_profile_file(path: Path = PROFILE) -> Any:
    """The terminal profile, key for key (the YAML's own model: one way to read it)."""
    from protocols.yamlmodel import load_model
    from sim.terminal.profile import WHAT, ProfileFile

    return load_model(ProfileFile, path, what=WHAT)


def scenario_specs(profile: Any | None = None) -> tuple[Spec, ...]:
    specs = []
    for sc in SCENARIOS:
        try:
            _, how = inherent_wait(sc.waits, profile if profile is not None else
                                   load_profile_file())
        except Exception as exc:  # noqa: BLE001 - the figure's error then says why
            how = f"(profile unreadable: {exc})"
        specs.append(Spec(
            sc.figure, "s",
            f"wall time of the scenario's call on the virtual bench (JUnit XML, "
            f"junit_duration_report=call): its steps, and the rig's per-scenario start and "
            f"evidence collection, which pytest-bdd runs inside the call: {sc.title}",
            f"sum of the waits the protocol imposes, from {PROFILE.relative_to(ROOT)}: {how} "
            f"({'; '.join(w.why for w in sc.waits)})",
            f"inherent waits: {how}",
            target_ratio=1.2 if sc.figure == "scenario_purchase" else None))
    return tuple(specs)


def scenario_samples(cases: Sequence[Case], scenarios: Sequence[Scenario],
                     profile: Any) -> dict[str, Samples]:
    """Per scenario: the call durations of its runs after the first (the session's first
    scenario also opens the rig's bench), passed ones only; baseline: its inherent wait."""
    out = {}
    for sc in scenarios:
        mine = [c for c in cases if c.name == sc.test_name or c.name.startswith(sc.test_name + "[")]
        wait, _ = inherent_wait(sc.waits, profile)
        kept = [c for c in mine if run_index(c.name) != 1]
        passed = [c.time_s for c in kept if c.outcome == "passed"]
        notes = [f"{len(mine)} runs, the first left out (warm-up)"] if mine else []
        bad = [c for c in kept if c.outcome != "passed"]
        if bad:
            notes.append(f"{len(bad)} run(s) left out: " + "; ".join(
                f"{c.name}: {c.outcome} {c.message[:120]}" for c in bad))
        error = None
        if not passed:
            error = (f"no passing run of {sc.node}" + (f": {bad[0].outcome} {bad[0].message[:300]}"
                                                       if bad else " in the JUnit XML"))
        out[sc.figure] = Samples(passed, [wait], notes, error)
    return out


def measure_scenarios(settings: Settings) -> dict[str, Samples]:
    runs = settings.scenario_runs + 1
    base = settings.workdir / "scenarios"
    junit = base / "junit.xml"
    junit.unlink(missing_ok=True)
    cmd = pytest_command([sc.node for sc in SCENARIOS], junit=junit, bench_workdir=base / "bench",
                         extra=["--bench-repeat", str(runs)])
    bound = 240 + 90 * runs * len(SCENARIOS)
    fin = run_bounded(cmd, bound, settings.workdir / "logs" / "scenarios.log",
                      first_signal=signal.SIGINT, grace_s=180)
    cases = _junit_cases(junit, fin, "the scenario run", bound)
    return scenario_samples(cases, SCENARIOS, load_profile_file())


# ----------------------------------------------------------------------------- suite (root)

@dataclass(frozen=True)
class SuiteRun:
    """One run of the subset: scenarios that ran, wall time of the pytest process (bench up and
    down included), the sum of their call durations, the main process's peak RSS."""

    ran: int
    wall_s: float
    call_s: float
    failed: int
    errored: int
    skipped: int
    peak_kib: int | None
    error: str | None = None

    @property
    def per_minute(self) -> float:
        return 60.0 * self.ran / self.wall_s

    @property
    def ceiling_per_minute(self) -> float:
        return 60.0 * self.ran / self.call_s if self.call_s > 0 else 0.0


def suite_run_from(cases: Sequence[Case], wall_s: float, peak_kib: int | None) -> SuiteRun:
    """A :class:`SuiteRun` from the JUnit testcases; an error when no scenario ran at all."""
    ran = [c for c in cases if c.ran]
    errored = [c for c in cases if c.outcome == "error"]
    run = SuiteRun(len(ran), wall_s, sum(c.time_s for c in ran),
                   sum(c.outcome in ("failed", "teardown_error") for c in cases), len(errored),
                   sum(c.outcome == "skipped" for c in cases), peak_kib)
    if not ran:
        why = errored[0].message[:400] if errored else "no testcase in the JUnit XML"
        return SuiteRun(0, wall_s, 0.0, run.failed, run.errored, run.skipped, peak_kib,
                        error=f"no scenario ran ({len(errored)} errored at setup): {why}")
    return run


def read_rss_lines(path: Path) -> dict[str, int]:
    """benchmarks/pytest_bench.py's ``--bench-rss-file``: role → VmHWM (KiB)."""
    out: dict[str, int] = {}
    if not path.exists():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            item = json.loads(line)
            if item.get("vmhwm_kib") is not None:
                out[str(item["role"])] = int(item["vmhwm_kib"])
    return out


def run_suite(settings: Settings, workers: int, index: int, scenarios: int) -> SuiteRun:
    tag = f"suite-{workers}-bench{'es' if workers > 1 else ''}-run{index + 1}"
    base = settings.workdir / tag
    junit, rss = base / "junit.xml", base / "rss.jsonl"
    junit.unlink(missing_ok=True)
    rss.unlink(missing_ok=True)
    base.mkdir(parents=True, exist_ok=True)
    extra = ["--bench-rss-file", str(rss)] + (["-n", str(workers)] if workers > 1 else [])
    cmd = pytest_command(settings.suite, junit=junit, bench_workdir=base / "bench", extra=extra)
    bound = 300 + 90 * max(1, scenarios)
    fin = run_bounded(cmd, bound, settings.workdir / "logs" / f"{tag}.log",
                      first_signal=signal.SIGINT, grace_s=180)
    try:
        cases = _junit_cases(junit, fin, f"pytest {' '.join(extra[2:]) or '(one bench)'}", bound)
    except ChildFailed as exc:
        return SuiteRun(0, fin.wall_s, 0.0, 0, 0, 0, None, error=str(exc))
    peak = read_rss_lines(rss).get("main", fin.peak_kib)
    return suite_run_from(cases, fin.wall_s, peak)


def collect_only(settings: Settings) -> tuple[int, int | None]:
    """``pytest --collect-only`` of the subset (no bench): how many scenarios, and the peak RSS
    of a pytest process that loaded the rig, its steps and the features and ran nothing."""
    base = settings.workdir / "suite-collect"
    rss = base / "rss.jsonl"
    base.mkdir(parents=True, exist_ok=True)
    rss.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "pytest", *settings.suite, "--collect-only", "-q", "-p",
           "no:allure_pytest_bdd", "-p", "no:allure_pytest", "-p", "no:cacheprovider", "-p",
           "benchmarks.pytest_bench", "--bench-rss-file", str(rss)]
    fin = run_bounded(cmd, 120, settings.workdir / "logs" / "suite-collect.log")
    if fin.returncode != 0:
        raise ChildFailed(_child_failure("collecting the suite subset", fin, 120))
    found = re.search(r"(\d+) tests? collected", fin.tail(5))
    return (int(found.group(1)) if found else 0), read_rss_lines(rss).get("main", fin.peak_kib)


SUITE_1 = Spec(
    "suite_1_bench", "scenarios/min",
    "scenarios run per minute of the pytest process's wall time (start to exit: collection, "
    "bench up and down, restores between scenarios included), fixed subset, one virtual bench",
    "the same run's ceiling: scenarios per minute of the sum of their call durations (JUnit "
    "XML), as if bench up/down and the restores cost nothing",
    "ceiling: Σ call durations", better="higher")
SUITE_2 = Spec(
    "suite_2_benches", "scenarios/min",
    "the same subset with pytest -n 2 (pytest-xdist): each worker brings up its own virtual "
    "bench (bench id gw0, gw1); scenarios per minute of the wall time",
    "suite_1_bench of the same run (runs taken in turns with it)",
    "suite_1_bench", better="higher", target_ratio=1.7)
SUITE_RSS = Spec(
    "suite_peak_rss", "MiB",
    "peak RSS (VmHWM) of the pytest process of the one-bench suite run, read by the process "
    "itself at its end (the bench's own processes are not counted)",
    "peak RSS of pytest --collect-only of the same subset (the rig, steps and features loaded, "
    "nothing run)",
    "pytest --collect-only, same subset")


def suite_samples(one: Sequence[SuiteRun], two: Sequence[SuiteRun], collected: int,
                  collect_kib: int | None, subset: Sequence[str]) -> dict[str, Samples]:
    """The three suite figures from the runs on one bench and on two."""
    where = f"subset: {', '.join(subset)} ({collected} scenarios)"
    ok1 = [r for r in one if r.error is None]
    ok2 = [r for r in two if r.error is None]

    def run_notes(runs: Sequence[SuiteRun]) -> list[str]:
        notes = [where]
        for i, r in enumerate(runs, start=1):
            if r.error is not None:
                notes.append(f"run {i}: {r.error}")
            else:
                notes.append(f"run {i}: {r.ran} scenarios in {r.wall_s:.1f} s (calls "
                             f"{r.call_s:.1f} s), {r.failed} failed, {r.errored} errored, "
                             f"{r.skipped} skipped")
        return notes

    def first_error(runs: Sequence[SuiteRun]) -> str | None:
        return next((r.error for r in runs if r.error), "no run") if runs else "no run"

    one_rate = [r.per_minute for r in ok1]
    out = {
        SUITE_1.name: Samples(one_rate, [r.ceiling_per_minute for r in ok1], run_notes(one),
                              None if ok1 else first_error(one)),
        SUITE_2.name: Samples([r.per_minute for r in ok2], one_rate, run_notes(two),
                              None if ok2 else first_error(two)),
    }
    peaks = [r.peak_kib / MIB for r in ok1 if r.peak_kib is not None]
    out[SUITE_RSS.name] = Samples(peaks, [collect_kib / MIB] if collect_kib is not None else [],
                                  [where], None if peaks else (first_error(one) if not ok1 else
                                                               "no VmHWM read"))
    return out


def measure_suite(settings: Settings) -> dict[str, Samples]:
    collected, collect_kib = collect_only(settings)
    one: list[SuiteRun] = []
    two: list[SuiteRun] = []
    for i in range(settings.suite_runs):  # in turns, so both see the same machine
        one.append(run_suite(settings, 1, i, collected))
        if two and two[-1].error is not None:
            two.append(SuiteRun(0, 0.0, 0.0, 0, 0, 0, None,
                                error="not run again: the earlier -n 2 run failed"))
            continue
        two.append(run_suite(settings, 2, i, collected))
    return suite_samples(one, two, collected, collect_kib, settings.suite)


# ----------------------------------------------------------------------------- the registry

def measurements(settings: Settings) -> list[Measurement]:
    return [
        Measurement((ECR,), measure_ecr),
        Measurement((SCPI,), measure_scpi),
        Measurement((APDU,), measure_apdu, needs_root=True),
        Measurement(iso_specs(settings.delay_ms), measure_iso, needs_root=True),
        Measurement(scenario_specs(), measure_scenarios, needs_root=True),
        Measurement((SUITE_1, SUITE_2, SUITE_RSS), measure_suite, needs_root=True),
    ]


def run_all(settings: Settings, only: set[str] | None = None,
            log: Callable[[str], None] = lambda _: None) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    for m in measurements(settings):
        if only is not None and not only & set(m.names):
            continue
        got = run_measurement(m, settings, log=log)
        entries.extend(e for e in got if only is None or e["name"] in only)
    return entries


# ----------------------------------------------------------------------------- worker mode

def _worker(kind: str, out: Path, count: int, warmup: int, delay_ms: float) -> int:
    """A root measurement in this (child) process; SIGTERM unwinds it (namespaces, pcscd)."""

    def _terminate(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _terminate)
    if kind == "apdu":
        from benchmarks import apdu_rtt

        direct, relay = apdu_rtt.measure(count, warmup)
        samples = {"direct": [s * 1e6 for s in direct], "relay": [s * 1e6 for s in relay]}
    elif kind == "iso":
        from benchmarks import network_rtt

        samples = network_rtt.side_by_side(count, warmup, delay_ms)
    else:
        raise SystemExit(f"run_all --worker: unknown measurement {kind!r}; expected apdu or iso")
    out.write_text(json.dumps(samples), encoding="utf-8")
    return 0


TABLE_WIDTH = 160
"""Width of the table when stdout is not a terminal (a CI log, make's output piped)."""


def _names(text: str) -> set[str]:
    return {n.strip() for n in text.split(",") if n.strip()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run_all",
                                     description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="small counts and the smallest subsets (CI, about a minute)")
    parser.add_argument("--out", type=Path, default=Path("reports/benchmarks.json"),
                        help="the JSON written (default: %(default)s)")
    parser.add_argument("--workdir", type=Path, default=Path("reports/perf"),
                        help="logs of the child processes, the benches' work folders, JUnit "
                             "XML (default: %(default)s)")
    parser.add_argument("--only", type=_names, default=None, metavar="NAME,…",
                        help="only these figures (ecr_rtt, scpi_rtt, apdu_rtt, iso_rtt, "
                             "iso_rtt_delay_rule, scenario_purchase, scenario_fault, "
                             "suite_1_bench, suite_2_benches, suite_peak_rss)")
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 if any figure has an error (skipped ones do not count)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=100, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, default=10, help=argparse.SUPPRESS)
    parser.add_argument("--delay-ms", type=float, default=1.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        if args.worker_out is None:
            parser.error("--worker needs --worker-out")
        return _worker(args.worker, args.worker_out, args.count, args.warmup, args.delay_ms)

    from rich.console import Console

    settings = Settings.make(quick=args.quick, workdir=args.workdir.resolve())
    known = {s.name for m in measurements(settings) for s in m.specs}
    if args.only is not None and args.only - known:
        parser.error(f"--only: unknown figure(s) {sorted(args.only - known)}; expected some of "
                     f"{', '.join(sorted(known))}")
    err = Console(stderr=True)
    entries = run_all(settings, args.only, log=lambda text: err.print(f"[dim]{text}[/dim]",
                                                                       highlight=False))
    write_json(entries, args.out)
    when = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M")
    out = Console() if sys.stdout.isatty() else Console(width=TABLE_WIDTH)
    out.print(render_table(entries, title=f"posrig benchmarks{' (quick)' if args.quick else ''}"
                                                f", {when}, {os.uname().nodename}"))
    print(f"written: {args.out}")
    return 1 if args.strict and any("error" in e for e in entries) else 0


if __name__ == "__main__":
    raise SystemExit(main())

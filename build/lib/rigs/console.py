"""What a person watching the suite sees: live progress while it runs, a summary at the end.

**Progress** (a pytest plugin, on with ``--progress``; ``python -m rigs.report`` turns it on):
the feature, the scenario and the step running now, and the bench's state (nominal, the faults
active, broken) — on a terminal as one live status line redrawn in place, in a CI log (not a
TTY) as plain lines, one when a scenario starts and one when it ends, with no control codes.
pytest's dots are silenced for scenarios (its summary of failures stays).

**Summary** (:func:`render_summary`): passed / failed / skipped per feature, the procedure
coverage matrix (:mod:`rigs.coverage`), the slowest scenarios, every failure with its category
(:mod:`rigs.failures`: product defect, bench problem, rig bug), the trend of the last runs and
where the report, the JUnit XML and the history are.  Built with rich; plain text when the
output is not a terminal.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Any

import pytest
from rich.console import Console
from rich.table import Table
from rich.text import Text

from rigs.coverage import Row, Verdict, totals
from rigs.failures import Category

PROGRESS_OPTION = "--progress"
BENCH_KEY = pytest.StashKey[Any]()
"""The session's opened bench (set by the plugin's ``rig_bench`` fixture): its state is shown."""
_STYLE = {"passed": "green", "failed": "bold red", "broken": "bold red", "skipped": "yellow",
          "unknown": "magenta"}
_VERDICT_STYLE = {Verdict.PROVEN: "green", Verdict.FAILING: "bold red",
                  Verdict.NOT_RUN: "yellow", Verdict.NO_SCENARIO: "bold yellow"}


LOG_WIDTH = 132
"""Width of tables in a CI log (not a terminal: nothing to measure)."""


def make_console(file: IO[str] | None = None, *, width: int | None = None) -> Console:
    """A console that writes control codes only to a terminal (a CI log gets plain text, its
    tables LOG_WIDTH wide unless ``COLUMNS`` says otherwise); long lines are not folded."""
    console = Console(file=file, highlight=False, soft_wrap=True, width=width, emoji=False)
    if width is None and not console.is_terminal and not os.environ.get("COLUMNS"):
        console = Console(file=file, highlight=False, soft_wrap=True, width=LOG_WIDTH,
                          emoji=False)
    return console


# --- progress -----------------------------------------------------------------------------------

class Progress:
    """The live progress plugin (registered by rigs.plugin when ``--progress`` is given).  It
    writes around pytest's output capture (the capture manager's documented way out), so its
    lines reach the terminal or the log while a scenario runs."""

    def __init__(self, console: Console, config: pytest.Config | None = None) -> None:
        self.console = console
        self.config = config
        self.live = console.is_terminal
        self.feature = ""
        self.scenario = ""
        self.step = ""
        self.bench = "starting"
        self.started = 0.0
        self.done: Counter[str] = Counter()
        self._line_open = False

    # pytest-bdd's hooks
    @pytest.hookimpl(trylast=True)
    def pytest_bdd_before_scenario(self, request: pytest.FixtureRequest, feature: Any,
                                   scenario: Any) -> None:
        self.feature = str(getattr(feature, "name", "") or "")
        self.scenario = str(getattr(scenario, "name", "") or "")
        self.step = ""
        self.started = time.monotonic()
        bench = request.config.stash.get(BENCH_KEY, None)
        self.bench = bench_state(bench)
        if self.live:
            self._show()
        else:
            self._print(Text(f"▶ {self.feature}: {self.scenario}  [bench {self.bench}]"))

    @pytest.hookimpl(trylast=True)
    def pytest_bdd_before_step(self, request: pytest.FixtureRequest, feature: Any,
                               scenario: Any, step: Any, step_func: Any) -> None:
        self.step = f"{getattr(step, 'keyword', '').strip()} {getattr(step, 'name', '')}"
        if self.live:
            self._show()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call" or (report.when == "setup" and not report.passed):
            outcome = report.outcome
            self.done[outcome] += 1
            line = Text(f"{outcome.upper():8}", style=_STYLE.get(outcome, ""))
            if self.scenario:
                took = time.monotonic() - self.started if self.started else report.duration
                line.append(f" {took:6.1f} s  {self.feature}: {self.scenario}")
            else:  # pytest-xdist's controller: the scenario ran in a worker (on its bench)
                worker = getattr(getattr(report, "node", None), "gateway", None)
                on = f" [bench {worker.id}]" if worker is not None else ""
                line.append(f" {report.duration:6.1f} s  {report.nodeid}{on}")
            self._print(line)
            self.scenario = ""

    @pytest.hookimpl(tryfirst=True)
    def pytest_report_teststatus(self, report: pytest.TestReport,
                                 config: pytest.Config) -> tuple[str, str, str] | None:
        """No dot or letter per scenario: this plugin prints its own line."""
        if report.when != "call":
            if report.passed:
                return "", "", ""
            if report.failed:
                return "error", "", ""
        if report.skipped:
            return "skipped", "", ""
        return report.outcome, "", ""

    def pytest_sessionstart(self) -> None:
        reporter = self._reporter()
        if reporter is not None:
            reporter.showfspath = False  # no "file.py " prefix waiting for dots that never come

    # output, through pytest's own terminal writer (outside the output capture)
    def _reporter(self) -> Any:
        return None if self.config is None else self.config.pluginmanager.get_plugin(
            "terminalreporter")

    def _show(self) -> None:
        """The live line (a terminal only): redrawn in place."""
        reporter = self._reporter()
        if reporter is None:
            return
        width = max(20, reporter._tw.fullwidth - 1)
        text = (f"{self.feature} › {self.scenario}" + (f" › {self.step}" if self.step else "")
                + f"  [bench {self.bench}]")
        reporter.rewrite(text if len(text) <= width else text[:width - 1] + "…", erase=True)
        self._line_open = True

    def _print(self, line: Text) -> None:
        reporter = self._reporter()
        if reporter is None:
            self.console.print(line, markup=False)
            return
        if self._line_open:
            reporter.rewrite("", erase=True)
            reporter.write("\r")
            self._line_open = False
        reporter.ensure_newline()
        markup = {_MARKUP[s]: True for s in str(line.style or "").split() if s in _MARKUP}
        head = line.plain[:8]
        reporter.write(head, **{k: v for k, v in markup.items()})
        reporter.write(line.plain[8:] + "\n")


_MARKUP = {"green": "green", "red": "red", "yellow": "yellow", "bold": "bold",
           "magenta": "purple"}


def bench_state(bench: Any) -> str:
    """``nominal``, ``broken``, or the faults active (``2 faults active``); ``starting`` before
    the bench exists."""
    if bench is None:
        return "starting"
    if getattr(bench, "broken", None):
        return "broken"
    try:
        active = bench.faults.active()
    except Exception:  # a status line must never fail a scenario
        return "unknown"
    return f"{len(active)} fault(s) active" if active else "nominal"


# --- summary ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Line:
    """One scenario of the run as the summary needs it."""

    feature: str
    name: str
    status: str
    message: str
    duration_s: float
    category: Category | None = None


@dataclass(frozen=True)
class RunTrend:
    """One earlier run, for the trend line."""

    when: str
    counts: dict[str, int]


def render_summary(console: Console, lines: Sequence[Line], rows: Sequence[Row], *,
                   report: str | None, junit: str | None, history: str | None,
                   trend: Sequence[RunTrend] = (), slowest: int = 5) -> None:
    """Print the end-of-run summary on *console*."""
    console.print()
    console.rule("Scenario suite on the bench")
    per_feature: dict[str, Counter[str]] = {}
    for ln in lines:
        per_feature.setdefault(ln.feature, Counter())[ln.status] += 1
    table = Table(title="Per feature", show_lines=False, expand=False)
    for col in ("feature", "passed", "failed", "broken", "skipped"):
        table.add_column(col, justify="left" if col == "feature" else "right")
    for feature, counts in per_feature.items():
        table.add_row(feature, *(_count(counts[s], s) for s in ("passed", "failed", "broken",
                                                                 "skipped")))
    console.print(table)

    cov = Table(title="Procedure coverage", expand=False)
    for col, width in (("id", 6), ("verdict", 11), ("pass", 4), ("fail", 4), ("skip", 4),
                       ("procedure", 0)):
        cov.add_column(col, justify="right" if col in ("pass", "fail", "skip") else "left",
                       overflow="ellipsis", no_wrap=True, min_width=width or None,
                       max_width=60 if not width else None)
    for row in rows:
        cov.add_row(row.pid, Text(row.verdict.value, style=_VERDICT_STYLE[row.verdict]),
                    str(row.count("passed")), str(row.count("failed", "broken")),
                    str(row.count("skipped")), row.title)
    console.print(cov)
    t = totals(rows)
    gaps = [r.pid for r in rows if r.verdict is not Verdict.PROVEN]
    console.print(f"{t[Verdict.PROVEN]} of {len(rows)} procedures proven, "
                  f"{t[Verdict.FAILING]} failing, {t[Verdict.NOT_RUN]} not run, "
                  f"{t[Verdict.NO_SCENARIO]} without a scenario"
                  + (f"; no passing scenario: {', '.join(gaps)}" if gaps else ""), markup=False)

    if lines:
        console.print()
        console.print("Slowest scenarios:")
        for ln in sorted(lines, key=lambda x: -x.duration_s)[:slowest]:
            console.print(f"  {ln.duration_s:6.1f} s  {ln.feature}: {ln.name}", markup=False)

    failed = [ln for ln in lines if ln.status in ("failed", "broken")]
    if failed:
        console.print()
        console.print(Text("Failures:", style="bold red"))
        for category in Category:
            these = [ln for ln in failed if ln.category is category]
            if not these:
                continue
            console.print(f"  {category.value}:", markup=False)
            for ln in these:
                console.print(f"    {ln.feature}: {ln.name}", markup=False)
                if ln.message:
                    console.print(f"      {ln.message[:200]}", markup=False)
    bench = [ln for ln in failed if ln.category is Category.BENCH_PROBLEM]
    console.print()
    console.print("Bench problems: " + (f"{len(bench)} scenario(s), see above" if bench
                                        else "none"), markup=False)

    counts = Counter(ln.status for ln in lines)
    total = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no scenarios ran"
    console.print()
    if trend:
        console.print("Last runs: " + "; ".join(
            f"{r.when} {r.counts.get('passed', 0)}/{sum(r.counts.values())} passed"
            for r in trend), markup=False)
    console.print(f"{len(lines)} scenarios: {total}", markup=False)
    console.print(f"HTML report: {report or 'not generated'}", markup=False)
    if junit:
        console.print(f"JUnit XML: {junit}", markup=False)
    if history:
        console.print(f"History: {history}", markup=False)


def _count(n: int, status: str) -> Text:
    return Text(str(n), style=_STYLE.get(status, "") if n else "")


__all__ = ["Line", "PROGRESS_OPTION", "Progress", "RunTrend", "bench_state", "make_console",
           "render_summary"]

"""``python -m rigs.report``: run the scenario suite, build the HTML report, print a summary.

What it writes under ``reports/`` (``--reports``):

* ``allure-results/`` — the raw results (one per scenario, with its evidence), the environment
  (bench, terminal model / firmware / serial) and the failure categories;
* ``html/index.html`` — the offline single-file Allure report (no network request when opened:
  ``python -m rigs.offline_check``), with the trend of earlier runs and a "Procedure coverage"
  result holding the matrix;
* ``junit.xml`` — for CI servers;
* ``coverage.json`` — procedure id → verdict and scenarios;
* ``history/`` — kept between runs: Allure's history (trends, each scenario's earlier results)
  and ``runs.jsonl`` (one line per run: when, counts by status, coverage totals).

The summary (rigs.console) is read back from the Allure results themselves — what the report
shows.  The exit code is pytest's, so a failed or empty run (pytest's 5, no tests) never looks
like success.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from rigs.console import Line, RunTrend, make_console, render_summary
from rigs.coverage import (
    Row,
    Scenario,
    Verdict,
    matrix,
    procedure_ids,
    render_html,
    to_json,
    totals,
)
from rigs.errors import RigError
from rigs.failures import Category, classify

REPO = Path(__file__).resolve().parent.parent
REPORT_BOUND = 300.0
TREND_RUNS = 5
HISTORY_RUNS_KEPT = 200


@dataclass(frozen=True)
class ScenarioResult:
    feature: str
    name: str
    status: str
    message: str
    duration_s: float
    tags: frozenset[str] = frozenset()

    @property
    def category(self) -> Category | None:
        return classify(self.status, self.message)


def read_results(results_dir: Path) -> list[ScenarioResult]:
    """Allure ``*-result.json`` files → one entry per scenario, ordered by start time (the
    coverage result this module writes itself is left out)."""
    items = []
    for path in results_dir.glob("*-result.json"):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RigError(f"{path}: unreadable Allure result ({exc})") from None
        labels = [(lab.get("name"), lab.get("value")) for lab in data.get("labels", [])]
        if ("suite", COVERAGE_SUITE) in labels:
            continue
        named = dict(labels)
        details = data.get("statusDetails") or {}
        message = str(details.get("message") or "").strip()
        start, stop = data.get("start") or 0, data.get("stop") or 0
        items.append((start, ScenarioResult(
            feature=str(named.get("feature") or (data.get("titlePath") or ["?"])[-1]),
            name=str(data.get("name", "?")),
            status=str(data.get("status", "unknown")),
            message=message.splitlines()[0] if message else "",
            duration_s=max(0.0, (stop - start) / 1000.0),
            tags=frozenset(str(v) for k, v in labels if k == "tag"))))
    return [r for _, r in sorted(items, key=lambda x: x[0])]


def coverage_rows(results: list[ScenarioResult]) -> list[Row]:
    return matrix(procedure_ids(), [Scenario(r.name, r.feature, r.status, r.tags)
                                    for r in results])


COVERAGE_SUITE = "Procedure coverage"


def write_coverage_result(results_dir: Path, rows: list[Row]) -> Path:
    """A result of its own in the report ("Procedure coverage"): the matrix as an HTML
    attachment, status ``unknown`` (it is not a scenario and counts as none)."""
    t = totals(rows)
    now = int(dt.datetime.now().timestamp() * 1000)
    attachment = f"{uuid.uuid4()}-attachment.html"
    (results_dir / attachment).write_text(render_html(rows), encoding="utf-8")
    gaps = [r.pid for r in rows if r.verdict is not Verdict.PROVEN]
    result = {
        "uuid": str(uuid.uuid4()), "historyId": "posrig-procedure-coverage",
        "testCaseId": "posrig-procedure-coverage", "fullName": "posrig:procedure-coverage",
        "name": "Procedure coverage: procedure ids × scenarios", "status": "unknown",
        "statusDetails": {"message": f"{t[Verdict.PROVEN]} of {len(rows)} procedures proven; "
                                     f"without a passing scenario: {', '.join(gaps) or 'none'}"},
        "start": now, "stop": now,
        "labels": [{"name": "suite", "value": COVERAGE_SUITE},
                   {"name": "epic", "value": COVERAGE_SUITE}],
        "attachments": [{"name": "coverage matrix", "source": attachment,
                         "type": "text/html"}],
    }
    path = results_dir / f"{result['uuid']}-result.json"
    path.write_text(json.dumps(result), encoding="utf-8")
    return path


def _draw(data_path: str) -> bytes | str:
    """In a worker process: the PNG of one plot's data file, or why it could not be drawn."""
    from rigs.plotdata import png_from_data

    try:
        png = png_from_data(Path(data_path).read_text(encoding="utf-8"), where=data_path)
    except (OSError, RigError) as exc:
        return f"the supply plot could not be drawn: {exc}"
    return png if png is not None else "the supply was never sampled: no plot"


def _plot_entries(node: object, found: list[dict[str, object]]) -> None:
    from rigs.plotdata import PLOT_DATA_NAME

    if isinstance(node, dict):
        for att in node.get("attachments", []) or []:
            if isinstance(att, dict) and att.get("name") == PLOT_DATA_NAME:
                found.append(att)
        for step in node.get("steps", []) or []:
            _plot_entries(step, found)


def draw_deferred_plots(results_dir: Path, workers: int | None = None) -> int:
    """Draw every supply plot whose data a scenario attached (``--defer-plots``), several at a
    time, and put each PNG in its result in place of the data; returns how many were drawn.
    A plot that cannot be drawn leaves a text attachment saying why."""
    from concurrent.futures import ProcessPoolExecutor

    from rigs.plotdata import PLOT_NAME

    jobs: list[tuple[Path, dict[str, object], dict[str, object]]] = []
    for path in sorted(results_dir.glob("*-result.json")):
        try:
            result = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RigError(f"{path}: unreadable Allure result ({exc})") from None
        entries: list[dict[str, object]] = []
        _plot_entries(result, entries)
        jobs += [(path, result, att) for att in entries]
    if not jobs:
        return 0
    sources = [str(results_dir / str(att["source"])) for _, _, att in jobs]
    with ProcessPoolExecutor(max_workers=workers or min(4, os.cpu_count() or 2)) as pool:
        drawn = list(pool.map(_draw, sources, timeout=REPORT_BOUND))
    changed: dict[Path, dict[str, object]] = {}
    count = 0
    for (path, result, att), out, source in zip(jobs, drawn, sources, strict=True):
        name = f"{uuid.uuid4()}-attachment"
        if isinstance(out, bytes):
            (results_dir / f"{name}.png").write_bytes(out)
            att.update({"name": PLOT_NAME, "source": f"{name}.png", "type": "image/png"})
            count += 1
        else:
            (results_dir / f"{name}.txt").write_text(out, encoding="utf-8")
            att.update({"name": "supply plot not drawn", "source": f"{name}.txt",
                        "type": "text/plain"})
        Path(source).unlink(missing_ok=True)
        changed[path] = result
    for path, result in changed.items():
        path.write_text(json.dumps(result), encoding="utf-8")
    return count


def generate_html(results_dir: Path, out_dir: Path, *, history_out: Path | None = None) -> Path:
    """Build the offline single-file HTML report with the Allure commandline (node_modules).
    With *history_out*, also keep the history Allure computes for the next run (it writes it
    only for a multi-file report, which is built aside and dropped)."""
    allure = REPO / "node_modules" / ".bin" / "allure"
    if not allure.exists():
        raise RigError(f"{allure} is missing: run `npm install` (make run does) to get the "
                       "report generator")
    if shutil.which("java") is None:
        raise RigError("java is missing: the Allure 2 report generator needs Java 17 "
                       "(apt-get install openjdk-17-jre-headless)")
    _allure(allure, [str(results_dir), "--clean", "--single-file", "-o", str(out_dir)])
    if history_out is not None:
        with tempfile.TemporaryDirectory(prefix="posrig-allure-") as aside:
            _allure(allure, [str(results_dir), "--clean", "-o", aside])
            built = Path(aside) / "history"
            if built.is_dir():
                if history_out.exists():
                    shutil.rmtree(history_out)
                shutil.copytree(built, history_out)
    return out_dir / "index.html"


def _allure(allure: Path, args: list[str]) -> None:
    env = dict(os.environ, ALLURE_NO_ANALYTICS="true")
    cmd = [str(allure), "generate", *args]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=REPORT_BOUND,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise RigError(f"allure generate did not finish within {REPORT_BOUND:.0f} s") from None
    if done.returncode != 0:
        raise RigError(f"allure generate failed ({done.returncode}): {done.stderr or done.stdout}")


def restore_history(history: Path, results_dir: Path) -> None:
    """Give Allure the history of earlier runs (trends, each scenario's last results)."""
    kept = history / "allure"
    if kept.is_dir() and results_dir.is_dir():
        target = results_dir / "history"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(kept, target)


def record_run(history: Path, results: list[ScenarioResult], rows: list[Row],
               exit_code: int) -> list[RunTrend]:
    """Append this run to ``runs.jsonl`` (the newest HISTORY_RUNS_KEPT are kept) and return the
    last TREND_RUNS runs, oldest first, this one included."""
    history.mkdir(parents=True, exist_ok=True)
    path = history / "runs.jsonl"
    runs: list[dict[str, object]] = []
    if path.exists():
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            try:
                runs.append(json.loads(line))
            except ValueError:
                print(f"report: {path} line {n} is not JSON; dropped", file=sys.stderr)
    counts = dict(Counter(r.status for r in results))
    t = totals(rows)
    runs.append({"when": dt.datetime.now().isoformat(timespec="seconds"), "exit_code": exit_code,
                 "counts": counts, "coverage": {v.value: n for v, n in t.items()}})
    runs = runs[-HISTORY_RUNS_KEPT:]
    path.write_text("".join(json.dumps(r) + "\n" for r in runs), encoding="utf-8")
    return [RunTrend(str(r.get("when", "?"))[:16].replace("T", " "),
                     {str(k): int(v) for k, v in dict(r.get("counts") or {}).items()})  # type: ignore[call-overload]
            for r in runs[-TREND_RUNS:]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rigs.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bench", help="bench YAML (default: the virtual bench)")
    parser.add_argument("--reports", type=Path, default=Path("reports"),
                        help="where everything goes (default: %(default)s)")
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    args = parser.parse_args(argv)
    reports: Path = args.reports
    results, html, junit = reports / "allure-results", reports / "html", reports / "junit.xml"
    history = reports / "history"

    # Cleaned here, not by each pytest process: pytest-xdist workers (-n N, a bench each)
    # would otherwise clean away each other's results.
    if results.exists():
        shutil.rmtree(results)
    results.mkdir(parents=True)
    cmd = [sys.executable, "-m", "pytest", "features", "-p", "no:allure_pytest",
           "--alluredir", str(results), f"--junitxml={junit}",
           "--progress", "--defer-plots", "-rfE", "--tb=short",
           f"--bench-workdir={reports / 'bench'}",
           *args.pytest_args]
    if args.bench:
        cmd += ["--bench", args.bench]
    code = subprocess.call(cmd, stdin=subprocess.DEVNULL)
    console = make_console()
    try:
        found = read_results(results)
    except RigError as exc:
        print(f"report: {exc}", file=sys.stderr)
        found = []
    rows = coverage_rows(found)
    report = None
    if results.is_dir():
        try:
            drawn = draw_deferred_plots(results)
            print(f"report: {drawn} supply plot(s) drawn", file=sys.stderr)
        except (RigError, OSError, TimeoutError) as exc:
            print(f"report: drawing the plots: {exc}", file=sys.stderr)
            code = code or 1
        (reports / "coverage.json").write_text(json.dumps(to_json(rows), indent=1,
                                                          ensure_ascii=False), encoding="utf-8")
        write_coverage_result(results, rows)
        restore_history(history, results)
        try:
            report = generate_html(results, html, history_out=history / "allure").resolve()
        except RigError as exc:
            print(f"report: {exc}", file=sys.stderr)
            code = code or 1
    if not found and code == 0:
        code = 5  # nothing ran: never a silent success
    trend = record_run(history, found, rows, code)
    lines = [Line(r.feature, r.name, r.status, r.message, r.duration_s, r.category)
             for r in found]
    render_summary(console, lines, rows, report=str(report) if report else None,
                   junit=str(junit.resolve()) if junit.exists() else None,
                   history=str(history.resolve()), trend=trend)
    return code


if __name__ == "__main__":
    raise SystemExit(main())

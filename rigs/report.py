"""``python -m rigs.report``: run the scenario suite, build the HTML report, print a summary.

The summary is read back from the Allure results themselves (what the report will show), one line
per scenario, then the totals and where the report is.  The exit code is pytest's, so a failed or
empty run (pytest's 5, no tests) never looks like success.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from rigs.errors import RigError

REPO = Path(__file__).resolve().parent.parent
REPORT_BOUND = 300.0


@dataclass(frozen=True)
class ScenarioResult:
    feature: str
    name: str
    status: str
    message: str
    duration_s: float


def read_results(results_dir: Path) -> list[ScenarioResult]:
    """Allure ``*-result.json`` files → one entry per scenario, ordered by start time."""
    items = []
    for path in results_dir.glob("*-result.json"):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RigError(f"{path}: unreadable Allure result ({exc})") from None
        labels = {lab.get("name"): lab.get("value") for lab in data.get("labels", [])}
        details = data.get("statusDetails") or {}
        message = str(details.get("message") or "").strip()
        start, stop = data.get("start") or 0, data.get("stop") or 0
        items.append((start, ScenarioResult(
            feature=str(labels.get("feature") or (data.get("titlePath") or ["?"])[-1]),
            name=str(data.get("name", "?")),
            status=str(data.get("status", "unknown")),
            message=message.splitlines()[0] if message else "",
            duration_s=max(0.0, (stop - start) / 1000.0))))
    return [r for _, r in sorted(items, key=lambda x: x[0])]


def render_summary(results: list[ScenarioResult], report: Path | None) -> str:
    lines = ["", "Scenario suite on the bench", "=" * 27]
    for r in results:
        lines.append(f"  {r.status.upper():8} {r.duration_s:6.1f} s  {r.feature}: {r.name}")
        if r.status not in ("passed",) and r.message:
            lines.append(f"           {r.message[:160]}")
    counts = Counter(r.status for r in results)
    total = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no scenarios ran"
    lines += ["", f"  {len(results)} scenarios: {total}"]
    lines.append(f"  HTML report: {report}" if report else "  HTML report: not generated")
    return "\n".join(lines)


def generate_html(results_dir: Path, out_dir: Path) -> Path:
    """Build the offline single-file HTML report with the Allure commandline (node_modules)."""
    allure = REPO / "node_modules" / ".bin" / "allure"
    if not allure.exists():
        raise RigError(f"{allure} is missing: run `npm install` (make run does) to get the "
                       "report generator")
    if shutil.which("java") is None:
        raise RigError("java is missing: the Allure 2 report generator needs Java 17 "
                       "(apt-get install openjdk-17-jre-headless)")
    env = dict(os.environ, ALLURE_NO_ANALYTICS="true")
    cmd = [str(allure), "generate", str(results_dir), "--clean", "--single-file", "-o", str(out_dir)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=REPORT_BOUND,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise RigError(f"allure generate did not finish within {REPORT_BOUND:.0f} s") from None
    if done.returncode != 0:
        raise RigError(f"allure generate failed ({done.returncode}): {done.stderr or done.stdout}")
    return out_dir / "index.html"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rigs.report", description=__doc__)
    parser.add_argument("--bench", help="bench YAML (default: the virtual bench)")
    parser.add_argument("--results", type=Path, default=Path("reports/allure-results"))
    parser.add_argument("--html", type=Path, default=Path("reports/html"))
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    args = parser.parse_args(argv)

    cmd = [sys.executable, "-m", "pytest", "features", "-p", "no:allure_pytest",
           "--alluredir", str(args.results), "--clean-alluredir", *args.pytest_args]
    if args.bench:
        cmd += ["--bench", args.bench]
    code = subprocess.call(cmd, stdin=subprocess.DEVNULL)
    report = None
    try:
        report = generate_html(args.results, args.html).resolve()
    except RigError as exc:
        print(f"report: {exc}", file=sys.stderr)
        code = code or 1
    try:
        results = read_results(args.results)
    except RigError as exc:
        print(f"report: {exc}", file=sys.stderr)
        results = []
    print(render_summary(results, report))
    if not results and code == 0:
        code = 5  # nothing ran: never a silent success
    return code


if __name__ == "__main__":
    raise SystemExit(main())

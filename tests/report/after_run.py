"""``python -m tests.report.after_run reports``: after `make test`'s full run, check what the
run left under ``reports/`` as a certification lab would before handing it over.

1. The HTML report, JUnit XML, coverage matrix and history are there; JUnit counts as many
   scenarios as the Allure results.
2. The HTML report makes no network request when opened (headless Chromium, rigs.offline_check).
3. No card data anywhere under reports/ — the report, the raw results and attachments, the
   bench's work folder (tests.report.leakscan).
4. Every capture attached to a scenario whose traffic reached the acquirer's port decodes with
   the shipped Wireshark dissector into ISO 8583 messages (tshark + rigs/wireshark).
5. Every scenario that sampled the supply has its plot attached (PNG).

Each check prints one line; the exit code is 1 when any failed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

from rigs import offline_check
from tests.report import leakscan

REPO = Path(__file__).resolve().parents[2]
DISSECTOR = REPO / "rigs" / "wireshark" / "posrig_iso8583.lua"
ISO_PORT = 8583
TSHARK_BOUND = 60.0
PCAP_SEEN = "network capture, frames seen"
POWER_TRACE = "power supply trace"
POWER_PLOT = "supply voltage and current"


def _results(reports: Path) -> list[dict[str, object]]:
    out = []
    for path in sorted((reports / "allure-results").glob("*-result.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        labels = {(lab.get("name"), lab.get("value")) for lab in data.get("labels", [])}
        if ("suite", "Procedure coverage") not in labels:
            out.append(data)
    return out


def _attachments(result: dict[str, object], prefix: str) -> list[str]:
    found = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for att in node.get("attachments", []) or []:
                if str(att.get("name", "")).startswith(prefix):
                    found.append(str(att["source"]))
            for step in node.get("steps", []) or []:
                walk(step)
    walk(result)
    return found


def check_files(reports: Path) -> str:
    results = _results(reports)
    missing = [str(p) for p in (reports / "html" / "index.html", reports / "junit.xml",
                                reports / "coverage.json", reports / "history" / "runs.jsonl",
                                reports / "history" / "allure" / "history.json")
               if not p.exists()]
    if missing:
        raise AssertionError(f"missing: {', '.join(missing)}")
    cases = ET.parse(reports / "junit.xml").getroot().iter("testcase")
    n = sum(1 for _ in cases)
    if n != len(results):
        raise AssertionError(f"junit.xml has {n} test cases, the Allure results {len(results)}")
    return f"report, JUnit ({n} cases), coverage and history are there"


def check_offline(reports: Path) -> str:
    verdict = offline_check.check(reports / "html" / "index.html", expect="Allure")
    if not verdict.ok:
        raise AssertionError(verdict.describe())
    return "the HTML report makes no network request when opened"


def check_leaks(reports: Path) -> str:
    needles = leakscan.card_needles()
    findings, files = leakscan.scan([reports], needles)
    if findings:
        raise AssertionError("card data found:\n" + "\n".join(f.describe() for f in findings))
    if not files:
        raise AssertionError(f"no file under {reports}: nothing proven")
    return f"no card data in {files} files ({len({n.card for n in needles})} card profiles)"


def _tshark(args: list[str]) -> str:
    exe = shutil.which("tshark")
    if exe is None:
        raise AssertionError("tshark is missing: apt-get install tshark")
    done = subprocess.run([exe, *args], capture_output=True, text=True, timeout=TSHARK_BOUND,
                          stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise AssertionError(f"tshark {' '.join(args)} failed: {done.stderr[-400:]}")
    return done.stdout


def check_captures(reports: Path) -> str:
    if not DISSECTOR.exists():
        raise AssertionError(f"{DISSECTOR} is missing")
    results_dir = reports / "allure-results"
    checked = decoded = 0
    problems = []
    for result in _results(reports):
        for source in _attachments(result, PCAP_SEEN):
            pcap = results_dir / source
            rows = _tshark(["-X", f"lua_script:{DISSECTOR}", "-r", str(pcap), "-Y",
                            f"tcp.port == {ISO_PORT} && tcp.len > 0", "-T", "fields",
                            "-E", "separator=;", "-e", "frame.number", "-e", "posrig.mti"])
            carrying = [r for r in rows.splitlines() if r.strip()]
            if not carrying:
                continue
            checked += 1
            mtis = [r.split(";", 1)[1] for r in carrying if ";" in r and r.split(";", 1)[1]]
            if mtis:
                decoded += 1
            else:
                problems.append(f"{result.get('name')}: {len(carrying)} frames to port "
                                f"{ISO_PORT}, no ISO 8583 message decoded ({source})")
    if problems:
        raise AssertionError("\n".join(problems))
    if not checked:
        raise AssertionError("no capture carried traffic to the acquirer: nothing proven")
    return f"{decoded} of {checked} captures with acquirer traffic decode into ISO 8583 messages"


def check_plots(reports: Path) -> str:
    missing, plotted = [], 0
    for result in _results(reports):
        if not _attachments(result, POWER_TRACE) or result.get("status") == "skipped":
            continue
        if _attachments(result, POWER_PLOT):
            plotted += 1
        else:
            missing.append(str(result.get("name")))
    if missing:
        raise AssertionError(f"{len(missing)} scenario(s) sampled the supply without a plot: "
                             + "; ".join(missing[:10]))
    if not plotted:
        raise AssertionError("no scenario sampled the supply: nothing proven")
    return f"{plotted} scenarios that sampled the supply have their plot"


CHECKS: tuple[tuple[str, Callable[[Path], str]], ...] = (
    ("files", check_files), ("offline", check_offline), ("card data", check_leaks),
    ("captures", check_captures), ("plots", check_plots))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.report.after_run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reports", type=Path, nargs="?", default=Path("reports"))
    args = parser.parse_args(argv)
    failed = 0
    for name, run in CHECKS:
        try:
            print(f"ok    {name}: {run(args.reports)}")
        except (AssertionError, OSError, ValueError, subprocess.SubprocessError,
                offline_check.RigError) as exc:
            failed += 1
            print(f"FAIL  {name}: {exc}")
    print(f"after-run checks: {len(CHECKS) - failed} of {len(CHECKS)} passed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The soak with chaos on a virtual bench of its own: the short version of `make soak` that
`make test` runs (POSRIG_SOAK_N transactions, 200 by default; docs/soak.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rigs.soak import Check

REPO = Path(__file__).resolve().parents[2]
COUNT = int(os.environ.get("POSRIG_SOAK_N", "200"))

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the virtual bench needs root")


def test_a_short_soak_holds_every_invariant(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "rigs", "soak", "--count", str(COUNT), "--seed", "11",
         "--fault-ratio", "0.2", "--bench-id", "soak", "--reports", str(tmp_path), "--quiet"],
        cwd=REPO, capture_output=True, text=True, timeout=120 + 10 * COUNT,
        stdin=subprocess.DEVNULL)
    print(done.stdout[-6000:])  # the table, in the test's output (CI log with -rA or a failure)
    summary = tmp_path / "soak.json"
    assert summary.exists(), f"no summary written:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    report = json.loads(summary.read_text())
    assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-2000:]}"
    assert not report["violations"] and not report["stopped"]
    assert report["done"] == COUNT and report["settlements"] >= COUNT // 20
    assert report["faults_injected"] >= COUNT // 10, f"too few faults fired: {report['faults_fired']}"
    assert len(report["faults_fired"]) >= 5, f"too few kinds of fault fired: {report['faults_fired']}"
    checks = report["checks"]
    for check in (Check.BOOKED_ONCE, Check.NO_DOUBLE_CHARGE, Check.TOTALS, Check.NO_FAULT_LEFT,
                  Check.FLAT):
        assert checks[check.value]["checked"] > 0, f"{check.value} never checked: {checks}"
    last = done.stdout.strip().splitlines()[-1]
    assert last == f"soak: {COUNT} transactions, {report['faults_injected']} faults injected, " \
                   f"0 invariant violations"

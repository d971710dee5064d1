"""The soak with chaos on a virtual bench of its own: the short version of `make soak` that
`make test` runs (POSRIG_SOAK_N transactions, 200 by default; docs/soak.md).

It takes about three minutes, spent mostly waiting on the terminal, on a bench of its own (its
own id, namespaces and ports, as parallel benches do): under pytest-xdist (`make test`) it has a
worker to itself while the rest of the suite runs on the other (tests/conftest.py)."""

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
BOUND_S = 120 + 10 * COUNT
NODE = "tests/bench/test_soak.py::"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the virtual bench needs root")


def test_a_short_soak_holds_every_invariant(tmp_path: Path) -> None:
    out = tmp_path / "soak-output.txt"
    with open(out, "wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rigs", "soak", "--count", str(COUNT), "--seed", "11",
             "--fault-ratio", "0.2", "--bench-id", "soak", "--reports", str(tmp_path),
             "--quiet"], cwd=REPO, stdout=sink, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL)
    try:
        code = proc.wait(timeout=BOUND_S)
    except subprocess.TimeoutExpired:
        proc.kill()  # its bench goes down with it (--watch-pid)
        proc.wait(timeout=10)
        pytest.fail(f"the soak did not end within {BOUND_S} s:\n"
                    f"{out.read_text(errors='replace')[-4000:]}")
    said = out.read_text(errors="replace")
    print(said[-6000:])  # the table, in the test's output
    summary = tmp_path / "soak.json"
    assert summary.exists(), f"no summary written:\n{said[-4000:]}"
    report = json.loads(summary.read_text())
    assert code == 0, said[-4000:]
    assert not report["violations"] and not report["stopped"]
    assert report["done"] == COUNT and report["settlements"] >= COUNT // 20
    assert report["faults_injected"] >= COUNT // 10, f"too few faults fired: {report['faults_fired']}"
    assert len(report["faults_fired"]) >= min(5, COUNT // 20), \
        f"too few kinds of fault fired: {report['faults_fired']}"
    checks = report["checks"]
    for check in (Check.BOOKED_ONCE, Check.NO_DOUBLE_CHARGE, Check.TOTALS, Check.NO_FAULT_LEFT,
                  Check.FLAT):
        assert checks[check.value]["checked"] > 0, f"{check.value} never checked: {checks}"
    last = said.strip().splitlines()[-1]
    assert last == f"soak: {COUNT} transactions, {report['faults_injected']} faults injected, " \
                   f"0 invariant violations"

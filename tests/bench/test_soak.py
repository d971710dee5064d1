"""The soak with chaos on a virtual bench of its own: the short version of `make soak` that
`make test` runs (POSRIG_SOAK_N transactions, 200 by default; docs/soak.md).

It takes about three minutes, spent mostly waiting on the terminal, so it runs beside the rest
of the suite on a bench of its own (its own id, namespaces and ports, as parallel benches do):
under pytest-xdist (`make test`) this test has a worker to itself and starts it; without xdist,
tests/conftest.py starts it as soon as collection is done and this test waits for it, bounded,
and judges what it wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from rigs.soak import Check

REPO = Path(__file__).resolve().parents[2]
COUNT = int(os.environ.get("POSRIG_SOAK_N", "200"))
BOUND_S = 120 + 10 * COUNT
NODE = "tests/bench/test_soak.py::"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the virtual bench needs root")


@dataclass
class SoakRun:
    proc: subprocess.Popen[bytes]
    reports: Path
    started: float

    @property
    def out(self) -> Path:
        return self.reports / "soak-output.txt"


EARLY = pytest.StashKey[SoakRun]()


def start(reports: Path) -> SoakRun:
    reports.mkdir(parents=True, exist_ok=True)
    with open(reports / "soak-output.txt", "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rigs", "soak", "--count", str(COUNT), "--seed", "11",
             "--fault-ratio", "0.2", "--bench-id", "soak", "--reports", str(reports),
             "--quiet"], cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL)
    return SoakRun(proc, reports, time.monotonic())


def start_early(config: pytest.Config) -> None:
    """Called by tests/conftest.py once collection is done, when this test was selected."""
    config.stash[EARLY] = start(Path(tempfile.mkdtemp(prefix="soak", dir="/tmp")))


def stop_unused(config: pytest.Config) -> None:
    """At the session's end: a soak started early that no test waited for (the run stopped
    first) is ended by its PID; its bench goes down with it (--watch-pid)."""
    run = config.stash.get(EARLY, None)
    if run is not None and run.proc.poll() is None:
        run.proc.terminate()
        try:
            run.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            run.proc.kill()
            run.proc.wait(timeout=10)


def test_a_short_soak_holds_every_invariant(request: pytest.FixtureRequest,
                                            tmp_path: Path) -> None:
    run = request.config.stash.get(EARLY, None) or start(tmp_path)
    left = BOUND_S - (time.monotonic() - run.started)
    try:
        code = run.proc.wait(timeout=max(left, 1.0))
    except subprocess.TimeoutExpired:
        run.proc.kill()
        run.proc.wait(timeout=10)
        pytest.fail(f"the soak did not end within {BOUND_S} s:\n"
                    f"{run.out.read_text(errors='replace')[-4000:]}")
    said = run.out.read_text(errors="replace")
    print(said[-6000:])  # the table, in the test's output
    summary = run.reports / "soak.json"
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

"""Power cut at seeded random instants during sales: the journal against the acquirer's ledger.
The short version runs here; `make power-cuts` runs 200 sales (tests/bench/power_cuts.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SALES = int(os.environ.get("POSRIG_POWER_CUT_SALES", "30"))

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the virtual bench needs root")


def test_power_cuts_lose_nothing_and_charge_nothing_twice(tmp_path: Path) -> None:
    summary = tmp_path / "power-cuts.json"
    done = subprocess.run(
        [sys.executable, "-m", "tests.bench.power_cuts", "--sales", str(SALES), "--seed", "11",
         "--workdir", str(tmp_path / "run"), "--json", str(summary), "--quiet"],
        cwd=REPO, capture_output=True, text=True, timeout=60 + 15 * SALES,
        stdin=subprocess.DEVNULL)
    assert summary.exists(), f"no summary written:\n{done.stdout}\n{done.stderr}"
    report = json.loads(summary.read_text())
    assert done.returncode == 0 and not report["violations"], done.stdout[-4000:]
    assert report["cuts"] >= SALES // 4, f"too few cuts happened: {report}"
    assert report["aborted_by_cut"] >= 1, f"no cut landed inside a sale: {report}"
    last = done.stdout.strip().splitlines()[-1]
    assert last == f"power cuts: {SALES} sales, {report['cuts']} cuts, 0 invariant violations " \
                   f"(seed 11)"

"""Root only: several virtual benches side by side on one PC.  Each has its own namespaces,
interfaces, card namespace, ports and work folder, derived from its bench id; a fault on one
never touches another; ``pytest -n 2`` gives each pytest-xdist worker its own bench and the
Allure results of both land in one folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from protocols.faults import FaultKind, FaultSpec
from rigs.bench import Bench
from rigs.config import load_bench
from rigs.errors import NoResponse

REPO = Path(__file__).resolve().parents[2]
BOUND = 180

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the virtual bench needs root")


def _sim(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sim", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=BOUND, stdin=subprocess.DEVNULL)


def _netns() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


@pytest.fixture
def two_benches(tmp_path: Path) -> Iterator[tuple[Bench, Bench]]:
    """Benches 'a' and 'b' up, opened without their card banks (pyscard talks to one pcscd
    per process), nominal; always taken down."""
    opened: list[Bench] = []
    try:
        for bench_id in ("a", "b"):
            up = _sim("up", "--bench-id", bench_id, "--workdir", str(tmp_path / bench_id),
                      "--bench-file", str(tmp_path / f"{bench_id}.yaml"))
            assert up.returncode == 0, up.stdout + up.stderr
        for bench_id in ("a", "b"):
            config = load_bench(tmp_path / f"{bench_id}.yaml")
            bench = Bench(config.model_copy(update={"cards": None}),
                          workdir=tmp_path / f"rig-{bench_id}")
            bench.open()
            opened.append(bench)
            bench.restore_nominal()
        yield opened[0], opened[1]
    finally:
        for bench in opened:
            bench.close()
        for bench_id in ("a", "b"):
            down = _sim("down", "--bench-id", bench_id, "--workdir", str(tmp_path / bench_id))
            assert down.returncode == 0, down.stdout + down.stderr
    assert not {n for n in _netns() if n.startswith(("pba", "pbb"))}, "namespaces left"


def _login(bench: Bench) -> None:
    creds = bench.config.terminal.operators["operator"]
    assert bench.terminal.login(creds.id, creds.password).ok


def test_each_bench_has_its_own_names_and_a_fault_on_one_never_touches_the_other(
        two_benches: tuple[Bench, Bench]) -> None:
    a, b = two_benches
    assert (a.config.bench.name, b.config.bench.name) == ("virtual-a", "virtual-b")
    assert a.config.network is not None and b.config.network is not None
    assert (a.config.network.netns, b.config.network.netns) == ("pbarig", "pbbrig")
    assert {"pbadut", "pbaacq", "pbarig", "pbapcsc", "pbbdut", "pbbacq", "pbbrig",
            "pbbpcsc"} <= _netns()
    assert a.config.power is not None and b.config.power is not None
    assert a.config.power.resource != b.config.power.resource  # their own SCPI ports
    assert a.config.terminal.port != b.config.terminal.port  # their own ptys
    for bench in (a, b):
        _login(bench)

    cable = a.inject(FaultSpec.of(FaultKind.CABLE_PULL))
    assert not a.terminal.sign_in(timeout=30).ok, "bench a signed in with its cable pulled"
    assert b.terminal.sign_in(timeout=30).ok, "bench b could not sign in while a's cable was out"
    assert not b.network.active(), "a's cable pull shows on b's injector"
    a.clear_fault(cable)

    cut = a.inject(FaultSpec.of(FaultKind.POWER_CUT))
    with pytest.raises(NoResponse):
        a.terminal.status(timeout=1.0)
    status = b.terminal.status()
    assert status.state == "IDLE" and b.power.output, "a's power cut reached bench b"
    a.clear_fault(cut)
    a.restore_nominal()
    assert a.terminal.status().state == "IDLE"


def test_two_xdist_workers_each_run_on_a_bench_of_their_own(tmp_path: Path) -> None:
    results, junit = tmp_path / "allure-results", tmp_path / "junit.xml"
    results.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "features", "-n", "2", "-p", "no:allure_pytest",
         "-p", "no:cacheprovider", "--alluredir", str(results), f"--junitxml={junit}",
         "--bench-workdir", str(tmp_path / "bench"), "-k",
         "stripe_card_signs or worn_stripe or chip_card_swiped or dirty_stripe"],
        cwd=REPO, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    cases = list(ET.parse(junit).getroot().iter("testcase"))
    assert len(cases) == 4 and all(not list(c) for c in cases), out[-2000:]
    benches = set()
    for path in results.glob("*-result.json"):
        labels = json.loads(path.read_text(encoding="utf-8")).get("labels", [])
        benches |= {lab["value"] for lab in labels if lab["name"] == "bench"}
    assert benches == {"virtual-gw0", "virtual-gw1"}, benches
    assert not {n for n in _netns() if n.startswith("pbgw")}, "a worker's bench was left up"

"""pytest plugin: the bench as fixtures, nominal between scenarios, evidence into the report.

- ``--bench PATH`` runs the scenarios on the bench that file describes (a lab).  Without it the
  virtual bench is brought up for the session (``python -m sim up``, a command: the rig never
  imports the simulator) and always torn down, on failure and on Ctrl-C too; if this process is
  killed outright, the bench notices its owner is gone and tears itself down.
- Before every scenario the bench is nominal; after it the bench is restored and checked.  A bench
  that cannot be restored is broken: every later scenario fails at once with the first reason.
- Scenario tags are registered markers.  A scenario that needs an instrument the bench lacks is
  skipped with the reason.
- Per scenario the ECR transcript, receipts, APDU trace, PSU trace, pcap, decoded ISO 8583 messages
  and the acquirer's ledger entries are attached to the Allure report (all masked).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rigs.bench import Bench, Evidence, missing_capabilities
from rigs.config import BenchConfig, load_bench
from rigs.errors import RigError

MARKERS = {
    "fault": "the scenario injects a fault",
    "network": "needs the in-line network injector",
    "power": "needs the programmable power supply",
    "card": "needs the card bank and the slot probe",
    "printer": "needs the relay wired to the printer's paper sensor",
    "slow": "takes more than a few seconds",
    "hw_only": "runs only on a lab bench with real hardware",
    "operating": "an operating procedure",
    "troubleshooting": "a troubleshooting procedure",
    "security": "a security check",
}
SIM_BOUND = 120.0


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("posrig", "POS terminal test rig")
    group.addoption("--bench", metavar="PATH", default=None,
                    help="bench YAML of the bench to run on (default: bring up the virtual bench)")
    group.addoption("--bench-workdir", metavar="DIR", default="reports/bench",
                    help="where the virtual bench keeps its state and logs (default: %(default)s)")


def pytest_configure(config: pytest.Config) -> None:
    for name, doc in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {doc}")


def _run_sim(args: list[str], bound: float) -> str:
    cmd = [sys.executable, "-m", "sim", *args]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=bound,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise RigError(f"`{' '.join(cmd[1:])}` did not finish within {bound:.0f} s") from None
    if done.returncode != 0:
        raise RigError(f"`{' '.join(cmd[1:])}` failed ({done.returncode}):\n"
                       f"{done.stdout}{done.stderr}".rstrip())
    return done.stdout


@pytest.fixture(scope="session")
def bench_config(request: pytest.FixtureRequest) -> Iterator[BenchConfig]:
    """The bench file given with --bench, or the virtual bench, up for the whole session."""
    given = request.config.getoption("--bench")
    if given:
        try:
            config = load_bench(given)
        except RigError as exc:  # a clear message, not a traceback from inside the loader
            pytest.fail(str(exc), pytrace=False)
        yield config
        return
    workdir = Path(request.config.getoption("--bench-workdir")).resolve()
    bench_file = workdir.parent / "bench.yaml"
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    try:
        try:
            said = _run_sim(["up", "--workdir", str(workdir), "--bench-file", str(bench_file),
                             "--watch-pid", str(os.getpid())], SIM_BOUND)
            config = load_bench(bench_file)
        except RigError as exc:
            pytest.fail(f"the virtual bench could not be brought up: {exc}", pytrace=False)
        if reporter is not None:
            for line in said.splitlines():
                reporter.write_line(line)
        yield config
    finally:
        said = _run_sim(["down", "--workdir", str(workdir)], SIM_BOUND)
        if reporter is not None:
            for line in said.splitlines():
                reporter.write_line(line)


@pytest.fixture(scope="session")
def rig_bench(bench_config: BenchConfig, request: pytest.FixtureRequest) -> Iterator[Bench]:
    """The opened bench, nominal at the start."""
    workdir = Path(request.config.getoption("--bench-workdir")).resolve().parent / "rig"
    b = Bench(bench_config, workdir=workdir)
    b.open()
    try:
        b.restore_nominal()
        yield b
    finally:
        b.close()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:80] or "scenario"


@pytest.fixture
def bench(bench_config: BenchConfig, request: pytest.FixtureRequest) -> Iterator[Bench]:
    """The bench for one scenario: skipped if it lacks an instrument, restored afterwards."""
    tags = {m.name for m in request.node.iter_markers()}
    missing = missing_capabilities(bench_config, tags)
    if missing:
        pytest.skip("; ".join(missing))
    bench: Bench = request.getfixturevalue("rig_bench")
    if bench.broken:
        pytest.fail(bench.broken, pytrace=False)
    bench.begin_scenario(_slug(request.node.name))
    try:
        yield bench
    finally:
        bench.restore_nominal()


@pytest.hookimpl(tryfirst=True)
def pytest_bdd_after_scenario(request: pytest.FixtureRequest, feature: Any, scenario: Any) -> None:
    """Attach the scenario's evidence while its report is still open."""
    if "bench" not in request.fixturenames:
        return
    bench: Bench = request.getfixturevalue("bench")
    try:
        evidence = bench.end_scenario()
    except RigError as exc:
        evidence = [Evidence("evidence collection failed", "text", str(exc))]
    for item in evidence:
        _attach(item)


def _attach(item: Evidence) -> None:
    try:
        import allure
    except ImportError:  # the report plugin is optional
        return
    kinds = {"text": allure.attachment_type.TEXT, "csv": allure.attachment_type.CSV,
             "pcap": allure.attachment_type.PCAP}
    if item.path is not None:
        if item.path.exists():
            allure.attach.file(str(item.path), name=item.name, attachment_type=kinds[item.kind])
    elif item.content is not None:
        allure.attach(item.content, name=item.name, attachment_type=kinds[item.kind])

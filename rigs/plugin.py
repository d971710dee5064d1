"""pytest plugin: the bench as fixtures, nominal between scenarios, evidence into the report.

- ``--bench PATH`` runs the scenarios on the bench that file describes (a lab).  Without it the
  virtual bench is brought up for the session (``python -m sim up``, a command: the rig never
  imports the simulator) and always torn down, on failure and on Ctrl-C too; if this process is
  killed outright, the bench notices its owner is gone and tears itself down.
- Before every scenario the bench is nominal; after it the bench is restored and checked.  A bench
  that cannot be restored is broken: every later scenario fails at once with the first reason.
- Scenario tags are registered markers, procedure ids (``@OP-05``, from docs/procedures.md)
  included.  A scenario that needs a part the bench lacks is skipped at setup with the reason:
  by its tags (``@card``, ``@ledger``, …) and by its steps (a step marked with
  :func:`rigs.capabilities.needs`).  If a step still meets a missing part mid-scenario
  (:class:`~rigs.errors.CapabilityMissing`), the scenario is skipped, never failed or errored.
- ``--bench-without ledger,network`` brings the virtual bench up without those parts (no
  ledger in the bench file; no in-line injector, terminal and host joined by a kernel bridge as
  a lab without an injector is cabled).
- Per scenario the ECR transcript, receipts, APDU trace, PSU trace, pcaps, decoded ISO 8583
  messages, the fault ledger, one timeline of every instrument's events and the acquirer's ledger
  entries are attached to the Allure report (all masked).
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

from rigs.bench import Bench, Evidence, lacks, missing_for_tags
from rigs.capabilities import REQUIREMENT, needs_of
from rigs.config import BenchConfig, load_bench
from rigs.errors import CapabilityMissing, RigError

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
    "ledger": "checks what the acquirer host booked (needs its ledger; usually virtual bench only)",
    "wire": "checks what crossed the wire (needs the in-line network injector)",
    "host_control": "sets the acquirer host's answers (needs its control; virtual bench only)",
    "qr": "pays through the QR payment platform (needs its wallet control; virtual bench only)",
    "qr_ledger": "checks what the QR payment platform booked (needs its ledger)",
}
SIM_BOUND = 120.0
PROCEDURES = Path(__file__).resolve().parent.parent / "docs" / "procedures.md"
_PROCEDURE_ROW = re.compile(r"^\|\s*((?:OP|TS|SEC)-\d{2})\s*\|\s*([^|]+?)\s*\|")
WITHOUT = ("ledger", "network")


def procedure_ids(path: Path = PROCEDURES) -> dict[str, str]:
    """Procedure id → title, from the catalogue's tables (``| OP-05 | purchase by chip … |``)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RigError(f"{path}: cannot read the procedure catalogue ({exc.strerror})") from None
    out = {}
    for line in text.splitlines():
        m = _PROCEDURE_ROW.match(line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("posrig", "POS terminal test rig")
    group.addoption("--bench", metavar="PATH", default=None,
                    help="bench YAML of the bench to run on (default: bring up the virtual bench)")
    group.addoption("--bench-workdir", metavar="DIR", default="reports/bench",
                    help="where the virtual bench keeps its state and logs (default: %(default)s)")
    group.addoption("--bench-without", metavar="PARTS", default="",
                    help="virtual bench only: leave out these parts, comma separated, of "
                         f"{', '.join(WITHOUT)} (a bench that lacks them)")


def pytest_configure(config: pytest.Config) -> None:
    for name, doc in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {doc}")
    try:
        procedures = procedure_ids()
    except RigError as exc:  # a rig installed without its docs: the tags still work, unregistered
        config.issue_config_time_warning(pytest.PytestConfigWarning(str(exc)), stacklevel=2)
        procedures = {}
    for pid, title in procedures.items():
        config.addinivalue_line("markers", f"{pid}: procedure {pid}, {title}")


def _without(config: pytest.Config) -> list[str]:
    parts = [p.strip() for p in str(config.getoption("--bench-without")).split(",") if p.strip()]
    unknown = sorted(set(parts) - set(WITHOUT))
    if unknown:
        raise pytest.UsageError(f"--bench-without: unknown part(s) {unknown}; expected some of "
                                f"{', '.join(WITHOUT)}")
    return parts


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
    without = _without(request.config)
    try:
        try:
            said = _run_sim(["up", "--workdir", str(workdir), "--bench-file", str(bench_file),
                             "--watch-pid", str(os.getpid()),
                             *(["--without", ",".join(without)] if without else [])],
                            SIM_BOUND)
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


def _scenario_steps(request: pytest.FixtureRequest) -> list[Any]:
    """The steps of the scenario being set up (empty when not a pytest-bdd scenario)."""
    try:
        from pytest_bdd.scenario import scenario_wrapper_template_registry
    except ImportError:  # another pytest-bdd line: the runtime check below still holds
        return []
    func = getattr(request.node, "obj", None)
    template = scenario_wrapper_template_registry.get(func) if callable(func) else None
    if template is None:
        return []
    callspec = getattr(request.node, "callspec", None)
    example = callspec.params.get("_pytest_bdd_example", {}) if callspec is not None else {}
    return list(template.render(example).steps)


def missing_for_steps(config: BenchConfig, request: pytest.FixtureRequest) -> list[str]:
    """Why a step of this scenario cannot run on the bench (empty: every step can)."""
    from pytest_bdd.scenario import get_step_function

    out = []
    for step in _scenario_steps(request):
        context = get_step_function(request, step)
        if context is None:
            continue  # pytest-bdd itself reports the missing step definition
        for cap in sorted(needs_of(context.step_func)):
            if lacks(config, cap):
                text = f"step '{step.keyword.strip()} {step.name}' needs {REQUIREMENT[cap]}"
                if text not in out:
                    out.append(text)
    return out


@pytest.fixture(autouse=True)
def _bench_can_run(request: pytest.FixtureRequest) -> None:
    """At setup of every scenario: skip it, with the reason, if the bench lacks a part its tags
    or its steps need (before any step has touched the terminal)."""
    if not _scenario_steps(request):
        return
    try:
        config: BenchConfig = request.getfixturevalue("bench_config")
    except pytest.fail.Exception:
        return  # a broken bench file: the scenario's first step fails with the reason
    tags = {m.name for m in request.node.iter_markers()}
    missing = missing_for_tags(config, tags) or missing_for_steps(config, request)
    if missing:
        pytest.skip("; ".join(missing))


@pytest.fixture
def bench(bench_config: BenchConfig, request: pytest.FixtureRequest) -> Iterator[Bench]:
    """The bench for one scenario: skipped if it lacks a part, restored afterwards."""
    tags = {m.name for m in request.node.iter_markers()}
    missing = missing_for_tags(bench_config, tags)
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


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """A part the bench lacks, met mid-scenario, skips the scenario with the reason.  A fault
    armed on a trigger that could not be applied fails the scenario (it never passes for an
    injected fault)."""
    try:
        result = yield
    except CapabilityMissing as exc:
        pytest.skip(f"the bench lacks a part this scenario needs: {exc}")
    bench = getattr(item, "funcargs", {}).get("bench")
    if isinstance(bench, Bench):
        bench.armer.settle()
        bench.armer.raise_errors()
    return result


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

"""pytest plugin: the bench as fixtures, nominal between scenarios, evidence into the report.

- ``--bench PATH`` runs the scenarios on the bench that file describes (a lab).  Without it the
  virtual bench is brought up for the session (``python -m sim up``, a command: the rig never
  imports the simulator) and always torn down, on failure and on Ctrl-C too; if this process is
  killed outright, the bench notices its owner is gone and tears itself down.
- Before every scenario the bench is nominal; after it the bench is restored and checked.  A bench
  that cannot be restored is broken: every later scenario fails at once with the first reason.
- Scenario tags are registered markers, procedure ids (``@OP-05``, from rigs/procedures.md)
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

import contextlib
import json
import os
import re
import sys
import types
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from protocols.faults import FaultKind
from rigs.bench import Bench, Evidence, lacks, missing_for_tags
from rigs.capabilities import REQUIREMENT, needs_of
from rigs.config import BenchConfig, load_bench
from rigs.console import BENCH_KEY, PROGRESS_OPTION, Progress, make_console
from rigs.coverage import PROCEDURE_ID, procedure_ids
from rigs.errors import CapabilityMissing, RigError
from rigs.events import Event, Source
from rigs.failures import allure_categories
from rigs.virtualbench import run_sim
from steps import STEP_MODULES

pytest_plugins = list(STEP_MODULES)
"""The step library comes with the plugin: a lab's repository needs no conftest of its own."""

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
WITHOUT = ("ledger", "network")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("posrig_features", type="bool", default=True,
                  help="collect every .feature file as a module of its scenarios (a lab's "
                       "repository of features needs no Python); false when test modules "
                       "bind them with pytest-bdd's scenarios() themselves")
    group = parser.getgroup("posrig", "POS terminal test rig")
    group.addoption("--bench", metavar="PATH", default=None,
                    help="bench YAML of the bench to run on (default: bring up the virtual bench)")
    group.addoption("--bench-workdir", metavar="DIR", default="reports/bench",
                    help="where the virtual bench keeps its state and logs (default: %(default)s)")
    group.addoption("--raw-capture", metavar="DIR", default=None,
                    help="also keep each scenario's raw network capture (card data in the "
                         "clear!) in DIR, which must be outside reports/; the report's "
                         "captures are always masked")
    group.addoption("--defer-plots", action="store_true", default=False,
                    help="attach each supply plot's data and draw the plots after the run "
                         "(python -m rigs.report does; plain pytest draws them inline)")
    group.addoption(PROGRESS_OPTION, action="store_true", default=False,
                    help="live progress: feature, scenario, step and bench state (a status "
                         "line on a terminal, plain lines in a CI log)")
    group.addoption("--bench-id", metavar="ID", default=None,
                    help="virtual bench only: the id of this bench among several on one PC "
                         "(its namespaces, card namespace, work folder); under pytest-xdist "
                         "each worker takes its own (gw0, gw1, …) unless this is given")
    group.addoption("--bench-without", metavar="PARTS", default="",
                    help="virtual bench only: leave out these parts, comma separated, of "
                         f"{', '.join(WITHOUT)} (a bench that lacks them)")


def pytest_configure(config: pytest.Config) -> None:
    _raw_capture_dir(config)  # a folder under reports/ is refused before anything runs
    if config.getoption(PROGRESS_OPTION, default=False):
        config.pluginmanager.register(Progress(make_console(), config), "posrig-progress")
    for name, doc in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {doc}")
    try:
        procedures = procedure_ids()
    except RigError as exc:  # a rig installed without its docs: the tags still work, unregistered
        config.issue_config_time_warning(pytest.PytestConfigWarning(str(exc)), stacklevel=2)
        procedures = {}
    for pid, title in procedures.items():
        config.addinivalue_line("markers", f"{pid}: procedure {pid}, {title}")


class FeatureFile(pytest.Module):
    """A ``.feature`` file collected as the module of its scenarios: the module is made here,
    with pytest-bdd's ``scenarios()`` run in it, instead of being imported from a .py file."""

    def _getobj(self) -> Any:
        module = types.ModuleType(f"posrig_feature_{_slug(str(self.path))}")
        module.__file__ = str(self.path.with_suffix(".py"))  # where pytest-bdd sees a caller
        code = compile("from pytest_bdd import scenarios\n"
                       f"scenarios({str(self.path)!r}, features_base_dir="
                       f"{str(self.path.parent)!r})\n", module.__file__, "exec")
        try:
            exec(code, module.__dict__)  # noqa: S102 - code built here, from a path
        except Exception as exc:  # a broken feature file: said where, not a traceback
            raise self.CollectError(f"{self.path}: {type(exc).__name__}: {exc}") from exc
        return module


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.suffix != ".feature" or not parent.config.getini("posrig_features"):
        return None
    return FeatureFile.from_parent(parent, path=file_path)


def _without(config: pytest.Config) -> list[str]:
    parts = [p.strip() for p in str(config.getoption("--bench-without")).split(",") if p.strip()]
    unknown = sorted(set(parts) - set(WITHOUT))
    if unknown:
        raise pytest.UsageError(f"--bench-without: unknown part(s) {unknown}; expected some of "
                                f"{', '.join(WITHOUT)}")
    return parts


@pytest.fixture(scope="session")
def bench_config(request: pytest.FixtureRequest) -> Iterator[BenchConfig]:
    """The bench file given with --bench, or the virtual bench, up for the whole session."""
    given = request.config.getoption("--bench")
    if given:
        from rigs.labgrid import PlaceLease, read_farm_bench

        try:  # the whole file, a labgrid section too, before any coordinator is asked
            farm = read_farm_bench(given)
        except RigError as exc:  # a clear message, not a traceback from inside the loader
            pytest.fail(str(exc), pytrace=False)
        if farm.labgrid is None:
            if os.environ.get("PYTEST_XDIST_WORKER"):
                pytest.fail(f"{given}: one bench, several pytest-xdist workers: they would "
                            f"drive the same instruments at once; run without -n, or name a "
                            f"labgrid place by tags so each worker reserves a bench of its "
                            f"own", pytrace=False)
            yield farm.local_config()
        else:
            yield from _held_place(PlaceLease(farm), request)
        return
    bench_id = virtual_bench_id(request.config)
    workdir = Path(request.config.getoption("--bench-workdir")).resolve()
    if bench_id:
        workdir = workdir.with_name(f"{workdir.name}-{bench_id}")
    bench_file = workdir.with_name(f"{workdir.name}.yaml")
    without = _without(request.config)
    ident = ["--bench-id", bench_id] if bench_id else []
    try:
        try:
            said = run_sim(["up", "--workdir", str(workdir), "--bench-file", str(bench_file),
                             "--watch-pid", str(os.getpid()), *ident,
                             *(["--without", ",".join(without)] if without else [])],
                            SIM_BOUND)
            config = load_bench(bench_file)
        except RigError as exc:
            pytest.fail(f"the virtual bench could not be brought up: {exc}", pytrace=False)
        _say(request.config, said.splitlines())
        yield config
    finally:
        said = run_sim(["down", "--workdir", str(workdir), *ident], SIM_BOUND)
        _say(request.config, said.splitlines())


def _say(config: pytest.Config, lines: Iterable[str]) -> None:
    """Lines about the bench on the console as it happens (around the output capture: what a
    session fixture prints would otherwise only show with a failure)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    capman = config.pluginmanager.getplugin("capturemanager")
    with capman.global_and_fixture_disabled() if capman is not None else contextlib.nullcontext():
        for line in lines:
            reporter.write_line(line)


LABGRID_PLACE = pytest.StashKey[str]()
"""The labgrid place the session holds (a bench file with a labgrid section)."""


def _held_place(lease: Any, request: pytest.FixtureRequest) -> Iterator[BenchConfig]:
    """A bench file naming a labgrid place: acquired for the session (reservation by tags or
    name, bounded), released at its end — on a failure, Ctrl-C or SIGTERM too
    (rigs/labgrid.py); a release that fails fails the run."""
    request.config.add_cleanup(lease.release)  # idempotent; runs even if teardown does not
    try:
        config: BenchConfig = lease.acquire()
    except RigError as exc:
        pytest.fail(str(exc), pytrace=False)
    request.config.stash[LABGRID_PLACE] = str(lease.place)
    _say(request.config, lease.describe())
    try:
        yield config
    finally:
        lease.release()


def virtual_bench_id(config: pytest.Config) -> str:
    """``--bench-id``, else the pytest-xdist worker's id (``gw0`` …), else '' (the one bench
    with the contract names)."""
    given = config.getoption("--bench-id")
    if given:
        return str(given)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    return worker if worker else ""


@pytest.fixture(scope="session")
def rig_bench(bench_config: BenchConfig, request: pytest.FixtureRequest) -> Iterator[Bench]:
    """The opened bench, nominal at the start."""
    bench_id = virtual_bench_id(request.config)
    workdir = Path(request.config.getoption("--bench-workdir")).resolve().parent / (
        f"rig-{bench_id}" if bench_id else "rig")
    b = Bench(bench_config, workdir=workdir)
    b.raw_capture_dir = _raw_capture_dir(request.config)
    b.defer_plots = bool(request.config.getoption("--defer-plots"))
    b.open()
    request.config.stash[BENCH_KEY] = b
    try:
        b.restore_nominal()
        request.config.stash[ENVIRONMENT] = bench_environment(b)
        place = request.config.stash.get(LABGRID_PLACE, None)
        if place is not None:
            request.config.stash[ENVIRONMENT]["labgrid.place"] = place
        yield b
    finally:
        b.close()


def _raw_capture_dir(config: pytest.Config) -> Path | None:
    given = config.getoption("--raw-capture")
    if not given:
        return None
    path = Path(given).resolve()
    reports = Path("reports").resolve()
    if path == reports or reports in path.parents:
        raise pytest.UsageError(f"--raw-capture {given}: raw captures hold card data in the "
                                f"clear; keep them outside {reports}")
    return path


ENVIRONMENT = pytest.StashKey[dict[str, str]]()
"""What the report's environment page shows about the bench (set once it is open)."""


def bench_environment(bench: Bench) -> dict[str, str]:
    """The bench and the terminal as they report themselves: bench name, terminal model,
    firmware, serial number and terminal id (STATUS), the instruments present, the rig and
    Python versions.  Never card data."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        rig = version("posrig")
    except PackageNotFoundError:
        rig = "not installed"
    env = {"bench": bench.config.bench.name, "rig": f"posrig {rig}",
           "python": sys.version.split()[0], "platform": sys.platform}
    try:
        st = bench.terminal.status()
        env.update({"terminal.model": st.model or "(not reported)",
                    "terminal.firmware": st.firmware or "(not reported)",
                    "terminal.serial": st.serial_no or "(not reported)",
                    "terminal.id": st.terminal_id or "(not reported)"})
    except RigError as exc:
        env["terminal"] = f"did not answer STATUS: {exc}"[:200]
    parts = [name for name in ("cards", "power", "switch", "network", "host", "qr")
             if getattr(bench.config, name) is not None]
    env["instruments"] = ", ".join(["terminal", *parts])
    if bench.config.cards is not None:
        env["cards"] = ", ".join(sorted(bench.config.cards.bank))
    return env


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Next to the Allure results: the environment (bench, terminal identity) and the failure
    categories (rigs.failures), so the report shows both."""
    results = getattr(session.config.option, "allure_report_dir", None)
    if not results:
        return
    out = Path(results)
    if not out.is_dir():
        return
    env = session.config.stash.get(ENVIRONMENT, {})
    if env:
        lines = [f"{key}={_properties_value(value)}" for key, value in sorted(env.items())]
        (out / "environment.properties").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out / "categories.json").write_text(json.dumps(allure_categories(), indent=1),
                                         encoding="utf-8")


def _properties_value(value: str) -> str:
    """A value as a Java properties file reads it back (non-ASCII as \\uXXXX, no newline)."""
    return "".join(ch if 32 <= ord(ch) < 127 else f"\\u{ord(ch):04x}"
                   for ch in value.replace("\n", " "))


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


@pytest.hookimpl(trylast=True)
def pytest_bdd_before_scenario(request: pytest.FixtureRequest, feature: Any,
                               scenario: Any) -> None:
    """Labels the report groups by: the area (epic: the features folder), each procedure id
    the scenario proves (story: the Behaviors tab then lists every id's scenarios)."""
    labels = _allure_dynamic()
    if labels is None:
        return
    area = _area(getattr(feature, "rel_filename", "") or "")
    if area:
        labels.epic(area)
    ids = sorted(m.name for m in request.node.iter_markers() if PROCEDURE_ID.match(m.name))
    if ids:
        labels.story(*ids)


@pytest.hookimpl(tryfirst=True)
def pytest_bdd_after_scenario(request: pytest.FixtureRequest, feature: Any, scenario: Any) -> None:
    """Attach the scenario's evidence while its report is still open, and label it with the
    bench, the cards it used and the faults it injected."""
    if "bench" not in request.fixturenames:
        return
    bench: Bench = request.getfixturevalue("bench")
    try:
        evidence = bench.end_scenario()
    except RigError as exc:
        evidence = [Evidence("evidence collection failed", "text", str(exc))]
    for item in evidence:
        _attach(item)
    labels = _allure_dynamic()
    if labels is not None:
        labels.label("bench", bench.config.bench.name)
        place = request.config.stash.get(LABGRID_PLACE, None)
        if place is not None:
            labels.label("place", place)
        cards = cards_used(bench.events.events(lambda e: e.source is Source.CARDS
                                               and e.kind == "event"))
        if cards:
            labels.label("card", *cards)
        kinds = sorted({rec.kind.value for rec in bench.faults.records()
                        if rec.kind is not FaultKind.WATCH_MESSAGE})
        if kinds:
            labels.label("fault", *kinds)


_CARD_EVENT = re.compile(r"^(?:insert|swipe) (\w+)|^contactless field: (.+)$")


def cards_used(events: Iterable[Event]) -> list[str]:
    """The card profiles a scenario presented (inserted, swiped, tapped), from the card bank's
    events, sorted."""
    found: set[str] = set()
    for ev in events:
        m = _CARD_EVENT.match(ev.detail)
        if m is None:
            continue
        if m.group(1):
            found.add(m.group(1))
        elif m.group(2) and m.group(2) != "empty":
            found.update(n.strip() for n in m.group(2).split(",") if n.strip())
    return sorted(found)


def _area(rel_filename: str) -> str:
    """``troubleshooting/network.feature`` → ``troubleshooting``; ``zh-CN/…`` → ``zh-CN``."""
    parts = Path(rel_filename).parts
    return parts[-2] if len(parts) >= 2 else ""


def _allure_dynamic() -> Any:
    try:
        import allure
    except ImportError:  # the report plugin is optional
        return None
    return allure.dynamic


def _attach(item: Evidence) -> None:
    try:
        import allure
    except ImportError:  # the report plugin is optional
        return
    kinds = {"text": allure.attachment_type.TEXT, "csv": allure.attachment_type.CSV,
             "pcap": allure.attachment_type.PCAP, "png": allure.attachment_type.PNG,
             "json": allure.attachment_type.JSON}
    if item.path is not None:
        if item.path.exists():
            allure.attach.file(str(item.path), name=item.name, attachment_type=kinds[item.kind])
    elif item.content is not None:
        allure.attach(item.content, name=item.name, attachment_type=kinds[item.kind])

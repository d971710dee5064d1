"""The pytest plugin, run for real in a generated project (pytester)."""

from __future__ import annotations

import textwrap

import pytest

pytest_plugins = ["pytester"]

FEATURE = """\
Feature: Bench capabilities
  @power
  Scenario: Needs a power supply
    Given a step that needs the bench

  Scenario: Needs only the terminal
    Given a step that needs the bench

  @hw_only
  Scenario: Only on hardware
    Given a step that needs the bench
"""

TEST_FILE = """\
from pytest_bdd import given, scenarios

scenarios("caps.feature")


@given("a step that needs the bench")
def needs_bench(bench):
    raise AssertionError("a scenario that should not run ran")
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest('pytest_plugins = ["rigs.plugin"]\n')
    pytester.makeini("[pytest]\nposrig_features = false\n")  # test modules bind the features
    pytester.makefile(".feature", caps=FEATURE)
    pytester.makepyfile(test_caps=TEST_FILE)
    return pytester


def _bench_file(pytester: pytest.Pytester, body: str) -> str:
    path = pytester.path / "bench.yaml"
    path.write_text(textwrap.dedent(body))
    return str(path)


def test_bad_bench_file_names_every_key_and_fails_each_scenario_once(project: pytest.Pytester) -> None:
    bench = _bench_file(project, """\
        bench: {name: broken, kind: lab}
        terminal: {port: COM3}
        power: {resource: "TCPIP::nowhere", limits: {max_volts: 8.4}}
        """)
    result = project.runpytest("--bench", bench, "-p", "no:allure_pytest_bdd")
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines([
        "*bench.yaml: bench file is not valid:*",
        "*terminal.port: 'COM3' is not a serial port URL*",
        "*power.resource: 'TCPIP::nowhere' is not a VISA resource string*",
        "*power.limits.max_amps: required key is missing*",
    ])
    assert "Traceback" not in result.stdout.str() and "pydantic" not in result.stdout.str()


def test_scenario_needing_a_missing_instrument_is_skipped_with_the_reason(
        project: pytest.Pytester) -> None:
    bench = _bench_file(project, """\
        bench: {name: no-psu, kind: virtual}
        terminal: {port: "loop://"}
        """)
    result = project.runpytest("--bench", bench, "-p", "no:allure_pytest_bdd", "-rs",
                               "-k", "power or hardware")
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines([
        "*@power needs a 'power' section in the bench file*",
        "*@hw_only scenarios need a lab bench*",
    ])


def test_tags_are_registered_markers(project: pytest.Pytester) -> None:
    result = project.runpytest("--markers")
    for tag in ("fault", "network", "power", "card", "printer", "slow", "hw_only"):
        result.stdout.fnmatch_lines([f"@pytest.mark.{tag}:*"])


STEPS_FEATURE = """\
Feature: Step needs
  Scenario: A step needs the ledger the bench lacks
    Given a step that needs the ledger

  Scenario: A step meets a missing part mid-way
    Given a step that asks for the card bank anyway

  Scenario: Nothing missing
    Given a step that needs nothing
"""

STEPS_TEST = """\
from pytest_bdd import given, scenarios

from rigs.capabilities import Capability, needs

scenarios("needs.feature")


@needs(Capability.LEDGER)
@given("a step that needs the ledger")
def needs_ledger(bench):
    raise AssertionError("a step whose part is missing ran")


@given("a step that asks for the card bank anyway")
def asks_cards(bench_config, tmp_path):
    from rigs.bench import Bench

    Bench(bench_config, workdir=tmp_path).cards.insert("good")  # built, not opened


@given("a step that needs nothing")
def needs_nothing(bench):
    assert bench.terminal is not None
"""


def test_steps_needing_a_missing_part_skip_at_setup_or_mid_way(pytester: pytest.Pytester
                                                               ) -> None:
    pytester.makeconftest('pytest_plugins = ["rigs.plugin"]\n')
    pytester.makeini("[pytest]\nposrig_features = false\n")  # test modules bind the features
    pytester.makefile(".feature", needs=STEPS_FEATURE)
    pytester.makepyfile(test_needs=STEPS_TEST)
    bench = _bench_file(pytester, """\
        bench: {name: terminal-only, kind: lab}
        terminal: {port: "loop://"}
        """)
    result = pytester.runpytest("--bench", bench, "-p", "no:allure_pytest_bdd", "-rs",
                                "-k", "ledger or mid")
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines([
        "*step 'Given a step that needs the ledger' needs host.ledger in the bench file*",
        "*the bench lacks a part this scenario needs*'cards' section*",
    ])


def test_procedure_ids_are_registered_markers(project: pytest.Pytester) -> None:
    result = project.runpytest("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.OP-05: procedure OP-05, purchase by chip with PIN*",
                                 "@pytest.mark.SEC-04:*"])


PROGRESS_FEATURE = """\
Feature: Progress shown
  Scenario: One that passes
    Given nothing at all

  Scenario: One that fails
    Given nothing at all
    Then it fails
"""

PROGRESS_TEST = """\
from pytest_bdd import given, scenarios, then

scenarios("progress.feature")


@given("nothing at all")
def nothing():
    pass


@then("it fails")
def fails():
    raise AssertionError("the terminal said no")
"""


def test_progress_prints_a_plain_line_per_scenario_in_a_log_and_no_dots(
        pytester: pytest.Pytester) -> None:
    pytester.makeconftest('pytest_plugins = ["rigs.plugin"]\n')
    pytester.makeini("[pytest]\nposrig_features = false\n")  # test modules bind the features
    pytester.makefile(".feature", progress=PROGRESS_FEATURE)
    pytester.makepyfile(test_progress=PROGRESS_TEST)
    # a bench id of its own: the plugin says `sim down` for its virtual bench at the end, and
    # the default bench may be up beside this test (pytest-xdist)
    result = pytester.runpytest("--progress", "--bench-id", "plg", "-p", "no:allure_pytest_bdd")
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    assert "\x1b[" not in out  # not a terminal: no control codes
    result.stdout.fnmatch_lines([
        "▶ Progress shown: One that passes  [bench starting]",
        "PASSED *s  Progress shown: One that passes",
        "▶ Progress shown: One that fails  [bench starting]",
        "FAILED *s  Progress shown: One that fails",
        "*AssertionError: the terminal said no*",
    ])
    assert "test_progress.py .F" not in out and "test_progress.py F" not in out


def test_raw_captures_are_refused_under_reports(pytester: pytest.Pytester) -> None:
    pytester.makeconftest('pytest_plugins = ["rigs.plugin"]\n')
    pytester.makeini("[pytest]\nposrig_features = false\n")  # test modules bind the features
    pytester.makefile(".feature", progress=PROGRESS_FEATURE)
    pytester.makepyfile(test_progress=PROGRESS_TEST)
    result = pytester.runpytest("--raw-capture", "reports/raw", "-p", "no:allure_pytest_bdd")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--raw-capture reports/raw: raw captures hold card data in "
                                 "the clear; keep them outside*"])


def test_feature_files_are_collected_without_any_python(pytester: pytest.Pytester) -> None:
    """A lab's repository: features only (the plugin comes from the installed rig's entry
    point, or here from a conftest line); a broken feature file is a clear collection error."""
    pytester.makeconftest('pytest_plugins = ["rigs.plugin"]\n')
    (pytester.path / "features").mkdir()
    (pytester.path / "features" / "shop.feature").write_text(
        "Feature: Shop\n  Scenario: Pay by chip\n    Given the terminal is powered on and "
        "idle\n\n  Scenario: Pay by tap\n    Given the terminal is powered on and idle\n",
        encoding="utf-8")
    result = pytester.runpytest("--collect-only", "-q", "-p", "no:allure_pytest_bdd")
    result.stdout.fnmatch_lines(["features/shop.feature::test_pay_by_chip",
                                 "features/shop.feature::test_pay_by_tap", "2 tests collected*"])
    (pytester.path / "features" / "broken.feature").write_text(
        "not gherkin at all\nFeature: x\n", encoding="utf-8")
    result = pytester.runpytest("--collect-only", "-q", "-p", "no:allure_pytest_bdd")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*features/broken.feature*"])

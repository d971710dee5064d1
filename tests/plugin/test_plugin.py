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

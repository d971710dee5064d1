"""benchmarks/run_all.py without root and without the bench: the JSON objects (shape, ratio,
p95, targets), the table, skipping with a reason, errors recorded instead of raised, the JUnit
XML read, the scenario and suite figures made from it, the inherent waits from the terminal
profile, the bounded child process, and the pytest plugin that repeats scenarios."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from benchmarks import run_all
from benchmarks.pytest_bench import vmhwm_kib
from benchmarks.run_all import (
    NEEDS_ROOT,
    SCENARIOS,
    Case,
    Measurement,
    Samples,
    Settings,
    Spec,
    SuiteRun,
    Wait,
    entry,
    inherent_wait,
    iso_specs,
    load_profile_file,
    percentile,
    read_junit,
    render_table,
    run_bounded,
    run_index,
    run_measurement,
    scenario_samples,
    scenario_specs,
    suite_run_from,
    suite_samples,
    write_json,
)

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[2]
REQUIRED = {"name", "median", "p95", "unit", "baseline", "baseline_median", "ratio", "n"}
LATENCY = Spec("x_rtt", "µs", "what x is", "how its baseline is measured", "raw x",
               target_ratio=1.3)
THROUGHPUT = Spec("x_rate", "scenarios/min", "rate", "one bench", "one bench", better="higher",
                  target_ratio=1.7)


def _settings(tmp_path: Path) -> Settings:
    return Settings.make(quick=True, workdir=tmp_path)


# ------------------------------------------------------------------------- JSON objects

def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(20, 0, -1)]  # 20 … 1, unsorted on purpose
    assert percentile(values, 0.95) == 19.0
    assert percentile(values, 0.5) == 10.0
    assert percentile([7.0], 0.95) == 7.0
    with pytest.raises(ValueError):
        percentile([], 0.95)


def test_entry_has_the_shape_and_the_ratio_is_median_over_baseline_median() -> None:
    got = entry(LATENCY, Samples([1.0, 2.0, 3.0, 4.0, 100.0], [1.0, 1.5, 2.0]))
    assert REQUIRED <= set(got)
    assert got["name"] == "x_rtt" and got["unit"] == "µs"
    assert got["median"] == 3.0 and got["p95"] == 100.0
    assert got["baseline"] == "how its baseline is measured"
    assert got["baseline_median"] == 1.5
    assert got["ratio"] == 2.0
    assert got["n"] == 5 and got["baseline_n"] == 3
    assert got["better"] == "lower"
    assert got["target_ratio"] == 1.3 and got["meets_target"] is False
    assert "skipped" not in got and "error" not in got
    json.dumps(got)  # plain JSON types only


def test_entry_rounds_and_meets_a_lower_target() -> None:
    got = entry(LATENCY, Samples([1.23456], [1.0]))
    assert got["median"] == 1.235 and got["ratio"] == 1.235
    assert got["meets_target"] is True


@pytest.mark.parametrize(("median", "met"), [(18.0, True), (17.0, True), (15.0, False)])
def test_a_throughput_says_higher_is_better_and_its_target_is_a_floor(median: float,
                                                                     met: bool) -> None:
    got = entry(THROUGHPUT, Samples([median], [10.0]))
    assert got["better"] == "higher"
    assert got["meets_target"] is met


def test_skipped_entry_keeps_the_shape_and_says_why() -> None:
    got = entry(LATENCY, skipped=NEEDS_ROOT)
    assert REQUIRED <= set(got)
    assert got["skipped"] == "needs root"
    assert (got["median"], got["p95"], got["baseline_median"], got["ratio"], got["n"]) == (
        None, None, None, None, 0)
    assert got["meets_target"] is None


def test_no_ratio_without_a_baseline_or_with_a_zero_one() -> None:
    assert entry(LATENCY, Samples([2.0], []))["ratio"] is None
    assert entry(LATENCY, Samples([2.0], [0.0]))["ratio"] is None


def test_an_error_of_the_samples_is_in_the_entry() -> None:
    got = entry(LATENCY, Samples([], [], notes=["run 1: failed"], error="pytest -n 2 exited 1"))
    assert got["error"] == "pytest -n 2 exited 1" and got["notes"] == ["run 1: failed"]
    assert got["median"] is None


def test_json_written_is_the_list_of_objects(tmp_path: Path) -> None:
    entries = [entry(LATENCY, Samples([1.0], [1.0])), entry(THROUGHPUT, skipped=NEEDS_ROOT)]
    out = tmp_path / "reports" / "benchmarks.json"
    write_json(entries, out)
    assert json.loads(out.read_text(encoding="utf-8")) == entries


# ------------------------------------------------------------------------- running measurements

def test_a_root_measurement_is_skipped_with_the_reason_and_not_called(tmp_path: Path) -> None:
    def must_not_run(settings: Settings) -> dict[str, Samples]:
        raise AssertionError("a root measurement ran without root")

    m = Measurement((LATENCY, THROUGHPUT), must_not_run, needs_root=True)
    got = run_measurement(m, _settings(tmp_path), is_root=lambda: False)
    assert [(e["name"], e["skipped"]) for e in got] == [("x_rtt", "needs root"),
                                                        ("x_rate", "needs root")]


def test_a_failing_measurement_is_recorded_not_raised(tmp_path: Path) -> None:
    def boom(settings: Settings) -> dict[str, Samples]:
        raise RuntimeError("pcscd did not start")

    got = run_measurement(Measurement((LATENCY, THROUGHPUT), boom, needs_root=True),
                          _settings(tmp_path), is_root=lambda: True)
    assert [e["error"] for e in got] == ["RuntimeError: pcscd did not start"] * 2
    assert all("skipped" not in e for e in got)


def test_a_figure_left_out_by_its_measurement_is_an_error(tmp_path: Path) -> None:
    def half(settings: Settings) -> dict[str, Samples]:
        return {"x_rtt": Samples([2.0], [1.0])}

    got = run_measurement(Measurement((LATENCY, THROUGHPUT), half), _settings(tmp_path))
    assert got[0]["ratio"] == 2.0 and "error" not in got[0]
    assert got[1]["error"] == "half returned no samples for x_rate"


def test_every_figure_of_the_brief_is_registered_once(tmp_path: Path) -> None:
    names = [s.name for m in run_all.measurements(_settings(tmp_path)) for s in m.specs]
    assert names == ["ecr_rtt", "scpi_rtt", "apdu_rtt", "iso_rtt", "iso_rtt_delay_rule",
                     "scenario_purchase", "scenario_fault", "suite_1_bench", "suite_2_benches",
                     "suite_peak_rss"]
    roots = {s.name for m in run_all.measurements(_settings(tmp_path)) if m.needs_root
             for s in m.specs}
    assert roots == set(names) - {"ecr_rtt", "scpi_rtt"}


def test_quick_settings_are_smaller_than_the_full_ones(tmp_path: Path) -> None:
    quick, full = (Settings.make(quick=q, workdir=tmp_path) for q in (True, False))
    for name in ("ecr_n", "scpi_n", "apdu_n", "iso_n", "scenario_runs", "suite_runs"):
        assert getattr(quick, name) <= getattr(full, name), name
    assert len(quick.suite) < len(full.suite)


# ------------------------------------------------------------------------- the table

def _text(entries: list[dict[str, object]]) -> str:
    console = Console(record=True, width=220)
    console.print(render_table(entries, title="t"))
    return console.export_text()


def test_table_shows_figures_targets_skips_and_the_first_line_of_an_error() -> None:
    entries = [
        entry(LATENCY, Samples([2.0], [1.0])),
        entry(THROUGHPUT, Samples([18.0], [10.0])),
        entry(Spec("apdu_rtt", "µs", "w", "b", "direct pyscard transmit"), skipped=NEEDS_ROOT),
        entry(Spec("suite_2_benches", "scenarios/min", "w", "b", "l", better="higher"),
              error="ChildFailed: pytest -n 2 exited 1 (log x):\nE  a second line"),
    ]
    text = _text(entries)
    assert "x_rtt" in text and "2.00×" in text and "≤ 1.30× ✗" in text
    assert "≥ 1.70× ✓" in text and "scenarios/min ↑" in text
    assert "skipped: needs root" in text
    assert "error: ChildFailed: pytest -n 2 exited 1 (log x):" in text
    assert "a second line" not in text
    assert "raw x" in text  # the baseline's label


def test_table_cuts_a_long_error() -> None:
    text = _text([entry(LATENCY, error="x" * 500)])
    assert "x" * run_all.ERROR_CELL + "…" in text
    assert "x" * (run_all.ERROR_CELL + 1) not in text


# ------------------------------------------------------------------------- JUnit XML

JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">
<testcase classname="features.operating.purchase.feature" name="test_buy[run1of3]" time="9.5"/>
<testcase classname="features.operating.purchase.feature" name="test_buy[run2of3]" time="2.25"/>
<testcase classname="f" name="test_buy[run3of3]" time="4.0"><failure message="AssertionError: x"/>
</testcase>
<testcase classname="f" name="test_lost[run1of2]" time="0.000"><error
 message="failed on setup with &quot;Failed: the virtual bench could not be brought up&quot;"/>
</testcase>
<testcase classname="f" name="test_lost[run2of2]" time="7.0"><error
 message="failed on teardown with &quot;BenchNotNominal: paper&quot;"/></testcase>
<testcase classname="f" name="test_card[run1of2-expired-54]" time="1.0"><skipped
 message="the bench lacks the card bank"/></testcase>
</testsuite></testsuites>"""


def test_junit_outcomes_and_call_durations() -> None:
    cases = read_junit(JUNIT)
    assert [(c.name, c.time_s, c.outcome) for c in cases] == [
        ("test_buy[run1of3]", 9.5, "passed"), ("test_buy[run2of3]", 2.25, "passed"),
        ("test_buy[run3of3]", 4.0, "failed"), ("test_lost[run1of2]", 0.0, "error"),
        ("test_lost[run2of2]", 7.0, "teardown_error"),
        ("test_card[run1of2-expired-54]", 1.0, "skipped")]
    assert [c.ran for c in cases] == [True, True, True, False, True, False]
    assert "could not be brought up" in cases[3].message


@pytest.mark.parametrize(("name", "index"), [
    ("test_buy[run2of3]", 2), ("test_card[run1of2-expired-54]", 1),
    ("test_card[expired-54-run3of4]", 3), ("test_buy", None), ("test_card[expired-54]", None)])
def test_run_index(name: str, index: int | None) -> None:
    assert run_index(name) == index


# ------------------------------------------------------------------------- scenario figures

def test_inherent_waits_are_read_from_the_terminal_profile() -> None:
    profile = load_profile_file()
    purchase, fault = SCENARIOS
    copy, response = profile.timeouts.print_copy, profile.timeouts.response
    assert inherent_wait(purchase.waits, profile)[0] == pytest.approx(2 * copy)
    assert inherent_wait(fault.waits, profile)[0] == pytest.approx(response + 2 * copy)


def test_inherent_wait_follows_the_profile_and_says_how_it_is_made() -> None:
    profile = load_profile_file()
    changed = profile.model_copy(update={"timeouts": profile.timeouts.model_copy(
        update={"print_copy": 0.5, "response": 4.0})})
    total, how = inherent_wait((Wait("timeouts.response", 1, "a"),
                                Wait("timeouts.print_copy", 2, "b")), changed)
    assert total == pytest.approx(5.0)
    assert how == "1 × timeouts.response (4 s) + 2 × timeouts.print_copy (0.5 s) = 5 s"


def test_scenario_specs_name_the_waits_and_the_purchase_target() -> None:
    purchase, fault = scenario_specs()
    assert purchase.name == "scenario_purchase" and purchase.target_ratio == 1.2
    assert "2 × timeouts.print_copy (0.3 s) = 0.6 s" in purchase.baseline
    assert "fixtures/terminal/profile.yaml" in purchase.baseline
    assert fault.name == "scenario_fault" and "timeouts.response (5 s)" in fault.baseline
    assert purchase.unit == fault.unit == "s"


def test_scenario_samples_leave_out_the_first_run_and_failed_ones() -> None:
    purchase, fault = SCENARIOS
    p, f = purchase.test_name, fault.test_name
    cases = [Case(f"{p}[run1of3]", "c", 9.0, "passed"), Case(f"{p}[run2of3]", "c", 1.0, "passed"),
             Case(f"{p}[run3of3]", "c", 3.0, "failed", "AssertionError: not approved"),
             Case(f"{f}[run1of3]", "c", 6.0, "passed"), Case(f"{f}[run2of3]", "c", 0.0, "error",
                                                            "failed on setup with bench broken")]
    profile = load_profile_file()
    got = scenario_samples(cases, SCENARIOS, profile)
    buy = got["scenario_purchase"]
    assert buy.figure == [1.0] and buy.error is None
    assert buy.baseline == [pytest.approx(2 * profile.timeouts.print_copy)]
    assert any("not approved" in n for n in buy.notes)
    lost = got["scenario_fault"]
    assert lost.figure == [] and lost.error is not None and "bench broken" in lost.error
    assert entry(scenario_specs(profile)[0], buy)["ratio"] == pytest.approx(1.0 / 0.6, abs=1e-3)


def test_the_scenarios_and_subsets_named_exist_in_the_feature_suite() -> None:
    """Collection only (no bench), one pytest for all of them: each scenario node is one
    scenario; every subset target collects something; the quick subset stays small."""
    targets = sorted({sc.node for sc in SCENARIOS} | set(run_all.QUICK_SUITE)
                     | set(run_all.FULL_SUITE))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", *targets, "--collect-only", "-q", "-p",
         "no:allure_pytest_bdd", "-p", "no:allure_pytest", "-p", "no:cacheprovider"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    nodes = [line for line in done.stdout.splitlines() if "::" in line]

    def under(target: str) -> list[str]:
        return [n for n in nodes if n == target or n.startswith(target + "::")
                or n.startswith(target + "[")]

    for sc in SCENARIOS:
        assert under(sc.node) == [sc.node]
    for target in run_all.QUICK_SUITE + run_all.FULL_SUITE:
        assert under(target), target
    assert sum(len(under(t)) for t in run_all.QUICK_SUITE) <= 6


# ------------------------------------------------------------------------- suite figures

def _run(ran: int, wall: float, call: float, kib: int | None = 102_400,
         error: str | None = None) -> SuiteRun:
    return SuiteRun(ran, wall, call, 0, 0, 0, kib, error)


def test_suite_figures_from_runs_on_one_and_two_benches() -> None:
    one = [_run(30, 120.0, 60.0), _run(30, 180.0, 60.0)]
    two = [_run(30, 60.0, 50.0, kib=None), _run(0, 1.0, 0.0, None, error="pytest -n 2 exited 1")]
    got = suite_samples(one, two, 30, 81_920, ["a.feature", "b.feature"])
    s1, s2, rss = got["suite_1_bench"], got["suite_2_benches"], got["suite_peak_rss"]
    assert s1.figure == [15.0, 10.0] and s1.baseline == [30.0, 30.0]
    assert s2.figure == [30.0] and s2.baseline == [15.0, 10.0] and s2.error is None
    assert any("pytest -n 2 exited 1" in n for n in s2.notes)
    assert rss.figure == [100.0, 100.0] and rss.baseline == [80.0]
    e2 = entry(run_all.SUITE_2, s2)
    assert e2["ratio"] == 2.4 and e2["meets_target"] is True and e2["better"] == "higher"
    assert any("a.feature, b.feature (30 scenarios)" in n for n in s1.notes)


def test_two_benches_failing_is_recorded_and_one_bench_still_counts() -> None:
    got = suite_samples([_run(4, 60.0, 30.0)],
                        [_run(0, 5.0, 0.0, None, error="no scenario ran: --bench-id unknown")],
                        4, None, ["a.feature"])
    assert got["suite_1_bench"].figure == [4.0]
    e2 = entry(run_all.SUITE_2, got["suite_2_benches"])
    assert e2["error"] == "no scenario ran: --bench-id unknown" and e2["median"] is None
    assert got["suite_peak_rss"].baseline == []


def test_a_suite_run_where_nothing_ran_is_an_error_naming_the_setup_failure() -> None:
    cases = [Case("test_a", "c", 0.0, "error", "failed on setup with bench could not come up"),
             Case("test_b", "c", 0.0, "error", "failed on setup with bench could not come up")]
    run = suite_run_from(cases, 12.0, None)
    assert run.error is not None and "bench could not come up" in run.error
    assert "2 errored at setup" in run.error
    ok = suite_run_from([Case("test_a", "c", 2.0, "passed"), Case("test_b", "c", 1.0, "failed"),
                         Case("test_c", "c", 0.0, "skipped")], 30.0, 1000)
    assert (ok.ran, ok.failed, ok.skipped, ok.call_s, ok.per_minute) == (2, 1, 1, 3.0, 4.0)
    assert ok.ceiling_per_minute == 40.0


def test_iso_delay_is_in_the_baseline_description() -> None:
    no_rule, delayed = iso_specs(2.5)
    assert no_rule.name == "iso_rtt" and delayed.name == "iso_rtt_delay_rule"
    assert "2.5 ms per frame each way" in delayed.baseline
    assert "at least 5 ms" in delayed.baseline
    assert "nothing subtracted" in delayed.what


# ------------------------------------------------------------------------- child processes

def test_a_child_past_its_bound_is_stopped_and_said_so(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "sleeper.log"
    t0 = time.monotonic()
    fin = run_bounded([sys.executable, "-c", "import time; print('up', flush=True); "
                                             "time.sleep(60)"], 0.5, log, grace_s=5.0)
    assert fin.returncode is None
    assert time.monotonic() - t0 < 15
    assert "still running after its bound of 0 s" in fin.tail() or "bound" in fin.tail()
    assert "up" in log.read_text(encoding="utf-8")


def test_a_child_that_ends_gives_its_code_log_and_peak(tmp_path: Path) -> None:
    fin = run_bounded([sys.executable, "-c", "import sys, time; x = bytearray(64 << 20); "
                                             "time.sleep(0.6); print('bye'); sys.exit(3)"],
                      30, tmp_path / "c.log")
    assert fin.returncode == 3
    assert fin.tail().endswith("bye")
    assert fin.peak_kib is not None and fin.peak_kib > 60_000


def test_a_failing_worker_is_a_child_failure_with_its_log(tmp_path: Path) -> None:
    with pytest.raises(run_all.ChildFailed) as failed:
        run_all.run_worker("nope", [], _settings(tmp_path), bound_s=60)
    assert "the nope measurement: exited 1" in str(failed.value)
    assert "unknown measurement 'nope'; expected apdu or iso" in str(failed.value)
    assert (tmp_path / "logs" / "nope.log").exists()


def test_vmhwm_is_read_from_proc_status_text() -> None:
    assert vmhwm_kib("Name:\tpython\nVmPeak:\t  5 kB\nVmHWM:\t   81476 kB\n") == 81476
    assert vmhwm_kib("Name:\tpython\n") is None


# ------------------------------------------------------------------------- the pytest plugin

def test_the_plugin_repeats_each_test_and_writes_its_peak_rss(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="def test_a():\n    pass\n\ndef test_b():\n    pass\n")
    rss = pytester.path / "rss.jsonl"
    result = pytester.runpytest("-p", "benchmarks.pytest_bench", "--bench-repeat", "3",
                                "--bench-rss-file", str(rss), "-v")
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines(["*test_a?run1of3? PASSED*", "*test_a?run3of3? PASSED*"])
    (line,) = rss.read_text(encoding="utf-8").splitlines()
    item = json.loads(line)
    assert item["role"] == "main" and item["vmhwm_kib"] > 0


def test_the_plugin_changes_nothing_without_its_options(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="def test_a():\n    pass\n")
    result = pytester.runpytest("-p", "benchmarks.pytest_bench", "-v")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*test_x.py::test_a PASSED*"])


def test_the_plugin_refuses_a_repeat_below_one(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="def test_a():\n    pass\n")
    result = pytester.runpytest("-p", "benchmarks.pytest_bench", "--bench-repeat", "0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--bench-repeat: expected a count >= 1, got 0*"])

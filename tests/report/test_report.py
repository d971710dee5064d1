"""The run's report (rigs.report, rigs.console): results read back, the coverage result, the
history kept between runs, the summary readable in a CI log; the HTML with history for real
(Allure commandline from node_modules, Java)."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest

from rigs import report
from rigs.console import Line, RunTrend, make_console, render_summary
from rigs.failures import Category


def _result(results: Path, name: str, status: str, tags: list[str], *, start: int,
            message: str = "", feature: str = "Purchase") -> None:
    labels = [{"name": "feature", "value": feature}] + [{"name": "tag", "value": t}
                                                        for t in tags]
    data = {"uuid": name, "historyId": name, "testCaseId": name, "name": name,
            "fullName": f"{feature}.feature:{name}", "status": status,
            "start": start, "stop": start + 1500, "labels": labels}
    if message:
        data["statusDetails"] = {"message": message, "trace": "..."}
    (results / f"{name}-result.json").write_text(json.dumps(data), encoding="utf-8")


@pytest.fixture
def results(tmp_path: Path) -> Path:
    out = tmp_path / "allure-results"
    out.mkdir()
    _result(out, "chip", "passed", ["operating", "OP-05"], start=2000)
    _result(out, "paper", "failed", ["TS-10", "printer"], start=1000,
            message="AssertionError: receipt not held\nmore lines", feature="Printer")
    _result(out, "psu", "broken", ["TS-15"], start=3000,
            message="protocols.errors.NoResponse: ScpiPowerSupply(psu): no answer")
    return out


def test_results_are_read_back_in_order_with_tags_and_categories(results: Path) -> None:
    found = report.read_results(results)
    assert [r.name for r in found] == ["paper", "chip", "psu"]
    assert found[0].message == "AssertionError: receipt not held"
    assert found[0].category is Category.PRODUCT_DEFECT
    assert found[2].category is Category.BENCH_PROBLEM and found[1].category is None
    assert found[1].tags == frozenset({"operating", "OP-05"}) and found[1].duration_s == 1.5


def test_the_coverage_result_is_not_read_back_as_a_scenario(results: Path) -> None:
    rows = report.coverage_rows(report.read_results(results))
    path = report.write_coverage_result(results, rows)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["status"] == "unknown" and data["name"].startswith("Procedure coverage")
    page = (results / data["attachments"][0]["source"]).read_text(encoding="utf-8")
    assert "OP-05" in page and "SEC-01" in page
    assert "1 of 43 procedures proven" in data["statusDetails"]["message"]
    assert [r.name for r in report.read_results(results)] == ["paper", "chip", "psu"]


def test_each_run_is_recorded_and_the_trend_keeps_the_last_ones(results: Path,
                                                                 tmp_path: Path) -> None:
    found = report.read_results(results)
    rows = report.coverage_rows(found)
    history = tmp_path / "history"
    for _ in range(7):
        trend = report.record_run(history, found, rows, 1)
    assert len(trend) == report.TREND_RUNS
    assert trend[-1].counts == {"failed": 1, "passed": 1, "broken": 1}
    lines = (history / "runs.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 7 and json.loads(lines[-1])["coverage"]["proven"] == 1
    (history / "runs.jsonl").write_text("not json\n" + "\n".join(lines) + "\n")
    assert len(report.record_run(history, found, rows, 0)) == report.TREND_RUNS


def test_the_summary_in_a_ci_log_has_no_control_codes(results: Path) -> None:
    found = report.read_results(results)
    rows = report.coverage_rows(found)
    out = io.StringIO()
    console = make_console(out, width=120)
    assert not console.is_terminal
    render_summary(console, [Line(r.feature, r.name, r.status, r.message, r.duration_s,
                                  r.category) for r in found], rows,
                   report="/x/index.html", junit="/x/junit.xml", history="/x/history",
                   trend=[RunTrend("2026-12-01 10:00", {"passed": 3})])
    text = out.getvalue()
    assert "\x1b" not in text
    for expected in ("Per feature", "Procedure coverage", "OP-05", "proven", "no scenario",
                     "Slowest scenarios:", Category.PRODUCT_DEFECT.value,
                     Category.BENCH_PROBLEM.value, "receipt not held",
                     "Bench problems: 1 scenario(s)", "Last runs: 2026-12-01 10:00 3/3 passed",
                     "3 scenarios: 1 broken, 1 failed, 1 passed", "HTML report: /x/index.html",
                     "JUnit XML: /x/junit.xml"):
        assert expected in text, expected


ALLURE = report.REPO / "node_modules" / ".bin" / "allure"


@pytest.mark.skipif(not ALLURE.exists() or shutil.which("java") is None,
                    reason="the Allure commandline (npm install) and Java 17 are needed")
def test_the_html_report_keeps_history_between_runs(results: Path, tmp_path: Path) -> None:
    history = tmp_path / "history"
    html = report.generate_html(results, tmp_path / "html", history_out=history / "allure")
    assert html.name == "index.html" and html.stat().st_size > 10_000
    assert (history / "allure" / "history.json").exists()
    report.restore_history(history, results)
    kept = json.loads((results / "history" / "history.json").read_text(encoding="utf-8"))
    assert len(kept) == 3  # each scenario's earlier results
    report.generate_html(results, tmp_path / "html", history_out=history / "allure")
    again = json.loads((history / "allure" / "history-trend.json").read_text(encoding="utf-8"))
    assert len(again) == 2  # two runs in the trend


def test_plots_drawn_after_the_run_replace_their_data_in_each_result(tmp_path: Path) -> None:
    from rigs.events import EventStream, Source
    from rigs.plotdata import PLOT_DATA_NAME, PLOT_NAME, plot_data

    stream = EventStream()
    for i in range(5):
        stream.publish(Source.POWER, "sample", "supply", "7.40 V 0.250 A", t=1000.0 + i / 10,
                       data={"volts": 7.4, "amps": 0.25})
    stream.publish(Source.FAULT, "fired", "supply_sag", "#1 supply_sag", t=1000.2,
                   data={"fault_id": 1})
    data = plot_data(stream.events(), title="supply during x", thresholds={"nominal": 7.4})
    assert data is not None and plot_data([], title="none") is None
    results = tmp_path / "allure-results"
    results.mkdir()
    (results / "d-attachment.json").write_text(data, encoding="utf-8")
    (results / "bad-attachment.json").write_text("{not json", encoding="utf-8")
    for name, source in (("one", "d-attachment.json"), ("two", "bad-attachment.json")):
        (results / f"{name}-result.json").write_text(json.dumps({
            "uuid": name, "name": name, "status": "passed", "labels": [],
            "attachments": [{"name": PLOT_DATA_NAME, "source": source,
                             "type": "application/json"}]}), encoding="utf-8")
    assert report.draw_deferred_plots(results, workers=1) == 1
    one = json.loads((results / "one-result.json").read_text(encoding="utf-8"))
    (att,) = one["attachments"]
    assert att["name"] == PLOT_NAME and att["type"] == "image/png"
    assert (results / att["source"]).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    two = json.loads((results / "two-result.json").read_text(encoding="utf-8"))
    assert two["attachments"][0]["name"] == "supply plot not drawn"
    assert "not a supply plot document" in (results / two["attachments"][0]["source"]).read_text()
    assert not list(results.glob("*-attachment.json")), "plot data left behind"
    assert report.draw_deferred_plots(results) == 0  # nothing left to draw

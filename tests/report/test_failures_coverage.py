"""Failure categories (rigs.failures) and the procedure coverage matrix (rigs.coverage): pure."""

from __future__ import annotations

import re

import pytest

from rigs.coverage import (
    PROCEDURES,
    Scenario,
    Verdict,
    matrix,
    procedure_ids,
    render_html,
    render_text,
    to_json,
)
from rigs.failures import Category, allure_categories, classify

IDS = {"OP-01": "power-on and self-test", "OP-05": "purchase by chip with PIN",
       "TS-10": "printer out of paper", "SEC-01": "no stored card data"}


@pytest.mark.parametrize(("status", "line", "expected"), [
    ("failed", "AssertionError: purchase not approved: DECLINED", Category.PRODUCT_DEFECT),
    ("broken", "protocols.errors.NoResponse: SerialTerminalLink(terminal): no answer to PU "
               "within 5.0 s", Category.PRODUCT_DEFECT),
    ("broken", "protocols.errors.DecodeError: SerialTerminalLink(terminal): bad frame",
     Category.PRODUCT_DEFECT),
    ("broken", "protocols.errors.NoResponse: ScpiPowerSupply(psu1): no answer to MEAS:VOLT?",
     Category.BENCH_PROBLEM),
    ("broken", "rigs.errors.InstrumentError: ScpiSwitchUnit(relay): -222 data out of range",
     Category.BENCH_PROBLEM),
    ("broken", "rigs.errors.BenchNotNominal: the bench could not be returned to nominal",
     Category.BENCH_PROBLEM),
    ("failed", "Failed: the bench could not be returned to nominal, so no later scenario can "
               "be trusted: x", Category.BENCH_PROBLEM),
    ("failed", "Failed: the virtual bench could not be brought up: pcscd", Category.BENCH_PROBLEM),
    ("broken", "protocols.errors.TransportError: PcscCardBank(cards): relay thread died",
     Category.BENCH_PROBLEM),
    ("broken", "rigs.cardfaults.RuleFailed: card fault rule #1 raised KeyError",
     Category.RIG_BUG),
    ("broken", "TypeError: 'NoneType' object is not subscriptable", Category.RIG_BUG),
])
def test_each_failure_gets_its_category(status: str, line: str, expected: Category) -> None:
    assert classify(status, line) is expected


def test_passed_and_skipped_have_no_category() -> None:
    assert classify("passed", "") is None and classify("skipped", "AssertionError: x") is None


def test_the_report_categories_are_the_same_table() -> None:
    """Allure matches messageRegex against the whole message (Java matches()): emulate it with
    fullmatch and check it agrees with classify() on every sample."""
    cats = allure_categories()
    assert [c["name"] for c in cats] == [r.value for r in (
        Category.PRODUCT_DEFECT, Category.PRODUCT_DEFECT, Category.BENCH_PROBLEM,
        Category.BENCH_PROBLEM, Category.RIG_BUG)]
    samples = [("failed", "AssertionError: x\nmore"), ("broken", "rigs.errors.InstrumentError: "
               "y"), ("broken", "KeyError: 'z'"), ("broken", "protocols.errors.NoResponse: "
               "SerialTerminalLink(t): late")]
    for status, msg in samples:
        first = next(c["name"] for c in cats if status in c["matchedStatuses"]  # type: ignore[operator]
                     and re.fullmatch(str(c["messageRegex"]), msg))
        assert first == classify(status, msg.splitlines()[0])


def test_the_catalogue_lists_every_procedure() -> None:
    ids = procedure_ids(PROCEDURES)
    assert len(ids) == 43 and ids["OP-05"].startswith("purchase by chip")
    assert list(ids)[:2] == ["OP-01", "OP-02"] and "SEC-04" in ids


def test_matrix_verdicts() -> None:
    rows = matrix(IDS, [
        Scenario("chip", "Purchase", "passed", frozenset({"OP-05", "operating"})),
        Scenario("chip again", "Purchase", "failed", frozenset({"OP-05"})),
        Scenario("boot", "Power", "passed", frozenset({"OP-01"})),
        Scenario("paper", "Printer", "skipped", frozenset({"TS-10"})),
        Scenario("stray", "X", "passed", frozenset({"TS-99"})),
    ])
    got = {r.pid: r.verdict for r in rows}
    assert got == {"OP-01": Verdict.PROVEN, "OP-05": Verdict.FAILING, "TS-10": Verdict.NOT_RUN,
                   "SEC-01": Verdict.NO_SCENARIO, "TS-99": Verdict.PROVEN}
    assert rows[-1].title == "(not in the procedure catalogue)"
    text = render_text(rows)
    assert "\x1b" not in text
    assert "2 of 5 procedures proven, 1 failing, 1 not run, 1 without a scenario" in text
    assert text.splitlines()[-1] == "without a passing scenario: OP-05, TS-10, SEC-01"
    page = render_html(rows)
    assert "<script" not in page and "http" not in page
    assert page.count("<tr>") == 6 and "failed: Purchase — chip again" in page
    assert to_json(rows)[1] == {"id": "OP-05", "title": IDS["OP-05"], "verdict": "failing",
                                "scenarios": [{"feature": "Purchase", "name": "chip",
                                               "status": "passed"},
                                              {"feature": "Purchase", "name": "chip again",
                                               "status": "failed"}]}

"""Root only: the virtual terminal's second serial port speaks Ingenico's Concert protocol
(docs/ecr-concert.md).  A bench file selecting the Concert link (``terminal.driver: concert``)
runs a purchase and a refund through it; with the test port kept, the cardholder's card and
PIN still go through the bench as always.  A Concert-only bench (no test port) skips what
Concert cannot carry, with the reason, instead of failing."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BOUND = 300

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the virtual bench needs root")

FEATURE = """\
Feature: Paying through the cash register
  Background:
    Given the terminal is powered on and idle
    And the operator is logged in
    And the terminal is signed in with the acquirer

  @OP-05
  Scenario: A purchase started by the cash register
    When the cardholder pays 12.30 by chip with the good card and its PIN
    Then the purchase is approved

  @OP-13
  Scenario: A refund started by the cash register
    Given the cardholder has paid 30.00 by chip with the good card and its PIN
    When the operator refunds 10.00 of that purchase
    Then the refund is approved
"""


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=BOUND,
                          stdin=subprocess.DEVNULL, env=env)


@pytest.fixture
def concert_lab(tmp_path: Path) -> Iterator[tuple[Path, dict[str, object]]]:
    repo = tmp_path / "lab"
    (repo / "features").mkdir(parents=True)
    (repo / "features" / "register.feature").write_text(FEATURE, encoding="utf-8")
    up = _run([sys.executable, "-m", "sim", "up", "--workdir", str(tmp_path / "bench"),
               "--bench-file", str(tmp_path / "virtual.yaml")], REPO)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        doc = yaml.safe_load((tmp_path / "virtual.yaml").read_text(encoding="utf-8"))
        yield repo, doc
    finally:
        down = _run([sys.executable, "-m", "sim", "down", "--workdir", str(tmp_path / "bench")],
                    REPO)
        assert down.returncode == 0, down.stdout + down.stderr


def _pytest(repo: Path, doc: dict[str, object]) -> tuple[subprocess.CompletedProcess[str],
                                                         dict[str, list[ET.Element]]]:
    (repo / "bench.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
    junit = repo / "junit.xml"
    done = _run([sys.executable, "-m", "pytest", "--bench", "bench.yaml", "-p",
                 "no:allure_pytest_bdd", "-p", "no:cacheprovider", f"--junitxml={junit}",
                 "-rs"], repo)
    cases = {c.get("name", "?"): list(c) for c in ET.parse(junit).getroot().iter("testcase")}
    return done, cases


def test_a_purchase_runs_through_the_concert_link(
        concert_lab: tuple[Path, dict[str, object]]) -> None:
    repo, doc = concert_lab
    terminal = dict(doc["terminal"])  # type: ignore[call-overload]
    assert terminal["concert_port"], "the virtual terminal publishes no Concert port"
    terminal["driver"] = "concert"
    done, cases = _pytest(repo, {**doc, "terminal": terminal})
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert cases == {"test_a_purchase_started_by_the_cash_register": [],
                     "test_a_refund_started_by_the_cash_register": []}, out[-3000:]
    log = (repo.parent / "bench" / "terminal.log").read_text(encoding="utf-8", errors="replace")
    assert "concert" in log.lower(), "the terminal's log shows no Concert request"


def test_a_concert_only_bench_skips_what_concert_cannot_carry(
        concert_lab: tuple[Path, dict[str, object]]) -> None:
    repo, doc = concert_lab
    terminal = {k: v for k, v in dict(doc["terminal"]).items()  # type: ignore[call-overload]
                if k not in ("port", "baudrate")}
    terminal["driver"] = "concert"
    done, cases = _pytest(repo, {**doc, "terminal": terminal})
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert len(cases) == 2
    for children in cases.values():
        assert [c.tag for c in children] == ["skipped"], out[-2000:]
        assert "Concert" in (children[0].get("message") or ""), children[0].get("message")

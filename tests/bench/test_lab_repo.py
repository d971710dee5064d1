"""Root only: a lab's own repository — its features and its bench file, no Python, no conftest
— runs on the installed rig (the ``pytest11`` entry point loads the plugin and the step library;
.feature files are collected as they are) against the virtual bench, and ``posrig doctor`` finds
every instrument of that bench OK."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BOUND = 300

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the virtual bench needs root")

FEATURE = """\
@operating
Feature: Our shop's morning
  Background:
    Given the terminal is powered on and idle
    And the operator is logged in
    And the terminal is signed in with the acquirer

  @OP-05
  Scenario: A chip purchase
    When the cardholder pays 12.30 by chip with the good card and its PIN
    Then the purchase is approved

  @OP-06
  Scenario: A stripe purchase signed on the pad
    When the cardholder pays 11.10 by stripe with the magstripe card
    Then the purchase is approved, read by stripe and verified by signature
"""


def _run(cmd: list[str], cwd: Path, bound: float = BOUND) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["COLUMNS"] = "400"  # the doctor's table unfolded, a line per instrument
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=bound,
                          stdin=subprocess.DEVNULL, env=env)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Path]:
    """The lab's repository, with the virtual bench up and its bench file in it."""
    repo = tmp_path / "lab"
    (repo / "features").mkdir(parents=True)
    (repo / "features" / "morning.feature").write_text(FEATURE, encoding="utf-8")
    workdir = tmp_path / "bench"
    up = _run([sys.executable, "-m", "rigs", "bench", "up", "--workdir", str(workdir),
               "--bench-file", str(repo / "bench.yaml")], REPO)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "virtual is nominal" in up.stdout, up.stdout + up.stderr
        yield repo
    finally:
        down = _run([sys.executable, "-m", "rigs", "bench", "down", "--workdir", str(workdir)],
                    REPO)
        assert down.returncode == 0, down.stdout + down.stderr


def _doctor_ok(lab: Path) -> str:
    doctor = _run([sys.executable, "-m", "rigs", "doctor", "--bench", "bench.yaml",
                   "--workdir", str(lab / "doctor")], lab, bound=120)
    text = textwrap.dedent(doctor.stdout)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "Traceback" not in doctor.stdout + doctor.stderr
    for part in ("terminal", "cards", "power", "switch", "network"):
        assert any(part in line and "OK" in line for line in text.splitlines()), \
            f"{part} not OK:\n{text}"
    return text


def test_a_lab_repository_runs_its_features_and_the_doctor_finds_the_bench_ok(lab: Path) -> None:
    assert not list(lab.rglob("*.py")) and not (lab / "conftest.py").exists()
    _doctor_ok(lab)  # posrig bench up left the bench nominal: every instrument OK
    junit = lab / "junit.xml"
    done = _run([sys.executable, "-m", "pytest", "--bench", "bench.yaml", "-p",
                 "no:allure_pytest_bdd", "-p", "no:cacheprovider", f"--junitxml={junit}",
                 "-rfE"], lab)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    cases = {c.get("name"): [ch.tag for ch in c] for c in ET.parse(junit).getroot()
             .iter("testcase")}
    assert cases == {"test_a_chip_purchase": [], "test_a_stripe_purchase_signed_on_the_pad": []}
    assert "features/morning.feature::" in done.stdout or "2 passed" in out

    text = _doctor_ok(lab)  # and again after the run restored it
    assert "POSRIG-SIM T1" in text and "ATR 3B" in text and "instruments OK" in text

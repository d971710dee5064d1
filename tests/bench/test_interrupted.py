"""A scenario interrupted with faults active leaves nothing active.

One standalone virtual bench (``sim up`` without an owner, as a lab bench outlives the rig).
A scenario injects a fault into every instrument (paper out on the relay unit, the cable pulled
on the injector, the supply sagged, the chip made mute on the card bank) and waits:

- Ctrl-C (SIGINT) to the rig: pytest tears the scenario down, the bench restores every fault,
  and ``python -m rigs reset`` then finds nothing away from nominal;
- SIGKILL to the rig (nothing can run in it): ``python -m rigs reset`` finds the faults the
  instruments still hold (the supply and the relay unit; the injector's bridge and the card
  relay live in the rig process and die with it), says so, restores them, and a second reset
  finds nothing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BOUND = 120
WAIT_S = 90

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the virtual bench needs root")

FEATURE = """\
Feature: Interrupted with faults active
  Scenario: Every instrument holds a fault when the rig is interrupted
    Given the terminal is powered on and idle
    And the good card's chip gives no answer
    When the printer runs out of paper
    And the network cable between the terminal and the acquirer is pulled
    And the battery sags to the low-battery threshold
    Then the rig waits to be interrupted
"""

CONFTEST = f"""\
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, {str(REPO)!r})
from pytest_bdd import then  # noqa: E402

# Ctrl-C as at a terminal: a job a non-interactive shell started in the background (with &)
# inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler.
signal.signal(signal.SIGINT, signal.default_int_handler)

pytest_plugins = ["rigs.plugin", "steps.terminal_steps", "steps.fault_steps",
                  "steps.card_fault_steps"]


@then("the rig waits to be interrupted")
def wait_to_be_interrupted() -> None:
    Path(__file__).with_name("waiting").write_text("yes")
    threading.Event().wait({WAIT_S})
    raise AssertionError("nobody interrupted the rig within {WAIT_S} s")
"""

TEST = """\
from pytest_bdd import scenarios

scenarios("interrupted.feature")
"""


def sim(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sim", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=BOUND, stdin=subprocess.DEVNULL)


def reset(bench_file: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rigs", "reset", "--bench", str(bench_file),
                           "--workdir", str(tmp_path / "reset")], cwd=REPO, capture_output=True,
                          text=True, timeout=BOUND, stdin=subprocess.DEVNULL)


@pytest.fixture
def standalone_bench(tmp_path: Path) -> Iterator[Path]:
    workdir, bench_file = tmp_path / "bench", tmp_path / "bench.yaml"
    try:
        up = sim("up", "--workdir", str(workdir), "--bench-file", str(bench_file))
        assert up.returncode == 0, up.stdout + up.stderr
        yield bench_file
    finally:
        sim("down", "--workdir", str(workdir))


def interrupted_run(tmp_path: Path, bench_file: Path, sig: signal.Signals) -> str:
    """Run the scenario until it waits, send *sig*, return what pytest printed."""
    here = tmp_path / f"run-{sig.name}"
    here.mkdir()
    (here / "interrupted.feature").write_text(FEATURE)
    (here / "conftest.py").write_text(CONFTEST)
    (here / "test_interrupted.py").write_text(TEST)
    (here / "pytest.ini").write_text("[pytest]\n")
    log = here / "pytest.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pytest", str(here), "--bench", str(bench_file),
             "--bench-workdir", str(here / "rig"), "-p", "no:allure_pytest",
             "-p", "no:allure_pytest_bdd", "-p", "no:cacheprovider", "-q", "-s"],
            cwd=here, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + BOUND
            while not (here / "waiting").exists():
                assert proc.poll() is None, f"the rig ended before waiting:\n{log.read_text()}"
                assert time.monotonic() < deadline, \
                    f"the scenario did not reach its wait within {BOUND} s:\n{log.read_text()}"
                time.sleep(0.2)  # polling a file another process writes; bounded above
            proc.send_signal(sig)
            proc.wait(timeout=BOUND)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    return log.read_text()


def test_interrupted_scenario_leaves_nothing_active(standalone_bench: Path,
                                                    tmp_path: Path) -> None:
    said = interrupted_run(tmp_path, standalone_bench, signal.SIGINT)
    assert "KeyboardInterrupt" in said or "Interrupted" in said, said[-3000:]
    after = reset(standalone_bench, tmp_path)
    assert after.returncode == 0, after.stdout + after.stderr
    assert "found nothing away from nominal" in after.stdout, after.stdout


def test_killed_rig_leaves_faults_that_reset_finds_and_clears(standalone_bench: Path,
                                                              tmp_path: Path) -> None:
    interrupted_run(tmp_path, standalone_bench, signal.SIGKILL)
    found = reset(standalone_bench, tmp_path)
    assert found.returncode == 0, found.stdout + found.stderr
    text = found.stdout
    # The injector's bridge and the card relay run inside the rig process and died with it
    # (the link is down until a rig bridges it again); the supply and the relay unit are
    # instruments of their own and still hold their faults.
    for expected in ("relay unit: channel 1 (paper_sensor) closed",
                     "power supply: rail at 6.80 V, nominal 7.40 V"):
        assert expected in text, f"reset did not report {expected!r}:\n{text}"
    assert "restored: every instrument is nominal" in text, text
    again = reset(standalone_bench, tmp_path)
    assert again.returncode == 0 and "found nothing away from nominal" in again.stdout, \
        again.stdout + again.stderr

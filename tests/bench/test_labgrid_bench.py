"""Root only: the virtual bench reached through a labgrid place.  A coordinator and an
exporter on loopback; ser2net exports the virtual terminal's serial port (RFC 2217) and the
card probe's (raw TCP); the lab's bench file names the place by its tags instead of those
ports.  A scenario runs through the acquired place, and the place is free again afterwards."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from tests.farm.lab import Farm, labgrid_missing

REPO = Path(__file__).resolve().parents[2]
BOUND = 300

pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="the virtual bench needs root"),
              pytest.mark.skipif(labgrid_missing() is not None,
                                 reason=str(labgrid_missing()))]

FEATURE = """\
Feature: A purchase on a farm bench
  Background:
    Given the terminal is powered on and idle
    And the operator is logged in
    And the terminal is signed in with the acquirer

  @OP-05
  Scenario: A chip purchase through the acquired place
    When the cardholder pays 12.30 by chip with the good card and its PIN
    Then the purchase is approved
"""


class BenchFarm(Farm):
    """The test farm with the virtual bench's own ptys behind ser2net, not fake terminals."""

    def __init__(self, workdir: Path, ecr: str, probe: str) -> None:
        super().__init__(workdir)
        self._ptys = (ecr, probe)

    def start(self) -> None:
        from tests.farm.lab import free_port

        ecr, probe = self._ptys
        self.terminal = SimpleNamespace(path=ecr, close=lambda: None)  # type: ignore[assignment]
        self.probe = SimpleNamespace(path=probe, close=lambda: None)  # type: ignore[assignment]
        self.terminal_port, self.probe_port = free_port(), free_port()
        self._start_ser2net()
        self._start_coordinator()
        self._start_exporter()
        self._create_places()


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "LG_"))}
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=BOUND,
                          stdin=subprocess.DEVNULL, env=env)


@pytest.fixture
def farm_bench(tmp_path: Path) -> Iterator[tuple[BenchFarm, dict[str, object]]]:
    up = _run([sys.executable, "-m", "sim", "up", "--workdir", str(tmp_path / "bench"),
               "--bench-file", str(tmp_path / "virtual.yaml")], REPO)
    farm: BenchFarm | None = None
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        doc = yaml.safe_load((tmp_path / "virtual.yaml").read_text(encoding="utf-8"))
        farm = BenchFarm(tmp_path / "farm", doc["terminal"]["port"], doc["cards"]["probe"])
        farm.workdir.mkdir()
        farm.start()
        yield farm, doc
    finally:
        if farm is not None:
            farm.stop()
        down = _run([sys.executable, "-m", "sim", "down", "--workdir", str(tmp_path / "bench")],
                    REPO)
        assert down.returncode == 0, down.stdout + down.stderr


def test_a_scenario_runs_through_an_acquired_labgrid_place(
        farm_bench: tuple[BenchFarm, dict[str, object]], tmp_path: Path) -> None:
    farm, doc = farm_bench
    terminal = {k: v for k, v in dict(doc["terminal"]).items() if k != "port"}  # type: ignore[call-overload]
    cards = {k: v for k, v in dict(doc["cards"]).items() if k != "probe"}  # type: ignore[call-overload]
    bench = {**doc, "terminal": terminal, "cards": cards,
             "labgrid": {"coordinator": farm.coordinator, "tags": dict(Farm.TAGS),
                         "acquire_timeout": 30,
                         "resources": {"terminal.port": "terminal", "cards.probe": "probe"}}}
    repo = tmp_path / "lab"
    (repo / "features").mkdir(parents=True)
    (repo / "features" / "farm.feature").write_text(FEATURE, encoding="utf-8")
    (repo / "bench.yaml").write_text(yaml.safe_dump(bench), encoding="utf-8")
    junit = repo / "junit.xml"
    done = _run([sys.executable, "-m", "pytest", "--bench", "bench.yaml", "-p",
                 "no:allure_pytest_bdd", "-p", "no:cacheprovider", f"--junitxml={junit}"],
                repo)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:] + farm.logs()[-3000:]
    cases = [list(c) for c in ET.parse(junit).getroot().iter("testcase")]
    assert cases == [[]], out[-3000:]
    assert Farm.PLACE in out, "the acquired place is not named in the run's output"
    assert farm.place_holder() == ("None", "None"), "the place was not released"

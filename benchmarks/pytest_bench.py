"""pytest plugin used by benchmarks/run_all.py for the scenario and suite figures
(``-p benchmarks.pytest_bench``); it changes nothing unless its options are given.

- ``--bench-repeat N``: every collected test (scenario) runs N times in a row, as
  ``test_x[run1of3]`` … (a parametrization, so the JUnit XML has one testcase per run).
- ``--bench-rss-file PATH``: at the end of the session the process appends one JSON line
  ``{"role": "main"|"gw0"|…, "pid": …, "vmhwm_kib": …}`` to PATH: its own peak resident set
  (``VmHWM`` of /proc/self/status), read after every fixture, the bench's included, is torn down.
  Under pytest-xdist the controller and each worker write a line of their own.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPEAT_FIXTURE = "_posrig_bench_run"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("posrig-benchmarks", "benchmarks/run_all.py")
    group.addoption("--bench-repeat", metavar="N", type=int, default=1,
                    help="run every collected scenario N times in a row (default: %(default)s)")
    group.addoption("--bench-rss-file", metavar="PATH", default=None,
                    help="append this process's peak RSS (VmHWM) as a JSON line at the end")


def pytest_configure(config: pytest.Config) -> None:
    repeat = config.getoption("--bench-repeat")
    if repeat < 1:
        raise pytest.UsageError(f"--bench-repeat: expected a count >= 1, got {repeat}")


@pytest.fixture
def _posrig_bench_run(request: pytest.FixtureRequest) -> int:
    """Which run of the scenario this is (0-based); only there with ``--bench-repeat`` > 1."""
    return int(request.param)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    repeat = int(metafunc.config.getoption("--bench-repeat"))
    if repeat <= 1:
        return
    metafunc.fixturenames.append(REPEAT_FIXTURE)
    metafunc.parametrize(REPEAT_FIXTURE, range(repeat), indirect=True,
                         ids=[f"run{i + 1}of{repeat}" for i in range(repeat)])


def vmhwm_kib(status_text: str) -> int | None:
    """The ``VmHWM`` line of a /proc/<pid>/status text, in KiB (None if absent)."""
    for line in status_text.splitlines():
        if line.startswith("VmHWM:"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                return int(parts[1])
    return None


def pytest_unconfigure(config: pytest.Config) -> None:
    target = config.getoption("--bench-rss-file", default=None)
    if not target:
        return
    try:
        peak = vmhwm_kib(Path("/proc/self/status").read_text(encoding="ascii"))
    except OSError:
        peak = None
    line = {"role": os.environ.get("PYTEST_XDIST_WORKER", "main"), "pid": os.getpid(),
            "vmhwm_kib": peak}
    with open(target, "a", encoding="utf-8") as out:
        out.write(json.dumps(line) + "\n")

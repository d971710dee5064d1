"""Fixtures every test package may use."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short directory under /tmp: a unix socket path has at most 107 characters (a
    pytest tmp_path may be longer)."""
    path = Path(tempfile.mkdtemp(prefix="rig", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(autouse=True)
def _no_labgrid_plugin_in_pytester(request: pytest.FixtureRequest,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A generated project (pytester) does not read this repository's pytest options: keep
    labgrid's pytest plugin (an installed dependency, not used by the rig) out of it too."""
    if "pytester" in request.fixturenames:
        monkeypatch.setenv("PYTEST_ADDOPTS", "-p no:labgrid")


# Property-based tests: a few hundred examples each in `make test` (profile "ci", the default,
# derandomized so a CI run is repeatable), many more with HYPOTHESIS_PROFILE=long; the long,
# coverage-guided search is `make fuzz`.
settings.register_profile("ci", max_examples=200, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=5000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


# pytest-xdist (`make test` runs `pytest tests -n 2`): the tests that bring up a virtual bench
# with the contract names run one after another on one worker; the soak, which waits on a bench
# of its own for minutes, is a group of its own; everything else (it builds its own namespaces,
# readers and ports under unique names) spreads over the workers one test at a time.
BENCH_GROUP = "bench"
SOAK_GROUP = "soak"
_XDIST_ENV = ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID")


def pytest_configure(config: pytest.Config) -> None:
    """In an xdist worker, the worker's id leaves the environment: a pytest this suite starts
    (a lab repository, the plugin's runs, the parallel-bench test) would take it for its own
    worker id and bring up bench gw<N> instead of the bench it asked for."""
    if hasattr(config, "workerinput"):  # an xdist worker
        for name in _XDIST_ENV:
            os.environ.pop(name, None)


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """xdist's own groups (``xdist_group``, ``--dist loadgroup``) do not reach its scheduler
    under pytest 9.2 (the group is written into ``item._nodeid``, which pytest no longer reads):
    the scheduler groups by node id itself.  Only for ``--dist load`` (what ``-n`` means)."""
    if config.getoption("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class BenchGroups(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_group(nodeid) or nodeid

    return BenchGroups(config, log)


def xdist_group(nodeid: str) -> str | None:
    """The group a test runs in under xdist (None: any worker, one test at a time)."""
    from tests.bench import test_soak

    if nodeid.startswith(test_soak.NODE):
        return SOAK_GROUP
    return BENCH_GROUP if nodeid.startswith("tests/bench/") else None

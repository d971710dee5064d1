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


# pytest-xdist (`make test` runs `pytest tests -n 3`): the tests that bring up a virtual bench
# run one after another on one worker (a second bench beside the scenario runs they drive starves
# these two cores: time-outs expire), except the soak, which waits on a bench of its own for
# minutes on another worker; everything else (it builds its own namespaces, readers and ports
# under unique names) spreads over the workers one test at a time.
BENCH_GROUP = "bench"
OWN_BENCH_GROUPS = {"tests/bench/test_soak.py::": "soak"}
_XDIST_ENV = ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID")


def _xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    """In an xdist worker, the worker's id leaves the environment: a pytest this suite starts
    (a lab repository, the plugin's runs, the parallel-bench test) would take it for its own
    worker id and bring up bench gw<N> instead of the bench it asked for."""
    if _xdist_worker(config):
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
    for prefix, group in OWN_BENCH_GROUPS.items():  # test_soak.NODE is the soak's prefix
        if nodeid.startswith(prefix):
            return group
    return BENCH_GROUP if nodeid.startswith("tests/bench/") else None


def pytest_collection_finish(session: pytest.Session) -> None:
    """Without xdist, the soak of tests/bench/test_soak.py starts now, beside the rest of the
    suite (it waits on the terminal for minutes, on a bench of its own); the test judges it when
    it ends.  Under xdist its test starts it on a worker of its own."""
    from tests.bench import test_soak

    if (os.geteuid() == 0 and not session.config.option.collectonly
            and not _xdist_worker(session.config)
            and any(item.nodeid.startswith(test_soak.NODE) for item in session.items)):
        test_soak.start_early(session.config)


def pytest_sessionfinish(session: pytest.Session) -> None:
    from tests.bench import test_soak

    test_soak.stop_unused(session.config)


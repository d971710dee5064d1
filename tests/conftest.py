"""Fixtures every test package may use."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

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


def pytest_collection_finish(session: pytest.Session) -> None:
    """The soak of tests/bench/test_soak.py starts now, beside the rest of the suite (it waits
    on the terminal for minutes, on a bench of its own); the test judges it when it ends."""
    from tests.bench import test_soak

    if (os.geteuid() == 0 and not session.config.option.collectonly
            and any(item.nodeid.startswith(test_soak.NODE) for item in session.items)):
        test_soak.start_early(session.config)


def pytest_sessionfinish(session: pytest.Session) -> None:
    from tests.bench import test_soak

    test_soak.stop_unused(session.config)

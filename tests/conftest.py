"""Fixtures every test package may use."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


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

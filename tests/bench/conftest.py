"""The bench tests' scratch folder is short: a virtual bench puts unix sockets in it (at most
107 characters a path), and pytest's own ``tmp_path`` grows by a worker folder under xdist."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item,
                              call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport,
                                                                        pytest.TestReport]:
    report = yield
    if report.failed:
        item.stash[FAILED] = True
    return report


@pytest.fixture
def tmp_path(request: pytest.FixtureRequest) -> Iterator[Path]:
    """A fresh folder under /tmp with a short name; removed after the test unless it failed
    (then its path is printed: the bench's logs are in it)."""
    path = Path(tempfile.mkdtemp(prefix="rb", dir="/tmp"))
    yield path
    if request.node.stash.get(FAILED, False):
        print(f"kept for the failure: {path}")
    else:
        shutil.rmtree(path, ignore_errors=True)

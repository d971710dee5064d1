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

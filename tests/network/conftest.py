"""Fixtures shared by the network tests."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A short scratch folder: unix socket paths are limited and pytest's tmp_path can be long."""
    short = Path(f"/tmp/nt{os.getpid()}-{time.monotonic_ns() % 10**9}")
    short.mkdir()
    try:
        yield short
    finally:
        for p in short.iterdir():
            p.unlink()
        short.rmdir()

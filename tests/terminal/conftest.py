"""Fixtures of the terminal tests."""

from __future__ import annotations

import pytest

from tests.terminal.fakes import Day


@pytest.fixture
def day() -> Day:
    """A booted terminal, an operator logged in, signed in."""
    d = Day()
    d.boot()
    d.sign_in()
    return d

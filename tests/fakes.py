"""Test doubles shared by the test packages."""

from __future__ import annotations

from typing import Any

from rigs.events import Source


class FakeEventSink:
    """An event sink that keeps what it is given: ``(source, kind, name, detail)``."""

    def __init__(self) -> None:
        self.seen: list[tuple[Source, str, str, str]] = []

    def publish(self, source: Source, kind: str, name: str, detail: str = "", *,
                t: float | None = None, data: Any = None) -> None:
        self.seen.append((source, kind, name, detail))

"""What every instrument driver has in common: a name, an open/closed state, the check that a
public method is only used on an open session (the message names driver, operation, state), and
the event sink it publishes into (:mod:`rigs.events`)."""

from __future__ import annotations

import enum

from rigs.errors import DeviceStateError
from rigs.events import NULL_SINK, EventSink


class SessionState(enum.Enum):
    CLOSED = "CLOSED"
    OPEN = "OPEN"


class Driver:
    """Base of the rig's drivers.  Subclasses open their injected transport in :meth:`open`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.state = SessionState.CLOSED
        self.event_sink: EventSink = NULL_SINK
        """Where the driver publishes its events (the bench attaches the scenario's stream)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"

    def require_open(self, operation: str) -> None:
        """Raise :class:`DeviceStateError` unless the session is open."""
        if self.state is not SessionState.OPEN:
            raise DeviceStateError(
                f"{self!r}: {operation}() needs an open session; state is {self.state.value}")

    def open(self) -> None:
        self.state = SessionState.OPEN

    def close(self) -> None:
        self.state = SessionState.CLOSED

    def __enter__(self) -> Driver:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

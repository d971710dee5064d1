"""The relay unit wired into the terminal (paper sensor etc.).

:class:`rigs.interfaces.SwitchUnit` is the interface; :class:`ScpiRelayUnit` drives a SCPI
switch unit with the ``ROUTe:CLOSe/OPEN (@list)`` surface through an injected
:class:`rigs.scpi.ScpiTransport`.
Nominal = every relay OPEN (on the virtual bench channel 1 CLOSED shunts the printer's paper
sensor: the terminal sees "paper out").
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from rigs.errors import ConfigError, TransportError
from rigs.events import Source
from rigs.scpi import ScpiInstrument, ScpiTransport

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SwitchEvent:
    t: float       # time.monotonic()
    action: str    # "close" | "open" | "open_all" | "read"
    channel: int   # 0 for all channels
    closed: bool | None


class ScpiRelayUnit(ScpiInstrument):
    """A SCPI relay unit with *channels* channels numbered from 1."""

    def __init__(self, name: str, transport: ScpiTransport, *, channels: int = 8) -> None:
        super().__init__(name, transport)
        if channels < 1:
            raise ConfigError(f"ScpiRelayUnit({name}): switch.channels must be >= 1, "
                              f"got {channels}")
        self.channels = channels
        self.trace: list[SwitchEvent] = []

    def _check_channel(self, channel: int, operation: str) -> None:
        if not 1 <= channel <= self.channels:
            raise ConfigError(f"{self!r}: {operation}({channel}): channel outside "
                              f"1..{self.channels} (bench YAML switch.channels)")

    def _record(self, action: str, channel: int, closed: bool | None) -> None:
        self.trace.append(SwitchEvent(time.monotonic(), action, channel, closed))
        if action != "read":
            where = "all" if channel == 0 else f"ch{channel}"
            self.event_sink.publish(Source.SWITCH, "relay", action, where,
                                    data={"channel": channel, "closed": closed})

    def close_channel(self, channel: int) -> None:
        self.require_open("close_channel")
        self._check_channel(channel, "close_channel")
        self.transport.write(f"ROUT:CLOS (@{channel})")
        self.wait_complete("close_channel")
        self._record("close", channel, True)

    def open_channel(self, channel: int) -> None:
        self.require_open("open_channel")
        self._check_channel(channel, "open_channel")
        self.transport.write(f"ROUT:OPEN (@{channel})")
        self.wait_complete("open_channel")
        self._record("open", channel, False)

    def open_all(self) -> None:
        self.require_open("open_all")
        self.transport.write("ROUT:OPEN:ALL")
        self.wait_complete("open_all")
        self._record("open_all", 0, False)

    def is_closed(self, channel: int) -> bool:
        """Ask the unit whether *channel* is closed."""
        self.require_open("is_closed")
        self._check_channel(channel, "is_closed")
        closed = self._closed_states(f"(@{channel})", 1)[0]
        self._record("read", channel, closed)
        return closed

    def _closed_states(self, channel_list: str, count: int) -> list[bool]:
        cmd = f"ROUT:CLOS? {channel_list}"
        answer = self.transport.query(cmd)
        flags = [flag.strip() for flag in answer.split(",")]
        if len(flags) != count or any(flag not in ("0", "1") for flag in flags):
            raise TransportError(f"{self!r}: {cmd!r} answered {answer!r}; expected {count} "
                                 f"comma-separated 0/1 flag(s)")
        return [flag == "1" for flag in flags]

    def is_nominal(self) -> bool:
        """Every relay open."""
        self.require_open("is_nominal")
        return not any(self._closed_states(f"(@1:{self.channels})", self.channels))

    def restore_nominal(self) -> None:
        """Open every relay and check the unit accepted it."""
        self.require_open("restore_nominal")
        self.open_all()
        self.check_errors()

    def clear_trace(self) -> None:
        """Start a new trace (per scenario)."""
        self.trace.clear()

    def trace_text(self) -> str:
        """One line per relay action, for the report."""
        lines = []
        for e in self.trace:
            where = "all" if e.channel == 0 else f"ch{e.channel}"
            state = "" if e.closed is None else (" CLOSED" if e.closed else " OPEN")
            lines.append(f"{e.t:.6f} {e.action} {where}{state}")
        return "\n".join(lines) + ("\n" if lines else "")

    def trace_csv(self) -> str:
        lines = ["t_monotonic_s,action,channel,closed"]
        lines += [f"{e.t:.6f},{e.action},{e.channel},{'' if e.closed is None else int(e.closed)}"
                  for e in self.trace]
        return "\n".join(lines) + "\n"

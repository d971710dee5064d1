"""A simulated 8-channel SCPI relay (switch) unit.

Pure state machine: ``handle(line, now) -> response | None``.  On the virtual bench channel 1 is
wired across the printer's paper sensor: the bench supervisor reads :meth:`SimRelayUnit.closed`
after each line (CLOSED shunts the sensor = the terminal sees "paper out").

Surface (Keysight 34970/DAQ970-like, channels 1..8)::

    ROUTe:CLOSe (@1)        ROUTe:OPEN (@1,2)        ROUTe:OPEN:ALL
    ROUTe:CLOSe? (@1:4)  →  1,1,0,0                  ROUTe:OPEN? (@1)  →  0
"""

from __future__ import annotations

import re
from typing import ClassVar

from sim.scpi import (
    Command,
    SimScpiDevice,
    data_out_of_range,
    expect_params,
    syntax_error,
)

DEFAULT_IDN = "posrig,SimRelayUnit 8ch,SIM-RLY-0001,1.0"

_CHANNEL_LIST_RE = re.compile(r"^\(@[ \t]*(.*?)[ \t]*\)$", re.DOTALL)
_ITEM_RE = re.compile(r"^([0-9]+)(?:[ \t]*:[ \t]*([0-9]+))?$")
MAX_CHANNEL_DIGITS = 6  # a longer channel number is out of range without reading it as an int


def _channel(digits: str, channels: int) -> int:
    """A channel number in 1..*channels* (-222 otherwise, however many digits it has)."""
    if len(digits.lstrip("0")) > MAX_CHANNEL_DIGITS:
        raise data_out_of_range(f"channel number of {len(digits)} digits outside 1..{channels}")
    ch = int(digits)
    if not 1 <= ch <= channels:
        raise data_out_of_range(f"channel {ch} outside 1..{channels}")
    return ch


def parse_channel_list(param: str, channels: int) -> list[int]:
    """``'(@1,3)'`` → ``[1, 3]``; ``'(@1:4)'`` → ``[1, 2, 3, 4]`` (-102 malformed, -222 range)."""
    m = _CHANNEL_LIST_RE.match(param.strip(" \t"))
    if m is None:
        raise syntax_error(f"{param[:40]!r} is not a channel list like (@1) (@1,3) (@1:4)")
    result: list[int] = []
    for item in m.group(1).split(","):
        im = _ITEM_RE.match(item.strip(" \t"))
        if im is None:
            raise syntax_error(f"channel list item {item[:40]!r} in {param[:40]!r}")
        first = _channel(im.group(1), channels)
        last = _channel(im.group(2), channels) if im.group(2) is not None else first
        step = 1 if last >= first else -1
        result.extend(range(first, last + step, step))
    return result


class SimRelayUnit(SimScpiDevice):
    """*channels* independent relays, all OPEN after power-up and ``*RST``."""

    STATE: ClassVar[tuple[str, ...]] = ("_closed",)
    COMMANDS: ClassVar[tuple[Command, ...]] = (
        Command("ROUTe:CLOSe", "_close"),
        Command("ROUTe:CLOSe?", "_query_closed"),
        Command("ROUTe:OPEN", "_open"),
        Command("ROUTe:OPEN?", "_query_open"),
        Command("ROUTe:OPEN:ALL", "_open_all"),
    )

    def __init__(self, *, channels: int = 8, idn: str = DEFAULT_IDN) -> None:
        super().__init__(idn)
        self.channels = channels
        self._closed: set[int] = set()

    def __repr__(self) -> str:
        return f"SimRelayUnit(closed={sorted(self._closed)})"

    def closed(self, channel: int) -> bool:
        """True if *channel*'s relay is closed."""
        return channel in self._closed

    def reset(self) -> None:
        self._closed.clear()

    def _channels(self, params: list[str], what: str) -> list[int]:
        expect_params(params, 1, 1, what)
        return parse_channel_list(params[0], self.channels)

    def _close(self, params: list[str], now: float) -> None:
        self._closed.update(self._channels(params, "ROUT:CLOS"))

    def _open(self, params: list[str], now: float) -> None:
        self._closed.difference_update(self._channels(params, "ROUT:OPEN"))

    def _open_all(self, params: list[str], now: float) -> None:
        expect_params(params, 0, 0, "ROUT:OPEN:ALL")
        self._closed.clear()

    def _query_closed(self, params: list[str], now: float) -> str:
        return ",".join("1" if ch in self._closed else "0"
                        for ch in self._channels(params, "ROUT:CLOS?"))

    def _query_open(self, params: list[str], now: float) -> str:
        return ",".join("0" if ch in self._closed else "1"
                        for ch in self._channels(params, "ROUT:OPEN?"))

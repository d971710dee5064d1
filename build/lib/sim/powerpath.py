"""The terminal's power circuits outside its firmware: brown-out detector, power-on reset and
the power manager that restarts a terminal that switched itself off.

A pure state machine (time passed in, actions out), like the other simulated devices; the bench
supervisor (:mod:`sim.bench`) feeds it every sample of the supply rail, the firmware's
``power_off`` notice and the firmware process's end, and carries out what it returns:
:class:`Boot` (start the firmware process), :class:`Kill` (SIGKILL it: its power is gone) and
:class:`Rail` (tell the running firmware the rail's new voltage).

States (:class:`PowerState`):

* ``unpowered`` — the rail is below brown-out (or the output is off): no firmware;
* ``reset`` — the rail is at or above brown-out, the power-on reset holds the MCU for
  ``power_on_reset_s`` (the rail must stay up that long; a dip below brown-out starts it again).
  This is what bounds the boot loop of a current limit too low to boot: the booting terminal
  pulls the supply into constant current, the rail sags below brown-out, the terminal dies, the
  rail recovers — and the next try comes only ``power_on_reset_s`` later, not at the rate SCPI
  lines happen to arrive;
* ``running`` — the firmware process runs; a rail below brown-out kills it at once;
* ``off`` — the firmware switched itself off (battery cut-off, or too low to start): no process,
  0 A; it starts again by itself when the rail rises above ``restart_volts`` (a charger
  connected), or after a power cycle through brown-out like any terminal;
* ``crashed`` — the firmware process ended by itself (a bug): nothing starts it again but a
  power cycle through brown-out.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

#: Slack when comparing instants.
EPSILON = 1e-9


class PowerState(enum.StrEnum):
    UNPOWERED = "unpowered"
    RESET = "reset"
    RUNNING = "running"
    OFF = "off"
    CRASHED = "crashed"


@dataclass(frozen=True)
class Boot:
    """Start the firmware; *attempt* counts the power-ups since the terminal last booted fully
    (1 for a healthy power-up; more when each dies booting)."""

    volts: float
    attempt: int


@dataclass(frozen=True)
class Kill:
    """End the firmware process at once (SIGKILL: no goodbye, as when the power goes)."""

    why: str


@dataclass(frozen=True)
class Rail:
    """Tell the running firmware the rail's voltage (``{"t": "rail"}``)."""

    volts: float


PowerAction = Boot | Kill | Rail


class TerminalPowerPath:
    """See the module doc.  *brownout_volts*: below it the terminal is dead; *restart_volts*:
    above it a terminal that switched itself off starts again; *power_on_reset_s*: how long the
    rail must be up before the terminal starts after being unpowered."""

    def __init__(self, *, brownout_volts: float, restart_volts: float,
                 power_on_reset_s: float) -> None:
        if not 0 < brownout_volts < restart_volts or power_on_reset_s <= 0:
            raise ValueError(f"TerminalPowerPath: need 0 < brownout_volts ({brownout_volts}) < "
                             f"restart_volts ({restart_volts}) and power_on_reset_s > 0 "
                             f"({power_on_reset_s})")
        self.brownout_volts = brownout_volts
        self.restart_volts = restart_volts
        self.power_on_reset_s = power_on_reset_s
        self.state = PowerState.UNPOWERED
        self.volts = 0.0  # last rail sample
        self.attempt = 0  # power-ups since the terminal last booted fully
        self._sent: float | None = None  # last voltage told to the running firmware
        self._reset_until: float | None = None

    def __repr__(self) -> str:
        return (f"TerminalPowerPath({self.state}, rail {self.volts:.2f} V, "
                f"attempt {self.attempt})")

    def next_deadline(self) -> float | None:
        """When :meth:`tick` has something to do (the end of the power-on reset)."""
        return self._reset_until if self.state is PowerState.RESET else None

    # ---- inputs
    def rail(self, volts: float, now: float) -> list[PowerAction]:
        """A sample of the rail (after every SCPI line and every change of the load)."""
        self.volts = volts
        if volts < self.brownout_volts:
            return self._lose_power(f"rail at {volts:.2f} V < brown-out "
                                    f"{self.brownout_volts:.2f} V")
        if self.state is PowerState.UNPOWERED:
            self.state = PowerState.RESET
            self._reset_until = now + self.power_on_reset_s
            return []
        if self.state is PowerState.OFF and volts > self.restart_volts:
            return [self._boot()]
        if self.state is PowerState.RUNNING and volts != self._sent:
            self._sent = volts
            return [Rail(volts)]
        return []

    def tick(self, now: float) -> list[PowerAction]:
        """The power-on reset ends: the terminal starts."""
        if (self.state is PowerState.RESET and self._reset_until is not None
                and now + EPSILON >= self._reset_until):
            return [self._boot()]
        return []

    def booted(self) -> None:
        """The firmware got past booting (its load is no longer ``booting``)."""
        self.attempt = 0

    def powered_off(self, reason: str) -> list[PowerAction]:
        """The firmware switched itself off (its ``power_off`` notice): its power goes; it
        starts again at the first rail sample above ``restart_volts`` (the supervisor samples
        the rail after every kill, so a rail already above it restarts it at once)."""
        if self.state is not PowerState.RUNNING:
            return []
        self.state = PowerState.OFF
        self.attempt = 0
        return [Kill(f"it switched itself off ({reason}); it starts again above "
                     f"{self.restart_volts:.2f} V")]

    def exited(self, code: int | None) -> list[PowerAction]:
        """The firmware process ended by itself (not killed by us, not a power-off)."""
        if self.state is not PowerState.RUNNING:
            return []
        self.state = PowerState.CRASHED
        return [Kill(f"firmware exited with code {code}; it starts again after a power cycle")]

    # ---- helpers
    def _boot(self) -> Boot:
        self.state = PowerState.RUNNING
        self._reset_until = None
        self._sent = self.volts
        self.attempt += 1
        return Boot(self.volts, self.attempt)

    def _lose_power(self, why: str) -> list[PowerAction]:
        was = self.state
        self.state = PowerState.UNPOWERED
        self._reset_until = None
        self._sent = None
        return [Kill(why)] if was is PowerState.RUNNING else []

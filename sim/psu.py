"""A simulated single-output bench power supply speaking the Keysight E36xx SCPI dialect.

Pure state machine: ``handle(line, now) -> response | None``.  The bench supervisor reads
:attr:`SimPowerSupply.rail_volts` before and after each line (and after each change of
:attr:`SimPowerSupply.load_state`) to boot or kill the simulated terminal.

Electrical model, simple but coherent:

* the terminal is a load that draws ``load_amps[load_state]`` at the programmed voltage, i.e. a
  resistance ``R = V_set / I_load`` (no load state = open circuit, 0 A);
* if that current is within the current limit the supply regulates voltage (CV): the rail is the
  setpoint and ``MEAS:CURR?`` is the load current;
* if it exceeds the limit the supply goes into constant current (CC): the current is the limit
  and the rail drops to ``I_limit · R = V_set · I_limit / I_load``;
* output off: rail 0 V, 0 A.  ``MEAS:VOLT?`` reports the rail exactly (no noise: tests and
  steps compare numbers).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import ClassVar

from protocols.errors import SimError
from sim.scpi import (
    Command,
    SimScpiDevice,
    expect_params,
    format_number,
    parse_bool,
    parse_number,
)

# Current drawn by the virtual terminal in each of its load states (docs/internals.md).
TERMINAL_LOAD_AMPS: Mapping[str, float] = MappingProxyType({
    "booting": 0.30,
    "idle": 0.12,
    "card": 0.18,
    "comms": 0.25,
    "printing": 1.20,
})

#: Units the setpoints take (``VOLT 500 mV``, ``CURR 1.2A``), SCPI suffixes upper-cased.
VOLT_UNITS: Mapping[str, float] = MappingProxyType({"V": 1.0, "MV": 1e-3})
AMP_UNITS: Mapping[str, float] = MappingProxyType({"A": 1.0, "MA": 1e-3})

DEFAULT_IDN = "posrig,SimPowerSupply E36xx,SIM-PSU-0001,1.0"


class SimPowerSupply(SimScpiDevice):
    """One output, ``0..max_volts`` V and ``0..max_amps`` A, Keysight-like number format."""

    STATE: ClassVar[tuple[str, ...]] = ("output", "volts", "amps_limit", "_load_state",
                                        "last_change")
    COMMANDS: ClassVar[tuple[Command, ...]] = (
        Command("[SOURce]:VOLTage[:LEVel][:IMMediate][:AMPLitude]", "_set_volts"),
        Command("[SOURce]:VOLTage[:LEVel][:IMMediate][:AMPLitude]?", "_get_volts"),
        Command("[SOURce]:CURRent[:LEVel][:IMMediate][:AMPLitude]", "_set_amps"),
        Command("[SOURce]:CURRent[:LEVel][:IMMediate][:AMPLitude]?", "_get_amps"),
        Command("OUTPut[:STATe]", "_set_output"),
        Command("OUTPut[:STATe]?", "_get_output"),
        Command("MEASure[:SCALar]:VOLTage[:DC]?", "_measure_volts"),
        Command("MEASure[:SCALar]:CURRent[:DC]?", "_measure_amps"),
    )

    def __init__(self, *, max_volts: float = 30.0, max_amps: float = 3.0,
                 idn: str = DEFAULT_IDN,
                 load_amps: Mapping[str, float] = TERMINAL_LOAD_AMPS) -> None:
        super().__init__(idn)
        self.max_volts = max_volts
        self.max_amps = max_amps
        self.load_amps_table = MappingProxyType(dict(load_amps))
        self.output = False
        self.volts = 0.0
        self.amps_limit = max_amps
        self._load_state: str | None = None
        self.last_change = 0.0  # ``now`` of the last line that changed the output

    def __repr__(self) -> str:
        state = "ON" if self.output else "OFF"
        return (f"SimPowerSupply({state}, {self.volts:.3f} V set, {self.amps_limit:.3f} A limit,"
                f" load={self._load_state}, rail={self.rail_volts:.3f} V)")

    # -- what the bench supervisor reads and writes ----------------------------------------
    @property
    def load_state(self) -> str | None:
        """What the terminal is doing (``None``: nothing is drawing current)."""
        return self._load_state

    @load_state.setter
    def load_state(self, state: str | None) -> None:
        if state is not None and state not in self.load_amps_table:
            raise SimError(f"SimPowerSupply: load_state {state!r} unknown; expected one of "
                           f"{sorted(self.load_amps_table)} or None")
        self._load_state = state

    @property
    def load_demand_amps(self) -> float:
        """Current the load would draw at the setpoint (0 with no load state)."""
        return 0.0 if self._load_state is None else self.load_amps_table[self._load_state]

    @property
    def constant_current(self) -> bool:
        """True when the load wants more than the current limit (CC mode, rail drops)."""
        return self.output and self.load_demand_amps > self.amps_limit

    @property
    def rail_volts(self) -> float:
        """Voltage at the output terminals (0.0 when the output is off)."""
        if not self.output:
            return 0.0
        if self.constant_current:
            return self.volts * self.amps_limit / self.load_demand_amps
        return self.volts

    @property
    def measured_amps(self) -> float:
        if not self.output:
            return 0.0
        return min(self.load_demand_amps, self.amps_limit)

    def reset(self) -> None:
        """``*RST``: output off, 0 V, current limit at the rating."""
        self.output = False
        self.volts = 0.0
        self.amps_limit = self.max_amps

    # -- handlers -------------------------------------------------------------------------
    def _set_volts(self, params: list[str], now: float) -> None:
        expect_params(params, 1, 1, "VOLT")
        self.volts = parse_number(params[0], minimum=0.0, maximum=self.max_volts, default=0.0,
                                  what="VOLT", units=VOLT_UNITS)
        self.last_change = now

    def _get_volts(self, params: list[str], now: float) -> str:
        expect_params(params, 0, 1, "VOLT?")
        if params:
            return format_number(parse_number(params[0], minimum=0.0, maximum=self.max_volts,
                                              default=0.0, what="VOLT?", units=VOLT_UNITS))
        return format_number(self.volts)

    def _set_amps(self, params: list[str], now: float) -> None:
        expect_params(params, 1, 1, "CURR")
        self.amps_limit = parse_number(params[0], minimum=0.0, maximum=self.max_amps,
                                       default=self.max_amps, what="CURR", units=AMP_UNITS)
        self.last_change = now

    def _get_amps(self, params: list[str], now: float) -> str:
        expect_params(params, 0, 1, "CURR?")
        if params:
            return format_number(parse_number(params[0], minimum=0.0, maximum=self.max_amps,
                                              default=self.max_amps, what="CURR?", units=AMP_UNITS))
        return format_number(self.amps_limit)

    def _set_output(self, params: list[str], now: float) -> None:
        expect_params(params, 1, 1, "OUTP")
        self.output = parse_bool(params[0], "OUTP")
        if not self.output:
            self._load_state = None  # nothing draws current from a dead rail
        self.last_change = now

    def _get_output(self, params: list[str], now: float) -> str:
        expect_params(params, 0, 0, "OUTP?")
        return "1" if self.output else "0"

    def _measure_volts(self, params: list[str], now: float) -> str:
        expect_params(params, 0, 0, "MEAS:VOLT?")
        return format_number(self.rail_volts)

    def _measure_amps(self, params: list[str], now: float) -> str:
        expect_params(params, 0, 0, "MEAS:CURR?")
        return format_number(self.measured_amps)

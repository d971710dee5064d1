"""The bench power supply that stands in for the terminal's battery.

:class:`rigs.interfaces.PowerSupply` is the interface the bench façade and the steps use;
:class:`ScpiPowerSupply` drives any SCPI bench supply through an injected
:class:`rigs.scpi.ScpiTransport`.  The instrument families differ only in command spelling, kept
as data in :data:`DIALECTS` (one :class:`PsuDialect` row per family).

Safety: every setpoint is checked against the bench's limits (``power.limits.max_volts`` /
``power.limits.max_amps`` in the bench YAML) *before* anything is sent; a refused setpoint raises
:class:`rigs.errors.LimitError` and the instrument never sees it.

Evidence: every setpoint and measurement lands in :attr:`ScpiPowerSupply.trace` with a
``time.monotonic()`` timestamp; :meth:`ScpiPowerSupply.trace_csv` renders it for the report.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from rigs.errors import ConfigError, LimitError, RigError, TransportError
from rigs.events import Source
from rigs.scpi import ScpiInstrument, ScpiTransport, read_error_queue, scpi_property

logger = logging.getLogger(__name__)

MAX_VOLTS_KEY = "power.limits.max_volts"
MAX_AMPS_KEY = "power.limits.max_amps"


# ----------------------------------------------------------------------------------------------
# Dialects: command spelling per instrument family, as data
# ----------------------------------------------------------------------------------------------

def _flag_1(answer: str, channel: int) -> bool:
    return answer.strip().upper() in ("1", "ON")


def _siglent_status(answer: str, channel: int) -> bool:
    """SPD3303X ``SYST:STAT?`` is a hex word; bit 4 is CH1's output, bit 5 CH2's."""
    return bool((int(answer.strip(), 16) >> (3 + channel)) & 1)


@dataclass(frozen=True)
class PsuDialect:
    """Command templates of one instrument family.  ``{ch}`` is the output channel; the
    positional ``{:.3f}`` is the value.  A ``;:`` inside a template chains a channel selection
    with the command (a leading ``:`` makes the second unit start at the SCPI root)."""

    family: str
    set_volts: str
    get_volts: str
    set_amps: str
    get_amps: str
    output_on: str
    output_off: str
    get_output: str
    meas_volts: str
    meas_amps: str
    output_is_on: Callable[[str, int], bool] = _flag_1
    channels: int = 1


DIALECTS: Mapping[str, PsuDialect] = MappingProxyType({
    "keysight-e36xx": PsuDialect(
        family="Keysight E36xx single output (E3640/E36100 series); also the virtual bench",
        set_volts="VOLT {:.3f}", get_volts="VOLT?",
        set_amps="CURR {:.3f}", get_amps="CURR?",
        output_on="OUTP ON", output_off="OUTP OFF", get_output="OUTP?",
        meas_volts="MEAS:VOLT?", meas_amps="MEAS:CURR?",
    ),
    "keysight-e363xx": PsuDialect(
        family="Keysight E36300 series (channel lists)",
        set_volts="VOLT {:.3f},(@{ch})", get_volts="VOLT? (@{ch})",
        set_amps="CURR {:.3f},(@{ch})", get_amps="CURR? (@{ch})",
        output_on="OUTP ON,(@{ch})", output_off="OUTP OFF,(@{ch})", get_output="OUTP? (@{ch})",
        meas_volts="MEAS:VOLT? (@{ch})", meas_amps="MEAS:CURR? (@{ch})", channels=3,
    ),
    "rigol-dp8xx": PsuDialect(
        family="Rigol DP800 series",
        set_volts=":SOUR{ch}:VOLT {:.3f}", get_volts=":SOUR{ch}:VOLT?",
        set_amps=":SOUR{ch}:CURR {:.3f}", get_amps=":SOUR{ch}:CURR?",
        output_on=":OUTP CH{ch},ON", output_off=":OUTP CH{ch},OFF", get_output=":OUTP? CH{ch}",
        meas_volts=":MEAS:VOLT? CH{ch}", meas_amps=":MEAS:CURR? CH{ch}", channels=3,
    ),
    "rs-hmp": PsuDialect(
        family="Rohde & Schwarz HMP series (select the channel, then act on it)",
        set_volts="INST:NSEL {ch};:VOLT {:.3f}", get_volts="INST:NSEL {ch};:VOLT?",
        set_amps="INST:NSEL {ch};:CURR {:.3f}", get_amps="INST:NSEL {ch};:CURR?",
        output_on="INST:NSEL {ch};:OUTP:SEL ON;:OUTP:GEN ON",
        output_off="INST:NSEL {ch};:OUTP:SEL OFF", get_output="INST:NSEL {ch};:OUTP:SEL?",
        meas_volts="INST:NSEL {ch};:MEAS:VOLT?", meas_amps="INST:NSEL {ch};:MEAS:CURR?",
        channels=4,
    ),
    "siglent-spd": PsuDialect(
        family="Siglent SPD3303X / SPD3303X-E",
        set_volts="CH{ch}:VOLT {:.3f}", get_volts="CH{ch}:VOLT?",
        set_amps="CH{ch}:CURR {:.3f}", get_amps="CH{ch}:CURR?",
        output_on="OUTP CH{ch},ON", output_off="OUTP CH{ch},OFF", get_output="SYST:STAT?",
        meas_volts="MEAS:VOLT? CH{ch}", meas_amps="MEAS:CURR? CH{ch}",
        output_is_on=_siglent_status, channels=2,
    ),
})


def _dialect(field: str) -> Callable[[ScpiPowerSupply], str]:
    """Template lookup for :func:`scpi_property`: this supply's dialect row, *field* column."""
    def template(psu: ScpiPowerSupply) -> str:
        return str(getattr(psu.dialect, field))
    template.__name__ = f"dialect.{field}"
    return template


# ----------------------------------------------------------------------------------------------
# Trace
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TracePoint:
    t: float        # time.monotonic()
    kind: str       # "set" | "meas" | "get"
    quantity: str   # "voltage", "current_limit", "output", "rail_volts", "amps"
    value: float
    unit: str


_UNITS = MappingProxyType({"voltage": "V", "current_limit": "A", "output": "",
                           "rail_volts": "V", "amps": "A"})


class ScpiPowerSupply(ScpiInstrument):
    """A SCPI bench supply on an injected transport; *dialect* is a key of :data:`DIALECTS`."""

    voltage = scpi_property(
        _dialect("get_volts"), _dialect("set_volts"),
        limits=lambda psu: (0.0, psu.max_volts), limit_key=MAX_VOLTS_KEY,
        doc="Output voltage setpoint (V).")
    current_limit = scpi_property(
        _dialect("get_amps"), _dialect("set_amps"),
        limits=lambda psu: (0.0, psu.max_amps), limit_key=MAX_AMPS_KEY,
        doc="Output current limit (A).")

    def __init__(self, name: str, transport: ScpiTransport, *, max_volts: float,
                 max_amps: float, nominal_volts: float, dialect: str = "keysight-e36xx",
                 channel: int = 1) -> None:
        super().__init__(name, transport)
        if dialect not in DIALECTS:
            raise ConfigError(f"ScpiPowerSupply({name}): power.dialect {dialect!r} unknown; "
                              f"expected one of {sorted(DIALECTS)}")
        self.dialect = DIALECTS[dialect]
        self.dialect_name = dialect
        if not 1 <= channel <= self.dialect.channels:
            raise ConfigError(f"ScpiPowerSupply({name}): power.channel {channel} outside "
                              f"1..{self.dialect.channels} for dialect {dialect!r}")
        for key, value in ((MAX_VOLTS_KEY, max_volts), (MAX_AMPS_KEY, max_amps)):
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"ScpiPowerSupply({name}): {key} must be > 0, got {value!r}")
        self.max_volts = float(max_volts)
        self.max_amps = float(max_amps)
        if not (math.isfinite(nominal_volts) and 0 < nominal_volts <= self.max_volts):
            raise ConfigError(f"ScpiPowerSupply({name}): terminal.nominal_volts {nominal_volts!r}"
                              f" must be > 0 and within {MAX_VOLTS_KEY} ({self.max_volts:g} V)")
        self.nominal_volts = float(nominal_volts)
        """What nominal means for this supply: output on at this voltage (the healthy battery)."""
        self.channel = channel
        self.scpi_fields: Mapping[str, object] = MappingProxyType({"ch": channel})
        self.trace: list[TracePoint] = []
        self._sampler: tuple[threading.Event, threading.Thread] | None = None

    # -- session --------------------------------------------------------------------------
    def open(self) -> None:
        super().open()
        logger.info("%r: dialect %s", self, self.dialect_name)

    # -- evidence -------------------------------------------------------------------------
    def scpi_observe(self, name: str, kind: str, value: object) -> None:
        """Hook of :func:`rigs.scpi.scpi_property`: record settings read or written."""
        self._record(kind, name, float(value))  # type: ignore[arg-type]

    def _record(self, kind: str, quantity: str, value: float) -> None:
        unit = _UNITS.get(quantity, "")
        self.trace.append(TracePoint(time.monotonic(), kind, quantity, value, unit))
        if kind == "set":
            shown = ("on" if value else "off") if quantity == "output" else f"{value:g} {unit}"
            self.event_sink.publish(Source.POWER, "set", quantity, shown,
                                    data={quantity: value})

    def clear_trace(self) -> None:
        """Start a new trace (per scenario)."""
        self.trace.clear()

    def start_sampling(self, period_s: float = 0.1) -> None:
        """Measure voltage and current every *period_s* into the trace until
        :meth:`stop_sampling` (the report's V/I-over-time evidence)."""
        self.require_open("start_sampling")
        self.stop_sampling()
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(period_s):
                try:
                    volts = self.measure_voltage()
                    amps = self.measure_current()
                    self.event_sink.publish(Source.POWER, "sample", "supply",
                                            f"{volts:.2f} V {amps:.3f} A",
                                            data={"volts": volts, "amps": amps})
                except RigError as exc:  # the trace says so; the scenario's own calls will fail
                    self._record("sample-error", "none", math.nan)
                    logger.warning("%r: trace sampling: %s", self, exc)
                    return

        self._sampler = (stop, threading.Thread(target=sample, name=f"{self.name}-trace",
                                                daemon=True))
        self._sampler[1].start()

    def close(self) -> None:
        self.stop_sampling()
        super().close()

    def stop_sampling(self, bound_s: float = 3.0) -> None:
        sampler, self._sampler = self._sampler, None
        if sampler is not None:
            sampler[0].set()
            sampler[1].join(timeout=bound_s)

    def trace_csv(self) -> str:
        """The trace as CSV (``t_monotonic_s,kind,quantity,value,unit``) for the report."""
        lines = ["t_monotonic_s,kind,quantity,value,unit"]
        lines += [f"{p.t:.6f},{p.kind},{p.quantity},{p.value:.6g},{p.unit}" for p in self.trace]
        return "\n".join(lines) + "\n"

    # -- setpoints ------------------------------------------------------------------------
    def set_voltage(self, volts: float) -> None:
        """Program the output voltage; refused (nothing sent) above ``power.limits.max_volts``."""
        self.require_open("set_voltage")
        self.voltage = volts
        self.wait_complete("set_voltage")

    def sag_to(self, volts: float) -> None:
        """Same as :meth:`set_voltage`; reads better in a brown-out step.  Returns once the
        instrument has executed it (``*OPC?``), so the fault is in place."""
        self.require_open("sag_to")
        self.voltage = volts
        self.wait_complete("sag_to")

    def set_current_limit(self, amps: float) -> None:
        """Program the current limit; refused (nothing sent) above ``power.limits.max_amps``."""
        self.require_open("set_current_limit")
        self.current_limit = amps
        self.wait_complete("set_current_limit")

    def output_on(self) -> None:
        self.require_open("output_on")
        self.transport.write(self._cmd(self.dialect.output_on))
        self.wait_complete("output_on")
        self._record("set", "output", 1.0)

    def output_off(self) -> None:
        self.require_open("output_off")
        self.transport.write(self._cmd(self.dialect.output_off))
        self.wait_complete("output_off")
        self._record("set", "output", 0.0)

    @property
    def output(self) -> bool:
        """Whether the output is on (asked from the instrument)."""
        self.require_open("output")
        answer = self.transport.query(self._cmd(self.dialect.get_output))
        try:
            return self.dialect.output_is_on(answer, self.channel)
        except ValueError as exc:
            raise TransportError(f"{self!r}: output state answer {answer!r} not understood "
                                 f"({self.dialect_name})") from exc

    # -- measurements ---------------------------------------------------------------------
    def measure_voltage(self) -> float:
        """Voltage at the output terminals (V)."""
        self.require_open("measure_voltage")
        value = self._query_float(self.dialect.meas_volts)
        self._record("meas", "rail_volts", value)
        return value

    def measure_current(self) -> float:
        """Current drawn by the terminal (A)."""
        self.require_open("measure_current")
        value = self._query_float(self.dialect.meas_amps)
        self._record("meas", "amps", value)
        return value

    # -- errors and nominal state ---------------------------------------------------------
    def is_nominal(self, tolerance: float = 0.02) -> bool:
        """Output on, setpoint at :attr:`nominal_volts`, rail within *tolerance* (relative) of
        it (not in current limit), error queue empty."""
        self.require_open("is_nominal")
        nominal_volts = self.nominal_volts
        if not self.output:
            return False
        if abs(self.voltage - nominal_volts) > 0.0005:
            return False
        if abs(self.measure_voltage() - nominal_volts) > tolerance * nominal_volts:
            return False
        return not read_error_queue(self.transport, repr(self))

    def restore_nominal(self) -> None:
        """Clear errors, current limit back to ``power.limits.max_amps``, :attr:`nominal_volts`,
        output on, then check the instrument accepted all of it."""
        self.require_open("restore_nominal")
        nominal_volts = self.nominal_volts
        if nominal_volts > self.max_volts:  # checked at construction; kept as a last guard
            raise LimitError(f"{self!r}: restore_nominal({nominal_volts:g} V) refused: above the "
                             f"limit {self.max_volts:g} V (bench YAML {MAX_VOLTS_KEY}); "
                             f"nothing was sent")
        self.transport.write("*CLS")
        self.current_limit = self.max_amps
        self.voltage = nominal_volts
        self.output_on()
        self.check_errors()

    # -- helpers --------------------------------------------------------------------------
    def _cmd(self, template: str) -> str:
        return template.format(**self.scpi_fields)

    def _query_float(self, template: str) -> float:
        cmd = self._cmd(template)
        answer = self.transport.query(cmd)
        try:
            return float(answer)
        except ValueError as exc:
            raise TransportError(f"{self!r}: {cmd!r} answered {answer!r}, not a number") from exc

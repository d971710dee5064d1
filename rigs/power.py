"""The bench power supply that stands in for the terminal's battery.

:class:`rigs.interfaces.PowerSupply` is the interface the bench façade and the steps use;
:class:`ScpiPowerSupply` drives any SCPI bench supply through an injected
:class:`rigs.scpi.ScpiTransport`.  The instrument families differ only in command spelling, kept
as data in :data:`DIALECTS` (one :class:`PsuDialect` row per family).

Safety: every setpoint is checked against the bench's limits (``power.limits.max_volts`` /
``power.limits.max_amps`` in the bench YAML) *before* anything is sent; a refused setpoint raises
:class:`rigs.errors.LimitError` and the instrument never sees it.

Evidence: every setpoint and measurement lands in :attr:`ScpiPowerSupply.trace` with a
timestamp of the supply's :class:`Clock` (``time.monotonic()`` unless a test injects another);
:meth:`ScpiPowerSupply.trace_csv` renders it for the report.

Sequences (the power faults) are the only code; each command they send is a dialect template:

* :meth:`ScpiPowerSupply.ramp_to` (a battery running flat): a background thread sends one
  setpoint every ``step_ms`` on a schedule computed from one start time (:class:`RampPlan`, no
  drift); :meth:`~ScpiPowerSupply.wait_ramp` and :meth:`~ScpiPowerSupply.stop_ramp` end it and
  re-raise, as :class:`RampError`, whatever killed the thread;
* :meth:`ScpiPowerSupply.dip` (a brown-out): down, hold, back to the setpoint before the dip;
* :meth:`ScpiPowerSupply.power_cycle`: output off, hold, output on.

Any new setpoint (``set_voltage``, ``sag_to``, ``dip``, another ``ramp_to``) and
``restore_nominal`` / ``close`` stop a running ramp first, so two writers never fight over the
setpoint.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

from protocols.scpi import parse_number
from rigs.errors import (
    ConfigError,
    DecodeError,
    LimitError,
    NoResponse,
    RampError,
    RigError,
    TransportError,
)
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
    """SPD3303X ``SYST:STAT?`` is a hex word (``0x`` optional, at most 8 hex digits); bit 4 is
    CH1's output, bit 5 CH2's.  Anything else is a ValueError (the caller names the answer)."""
    m = _HEX_WORD_RE.match(answer.strip(" \t\r\n"))
    if m is None:
        raise ValueError(f"{answer[:40]!r} is not a hex word of 1-8 digits")
    return bool((int(m.group(1), 16) >> (3 + channel)) & 1)


_HEX_WORD_RE = re.compile(r"^(?:0[xX])?([0-9A-Fa-f]{1,8})$")


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
    t: float        # the supply's clock (time.monotonic() by default)
    kind: str       # "set" | "meas" | "get"
    quantity: str   # "voltage", "current_limit", "output", "rail_volts", "amps"
    value: float
    unit: str


_UNITS = MappingProxyType({"voltage": "V", "current_limit": "A", "output": "",
                           "rail_volts": "V", "amps": "A"})


# ----------------------------------------------------------------------------------------------
# Time and ramps
# ----------------------------------------------------------------------------------------------

class Clock(Protocol):
    """Where the supply's sequences read the time and wait (tests inject a virtual one)."""

    def now(self) -> float:
        """Monotonic seconds."""
        ...

    def wait(self, event: threading.Event, timeout: float) -> bool:
        """Wait up to *timeout* s for *event*; True if it is set."""
        ...


class MonotonicClock:
    """The real clock: ``time.monotonic()`` and ``threading.Event.wait``."""

    def now(self) -> float:
        return time.monotonic()

    def wait(self, event: threading.Event, timeout: float) -> bool:
        return event.wait(timeout)


MONOTONIC: Clock = MonotonicClock()


@dataclass(frozen=True)
class RampPlan:
    """The setpoints of a ramp and when each is due: setpoint *k* (1..:attr:`steps`) at
    ``k · step_s`` after the start, on the line from *start* at *volts_per_s*; the last one is
    *to* exactly, at the ramp's end (:attr:`duration_s`, so the slope holds when the duration is
    not a whole number of steps)."""

    start: float
    to: float
    volts_per_s: float
    step_s: float

    @property
    def duration_s(self) -> float:
        return abs(self.to - self.start) / self.volts_per_s

    @property
    def steps(self) -> int:
        return max(1, math.ceil(self.duration_s / self.step_s - 1e-9))

    def at(self, k: int) -> tuple[float, float]:
        """``(seconds after the start, volts)`` of setpoint *k*."""
        if k >= self.steps:
            return self.duration_s, self.to
        offset = k * self.step_s
        return offset, round(self.start + math.copysign(self.volts_per_s * offset,
                                                        self.to - self.start), 6)

    def __str__(self) -> str:
        return (f"ramp from {self.start:g} V to {self.to:g} V at {self.volts_per_s:g} V/s "
                f"({self.step_s * 1000:g} ms steps)")


@dataclass
class _Ramp:
    """A running ramp: its plan, its thread and what the thread got to (written by the thread)."""

    plan: RampPlan
    t0: float
    stop: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    current: int = 0          # setpoint being sent (1-based); 0 before the first
    sent: int = 0             # setpoints the instrument confirmed
    skipped: int = 0          # setpoints passed over because the ramp ran late
    error: Exception | None = None


class ScpiPowerSupply(ScpiInstrument):
    """A SCPI bench supply on an injected transport; *dialect* is a key of :data:`DIALECTS`.
    *clock* times the sequences (ramps, dips, power cycles) and stamps the trace."""

    voltage = scpi_property(
        _dialect("get_volts"), _dialect("set_volts"),
        limits=lambda psu: psu.volt_limits, limit_key=MAX_VOLTS_KEY,
        doc="Output voltage setpoint (V).")
    current_limit = scpi_property(
        _dialect("get_amps"), _dialect("set_amps"),
        limits=lambda psu: (0.0, psu.max_amps), limit_key=MAX_AMPS_KEY,
        doc="Output current limit (A).")

    def __init__(self, name: str, transport: ScpiTransport, *, max_volts: float,
                 max_amps: float, nominal_volts: float, dialect: str = "keysight-e36xx",
                 channel: int = 1, clock: Clock = MONOTONIC) -> None:
        super().__init__(name, transport)
        self.clock = clock
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
        self._ramp: _Ramp | None = None

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
        self.trace.append(TracePoint(self.clock.now(), kind, quantity, value, unit))
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
            while True:  # one sample at once, then one every period until stopped
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
                if stop.wait(period_s):
                    return

        self._sampler = (stop, threading.Thread(target=sample, name=f"{self.name}-trace",
                                                daemon=True))
        self._sampler[1].start()

    def close(self) -> None:
        """Stop a running ramp (raising what killed it, after closing) and the sampler, then
        close the session."""
        try:
            self.stop_ramp()
        finally:
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
        """Program the output voltage; refused (nothing sent) above ``power.limits.max_volts``.
        A running ramp is stopped first."""
        self.require_open("set_voltage")
        self.stop_ramp()
        self._program_volts(volts, "set_voltage")

    def sag_to(self, volts: float) -> None:
        """Same as :meth:`set_voltage`; reads better in a brown-out step.  Returns once the
        instrument has executed it (``*OPC?``), so the fault is in place."""
        self.require_open("sag_to")
        self.stop_ramp()
        self._program_volts(volts, "sag_to")

    def _program_volts(self, volts: float, operation: str) -> None:
        """The one path of every voltage setpoint: limit check, the dialect's command, the
        trace and the ``set`` event (:meth:`scpi_observe`), then ``*OPC?``."""
        self.voltage = volts
        self.wait_complete(operation)

    @property
    def volt_limits(self) -> tuple[float, float]:
        """The setpoints this bench allows (V): ``0 .. power.limits.max_volts``."""
        return 0.0, self.max_volts

    def _check_volts(self, volts: float, operation: str) -> None:
        """Refuse (LimitError, nothing sent) a setpoint outside :attr:`volt_limits`; for a
        sequence, before its first command (the :attr:`voltage` property checks each again)."""
        lo, hi = self.volt_limits
        if not (math.isfinite(volts) and lo <= volts <= hi):
            side = (f"above the limit {hi:g}" if volts > hi else
                    f"below the limit {lo:g}" if volts < lo else "not a number")
            raise LimitError(f"{self!r}: {operation}(): voltage = {volts:g} refused: {side} "
                             f"(bench YAML {MAX_VOLTS_KEY}); allowed {lo:g}..{hi:g}; "
                             f"nothing was sent")

    def _positive(self, operation: str, name: str, value: float) -> float:
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"{self!r}: {operation}(): {name} must be > 0, got {value!r}")
        return float(value)

    # -- power faults ---------------------------------------------------------------------
    def ramp_to(self, to_volts: float, volts_per_s: float, step_ms: float = 100.0) -> None:
        """Start ramping from the present setpoint (asked, ``VOLT?``) to *to_volts* at
        *volts_per_s*, one setpoint every *step_ms* (the last one *to_volts* exactly), in a
        background thread; returns at once.  Both ends are checked against the limits before
        anything is sent, every setpoint again as it is sent.  A running ramp is stopped first.
        A ramp that falls a whole step behind (a slow instrument) skips to the setpoint due, so
        the slope holds.  End it with :meth:`wait_ramp` or :meth:`stop_ramp`."""
        self.require_open("ramp_to")
        rate = self._positive("ramp_to", "volts_per_s", volts_per_s)
        step_s = self._positive("ramp_to", "step_ms", step_ms) / 1000.0
        self._check_volts(to_volts, "ramp_to")
        self.stop_ramp()
        plan = RampPlan(self.voltage, float(to_volts), rate, step_s)
        self._check_volts(plan.at(1)[1], "ramp_to")  # every setpoint lies between the two
        ramp = _Ramp(plan, self.clock.now())
        ramp.thread = threading.Thread(target=self._run_ramp, args=(ramp,),
                                       name=f"{self.name}-ramp", daemon=True)
        self._ramp = ramp
        ramp.thread.start()
        logger.info("%r: %s started (%d setpoints)", self, plan, plan.steps)

    def _run_ramp(self, ramp: _Ramp) -> None:
        plan = ramp.plan
        try:
            k = 0
            while k < plan.steps:
                k += 1
                due = ramp.t0 + plan.at(k)[0]
                if self.clock.wait(ramp.stop, max(0.0, due - self.clock.now())):
                    return
                now = self.clock.now()
                while k < plan.steps and ramp.t0 + plan.at(k + 1)[0] <= now:
                    k += 1
                    ramp.skipped += 1
                ramp.current, volts = k, plan.at(k)[1]
                self._program_volts(volts, "ramp_to")
                ramp.sent = k
        except Exception as exc:  # kept for stop_ramp / wait_ramp, which raise it
            ramp.error = exc
            logger.error("%r: %s failed at setpoint %d/%d: %s", self, plan, ramp.current,
                         plan.steps, exc)
        finally:
            if ramp.skipped:
                logger.warning("%r: %s ran late; %d setpoint(s) skipped", self, plan,
                               ramp.skipped)
            ramp.done.set()

    @property
    def ramping(self) -> bool:
        """Whether a ramp is under way (started and not yet at its end, stopped or failed)."""
        return self._ramp is not None and not self._ramp.done.is_set()

    def stop_ramp(self, bound_s: float = 3.0) -> None:
        """Stop the ramp (if any) and wait up to *bound_s* for its thread; raise
        :class:`RampError` if an error had killed it (even when it had already ended)."""
        ramp = self._ramp
        if ramp is None:
            return
        ramp.stop.set()
        assert ramp.thread is not None
        ramp.thread.join(bound_s)
        if ramp.thread.is_alive():
            raise NoResponse(f"{self!r}: stop_ramp(): the {ramp.plan} did not stop within "
                             f"{bound_s:g} s (setpoint {ramp.current}/{ramp.plan.steps} still "
                             f"being sent)")
        self._ramp = None
        if ramp.sent < ramp.plan.steps and ramp.error is None:
            logger.info("%r: %s stopped after %d/%d setpoints", self, ramp.plan, ramp.sent,
                        ramp.plan.steps)
        self._raise_ramp_error(ramp)

    def wait_ramp(self, timeout: float) -> None:
        """Wait up to *timeout* s for the ramp to reach its end (NoResponse naming the bound if
        it has not); raise :class:`RampError` if it failed.  Returns at once with no ramp."""
        ramp = self._ramp
        if ramp is None:
            return
        if not ramp.done.wait(timeout):
            raise NoResponse(f"{self!r}: wait_ramp(): the {ramp.plan} did not reach its end "
                             f"within {timeout:g} s ({ramp.sent}/{ramp.plan.steps} setpoints "
                             f"sent)")
        assert ramp.thread is not None
        ramp.thread.join(timeout)  # done is the thread's last act
        self._ramp = None
        self._raise_ramp_error(ramp)

    def _raise_ramp_error(self, ramp: _Ramp) -> None:
        exc = ramp.error
        if exc is not None:
            volts = ramp.plan.at(ramp.current)[1]
            raise RampError(f"{self!r}: the {ramp.plan} failed at setpoint {ramp.current}/"
                            f"{ramp.plan.steps} ({volts:g} V): {type(exc).__name__}: {exc}"
                            ) from exc

    def dip(self, volts: float, ms: float) -> float:
        """A brown-out: set *volts*, hold *ms*, set back the setpoint from before the dip
        (asked, ``VOLT?``); synchronous, each setpoint confirmed (``*OPC?``).  Both setpoints
        are checked against the limits before the first is sent.  A running ramp is stopped
        first.  Returns the seconds the rail was certainly low: from the instrument confirming
        the dip to the command that ends it (at least *ms*)."""
        self.require_open("dip")
        hold_s = self._positive("dip", "ms", ms) / 1000.0
        self._check_volts(volts, "dip")
        self.stop_ramp()
        back = self.voltage
        self._check_volts(back, "dip")
        self._program_volts(volts, "dip")
        low_from = self.clock.now()
        self.clock.wait(threading.Event(), hold_s)
        low_s = self.clock.now() - low_from
        self._program_volts(back, "dip")
        return low_s

    def power_cycle(self, off_ms: float) -> float:
        """Output off, hold *off_ms*, output on; synchronous, each step confirmed (``*OPC?``).
        Returns the seconds the output was certainly off (at least *off_ms*).  A running ramp
        is left running (it is a setpoint, not the output)."""
        self.require_open("power_cycle")
        hold_s = self._positive("power_cycle", "off_ms", off_ms) / 1000.0
        self.output_off()
        off_from = self.clock.now()
        self.clock.wait(threading.Event(), hold_s)
        off_s = self.clock.now() - off_from
        self.output_on()
        return off_s

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
        it (not in current limit), error queue empty, no ramp under way."""
        self.require_open("is_nominal")
        if self.ramping:
            return False
        nominal_volts = self.nominal_volts
        if not self.output:
            return False
        if abs(self.voltage - nominal_volts) > 0.0005:
            return False
        if abs(self.measure_voltage() - nominal_volts) > tolerance * nominal_volts:
            return False
        return not read_error_queue(self.transport, repr(self))

    def restore_nominal(self) -> None:
        """Stop a running ramp, clear errors, current limit back to ``power.limits.max_amps``,
        :attr:`nominal_volts`, output on, then check the instrument accepted all of it.  A ramp
        that had failed is raised (:class:`RampError`) after the supply is restored."""
        self.require_open("restore_nominal")
        try:
            self.stop_ramp()
        except RampError:
            self._restore()  # the supply back at nominal first; a failure here chains to it
            raise
        self._restore()

    def _restore(self) -> None:
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
            return parse_number(answer, f"{cmd!r} answer")
        except DecodeError as exc:
            raise TransportError(f"{self!r}: {cmd!r} answered {answer[:80]!r}, not a number "
                                 f"({exc})") from exc

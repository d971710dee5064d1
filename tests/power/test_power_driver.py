"""rigs.power.ScpiPowerSupply against FakeScpiTransport: exact SCPI strings, in order."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping

import pytest

from rigs.errors import (
    ConfigError,
    DeviceStateError,
    InstrumentError,
    LimitError,
    NoResponse,
    RampError,
    RigError,
    TransportError,
)
from rigs.events import Source
from rigs.interfaces import PowerSupply
from rigs.power import DIALECTS, RampPlan, ScpiPowerSupply
from rigs.scpi import FakeScpiTransport

IDN = "Keysight Technologies,E36103B,MY00000001,2.1.0"
OPEN = [("*IDN?", IDN), ("*CLS", None)]


def make(script: list[tuple[str, str | None | BaseException]], dialect: str = "keysight-e36xx",
         channel: int = 1) -> tuple[ScpiPowerSupply, FakeScpiTransport]:
    fake = FakeScpiTransport(OPEN + script)
    psu = ScpiPowerSupply("psu", fake, max_volts=8.4, max_amps=2.0, nominal_volts=7.4,
                          dialect=dialect, channel=channel)
    psu.open()
    return psu, fake


def test_open_identifies_and_clears_errors() -> None:
    psu, fake = make([])
    as_interface: PowerSupply = psu  # mypy checks ScpiPowerSupply satisfies the interface
    assert as_interface.name == "psu"
    assert psu.idn == IDN
    fake.assert_done()


def test_keysight_session_exact_commands() -> None:
    psu, fake = make([
        ("CURR 2.000", None),
        ("*OPC?", "1"),
        ("VOLT 7.400", None),
        ("*OPC?", "1"),
        ("OUTP ON", None),
        ("*OPC?", "1"),
        ("OUTP?", "1"),
        ("VOLT?", "+7.40000000E+00"),
        ("MEAS:VOLT?", "+7.40000000E+00"),
        ("MEAS:CURR?", "+1.20000000E-01"),
        ("VOLT 6.500", None),
        ("*OPC?", "1"),
        ("OUTP OFF", None),
        ("*OPC?", "1"),
        ("SYST:ERR?", '+0,"No error"'),
    ])
    psu.set_current_limit(2.0)
    psu.set_voltage(7.4)
    psu.output_on()
    assert psu.output is True
    assert psu.voltage == 7.4
    assert psu.measure_voltage() == 7.4
    assert psu.measure_current() == 0.12
    psu.sag_to(6.5)
    psu.output_off()
    psu.check_errors()
    fake.assert_done()


@pytest.mark.parametrize(("call", "value", "match"), [
    ("set_voltage", 8.41, r"voltage = 8.41 refused: above the limit 8.4 \(bench YAML "
                          r"power.limits.max_volts\).*nothing was sent"),
    ("sag_to", 9.0, r"power.limits.max_volts"),
    ("set_voltage", -0.5, r"voltage = -0.5 refused: below the limit 0"),
    ("set_current_limit", 2.5, r"current_limit = 2.5 refused: above the limit 2 \(bench YAML "
                               r"power.limits.max_amps\)"),
])
def test_limits_refused_before_sending(call: str, value: float, match: str) -> None:
    psu, fake = make([])
    with pytest.raises(LimitError, match=match):
        getattr(psu, call)(value)
    assert fake.sent == ["*IDN?", "*CLS"]  # nothing after open
    assert psu.trace == []
    fake.assert_done()


def test_limit_is_inclusive() -> None:
    psu, fake = make([("VOLT 8.400", None), ("*OPC?", "1")])
    psu.set_voltage(8.4)
    fake.assert_done()


def test_closed_session_refused_with_state() -> None:
    fake = FakeScpiTransport([])
    psu = ScpiPowerSupply("psu1", fake, max_volts=8.4, max_amps=2.0, nominal_volts=7.4)
    with pytest.raises(DeviceStateError,
                       match=r"^ScpiPowerSupply\(psu1\): set_voltage\(\) needs an open session; "
                             r"state is CLOSED$"):
        psu.set_voltage(7.4)
    with pytest.raises(DeviceStateError, match=r"measure_voltage\(\) needs an open session"):
        psu.measure_voltage()
    assert fake.sent == []


def test_check_errors_lists_all_then_raises() -> None:
    psu, fake = make([
        ("SYST:ERR?", '-222,"Data out of range"'),
        ("SYST:ERR?", '-113,"Undefined header"'),
        ("SYST:ERR?", '+0,"No error"'),
    ])
    with pytest.raises(InstrumentError,
                       match=r"ScpiPowerSupply\(psu\): instrument reported 2 error\(s\): "
                             r"-222 Data out of range; -113 Undefined header"):
        psu.check_errors()
    fake.assert_done()


def test_error_queue_that_never_empties_is_bounded() -> None:
    psu, fake = make([("SYST:ERR?", '-100,"Command error"')] * 32)
    with pytest.raises(TransportError, match="still reporting errors after 32 reads"):
        psu.check_errors()
    fake.assert_done()


def test_silent_instrument_surfaces_no_response() -> None:
    psu, fake = make([("MEAS:VOLT?", NoResponse("fake: no answer within 2000 ms"))])
    with pytest.raises(NoResponse, match="2000 ms"):
        psu.measure_voltage()
    fake.assert_done()


def test_garbage_measurement_is_named() -> None:
    psu, fake = make([("MEAS:VOLT?", "OVP")])
    with pytest.raises(TransportError, match=r"'MEAS:VOLT\?' answered 'OVP', not a number"):
        psu.measure_voltage()


def test_rigol_dialect_strings() -> None:
    psu, fake = make([
        (":SOUR2:VOLT 7.400", None),
        ("*OPC?", "1"),
        (":SOUR2:CURR 1.500", None),
        ("*OPC?", "1"),
        (":OUTP CH2,ON", None),
        ("*OPC?", "1"),
        (":OUTP? CH2", "ON"),
        (":SOUR2:VOLT?", "7.400"),
        (":MEAS:VOLT? CH2", "7.398"),
        (":MEAS:CURR? CH2", "0.121"),
        (":OUTP CH2,OFF", None),
        ("*OPC?", "1"),
        (":OUTP? CH2", "OFF"),
    ], dialect="rigol-dp8xx", channel=2)
    psu.set_voltage(7.4)
    psu.set_current_limit(1.5)
    psu.output_on()
    assert psu.output is True
    assert psu.voltage == 7.4
    assert psu.measure_voltage() == 7.398
    assert psu.measure_current() == 0.121
    psu.output_off()
    assert psu.output is False
    fake.assert_done()


def test_rs_hmp_selects_channel_first() -> None:
    psu, fake = make([
        ("INST:NSEL 1;:VOLT 7.400", None),
        ("*OPC?", "1"),
        ("INST:NSEL 1;:OUTP:SEL ON;:OUTP:GEN ON", None),
        ("*OPC?", "1"),
        ("INST:NSEL 1;:MEAS:VOLT?", "7.400"),
    ], dialect="rs-hmp")
    psu.set_voltage(7.4)
    psu.output_on()
    assert psu.measure_voltage() == 7.4
    fake.assert_done()


@pytest.mark.parametrize(("status", "on"), [("0x0010", True), ("0x0020", False), ("0x0000", False)])
def test_siglent_output_from_status_word(status: str, on: bool) -> None:
    psu, fake = make([("CH1:VOLT 7.400", None), ("*OPC?", "1"), ("SYST:STAT?", status)],
                     dialect="siglent-spd")
    psu.set_voltage(7.4)
    assert psu.output is on
    fake.assert_done()


def test_every_dialect_renders_every_template() -> None:
    for name, dialect in DIALECTS.items():
        for field in ("set_volts", "set_amps"):
            rendered = getattr(dialect, field).format(1.5, ch=1)
            assert "1.500" in rendered and "{" not in rendered, (name, field)
        for field in ("get_volts", "get_amps", "output_on", "output_off", "get_output",
                      "meas_volts", "meas_amps"):
            assert "{" not in getattr(dialect, field).format(ch=1), (name, field)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"dialect": "agilent-6612"}, r"power.dialect 'agilent-6612' unknown; expected one of"),
    ({"channel": 2}, r"power.channel 2 outside 1..1"),
    ({"max_volts": 0.0}, r"power.limits.max_volts must be > 0"),
    ({"nominal_volts": 9.0}, r"terminal.nominal_volts 9.0 must be > 0 and within "
                             r"power.limits.max_volts \(8.4 V\)"),
])
def test_bad_config(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"max_volts": 8.4, "max_amps": 2.0, "nominal_volts": 7.4, **kwargs}
    with pytest.raises(ConfigError, match=match):
        ScpiPowerSupply("psu", FakeScpiTransport([]), **args)  # type: ignore[arg-type]


def test_restore_and_is_nominal() -> None:
    psu, fake = make([
        ("*CLS", None),
        ("CURR 2.000", None),
        ("VOLT 7.400", None),
        ("OUTP ON", None),
        ("*OPC?", "1"),
        ("SYST:ERR?", '+0,"No error"'),
        ("OUTP?", "1"),
        ("VOLT?", "+7.40000000E+00"),
        ("MEAS:VOLT?", "+7.40000000E+00"),
        ("SYST:ERR?", '+0,"No error"'),
        ("OUTP?", "1"),
        ("VOLT?", "+7.40000000E+00"),
        ("MEAS:VOLT?", "+6.00000000E+00"),  # in current limit: not nominal
    ])
    psu.restore_nominal()
    assert psu.is_nominal() is True
    assert psu.is_nominal() is False
    fake.assert_done()


def test_nominal_above_limit_refused_before_anything_is_sent() -> None:
    fake = FakeScpiTransport([])
    with pytest.raises(ConfigError, match="power.limits.max_volts"):
        ScpiPowerSupply("psu", fake, max_volts=8.4, max_amps=2.0, nominal_volts=9.0)
    assert fake.sent == []


def test_trace_csv() -> None:
    psu, fake = make([("VOLT 7.400", None), ("*OPC?", "1"), ("OUTP ON", None), ("*OPC?", "+1"),
                      ("MEAS:VOLT?", "+7.39E+00")])
    psu.set_voltage(7.4)
    psu.output_on()
    psu.measure_voltage()
    lines = psu.trace_csv().splitlines()
    assert lines[0] == "t_monotonic_s,kind,quantity,value,unit"
    rows = [line.split(",")[1:] for line in lines[1:]]
    assert rows == [["set", "voltage", "7.4", "V"], ["set", "output", "1", ""],
                    ["meas", "rail_volts", "7.39", "V"]]
    times = [float(line.split(",")[0]) for line in lines[1:]]
    assert times == sorted(times)
    fake.assert_done()


def test_fault_returns_only_once_the_instrument_confirms() -> None:
    """sag_to() waits for ``*OPC?``: the CI race where the sim still held the old setpoint after
    sag_to() returned cannot happen; an odd answer to ``*OPC?`` is named."""
    psu, fake = make([("VOLT 5.900", None), ("*OPC?", "0")])
    with pytest.raises(TransportError, match=r"sag_to: '\*OPC\?' answered '0'; expected 1"):
        psu.sag_to(5.9)
    fake.assert_done()


# -- power faults: ramp, dip, power cycle -------------------------------------------------------

class FakeClock:
    """Virtual time for the supply's sequences.  ``wait`` returns at once with the time moved
    on by *timeout*, unless the event is set.  A wait that would pass :attr:`hold_at` parks
    instead (:attr:`parked` is set) until the event is set or :meth:`release` is called, so a
    test acts while a ramp sits between two setpoints; parked for 5 s is a failure."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t
        self.hold_at: float | None = None
        self.parked = threading.Event()
        self._released = threading.Event()
        self.waits: list[float] = []

    def now(self) -> float:
        return self.t

    def wait(self, event: threading.Event, timeout: float) -> bool:
        self.waits.append(timeout)
        if event.is_set():
            return True
        if self.hold_at is not None and self.t + timeout >= self.hold_at:
            self.parked.set()
            deadline = time.monotonic() + 5.0
            while not event.is_set() and not self._released.is_set():
                if time.monotonic() > deadline:
                    raise AssertionError("FakeClock: parked 5 s; the test neither stopped nor "
                                         "released the ramp")
                event.wait(0.002)
            if event.is_set():
                return True
        self.t += timeout
        return False

    def release(self) -> None:
        self.hold_at = None
        self._released.set()


class RecordingSink:
    def __init__(self) -> None:
        self.events: list[tuple[Source, str, str, Mapping[str, object] | None]] = []

    def publish(self, source: Source, kind: str, name: str, detail: str = "", *,
                t: float | None = None, data: Mapping[str, object] | None = None) -> None:
        self.events.append((source, kind, name, data))


def make_timed(script: list[tuple[str, str | None | BaseException]],
               dialect: str = "keysight-e36xx", transport: object = None
               ) -> tuple[ScpiPowerSupply, FakeScpiTransport, FakeClock]:
    fake = FakeScpiTransport(OPEN + script)
    clock = FakeClock()
    psu = ScpiPowerSupply("psu", transport or fake,  # type: ignore[arg-type]
                          max_volts=8.4, max_amps=2.0, nominal_volts=7.4, dialect=dialect,
                          clock=clock)
    psu.open()
    return psu, fake, clock


def setpoints(*volts: float, cmd: str = "VOLT {:.3f}") -> list[tuple[str, str | None]]:
    """Each setpoint as the driver sends it: the command, then ``*OPC?``."""
    out: list[tuple[str, str | None]] = []
    for v in volts:
        out += [(cmd.format(v), None), ("*OPC?", "1")]
    return out


def until(condition: Callable[[], bool], bound_s: float = 2.0) -> None:
    deadline = time.monotonic() + bound_s
    while not condition():
        assert time.monotonic() < deadline, f"condition not met within {bound_s} s"
        threading.Event().wait(0.002)


RAMP_DOWN = (7.2, 7.0, 6.8, 6.6, 6.4, 6.2, 6.0)  # 7.4 V -> 6.0 V at 2 V/s, 100 ms steps


def test_ramp_exact_setpoints_schedule_and_events() -> None:
    psu, fake, clock = make_timed([("VOLT?", "+7.40000000E+00"), *setpoints(*RAMP_DOWN)])
    sink = RecordingSink()
    psu.event_sink = sink
    t0 = clock.t
    psu.ramp_to(6.0, volts_per_s=2.0, step_ms=100.0)
    psu.wait_ramp(2.0)
    fake.assert_done()
    assert fake.sent[-2:] == ["VOLT 6.000", "*OPC?"]  # the last setpoint is to_volts exactly
    assert not psu.ramping
    sets = [p for p in psu.trace if p.kind == "set"]
    assert [p.value for p in sets] == list(RAMP_DOWN)
    assert [round(p.t - t0, 9) for p in sets] == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    assert [e[3] for e in sink.events] == [{"voltage": v} for v in RAMP_DOWN]
    assert all(e[:3] == (Source.POWER, "set", "voltage") for e in sink.events)
    psu.wait_ramp(0.0)  # nothing left to wait for


def test_ramp_up_ends_exactly_on_target_when_not_a_whole_number_of_steps() -> None:
    psu, fake, clock = make_timed([("VOLT?", "7.000"), *setpoints(7.1, 7.2, 7.25)])
    t0 = clock.t
    psu.ramp_to(7.25, volts_per_s=1.0)
    psu.wait_ramp(2.0)
    fake.assert_done()
    assert [round(p.t - t0, 9) for p in psu.trace if p.kind == "set"] == [0.1, 0.2, 0.25]


def test_ramp_plan_is_pure() -> None:
    plan = RampPlan(start=7.4, to=6.0, volts_per_s=2.0, step_s=0.1)
    assert plan.steps == 7
    assert [plan.at(k)[1] for k in range(1, 8)] == list(RAMP_DOWN)
    assert plan.at(7) == (plan.duration_s, 6.0)
    assert RampPlan(7.4, 7.4, 1.0, 0.1).steps == 1  # already there: the one setpoint, at once
    assert str(plan) == "ramp from 7.4 V to 6 V at 2 V/s (100 ms steps)"


class SlowTransport:
    """The fake, with the instrument taking *slow_s* of virtual time to take one command."""

    def __init__(self, fake: FakeScpiTransport, slow_cmd: str, slow_s: float) -> None:
        self.fake, self.slow_cmd, self.slow_s = fake, slow_cmd, slow_s
        self.clock: FakeClock | None = None

    @property
    def is_open(self) -> bool:
        return self.fake.is_open

    def open(self) -> None:
        self.fake.open()

    def close(self) -> None:
        self.fake.close()

    def write(self, cmd: str) -> None:
        self.fake.write(cmd)
        if cmd == self.slow_cmd and self.clock is not None:
            self.clock.t += self.slow_s

    def query(self, cmd: str) -> str:
        return self.fake.query(cmd)


def test_late_ramp_skips_to_the_setpoint_due_so_the_slope_holds() -> None:
    fake = FakeScpiTransport(OPEN + [("VOLT?", "7.4"), *setpoints(7.2, 6.8, 6.6, 6.4, 6.2, 6.0)])
    slow = SlowTransport(fake, "VOLT 7.200", 0.25)  # the first setpoint takes 250 ms
    psu, _, clock = make_timed([], transport=slow)
    slow.clock = clock
    psu.ramp_to(6.0, volts_per_s=2.0)
    psu.wait_ramp(2.0)
    fake.assert_done()  # 7.0 V (due at 200 ms) was skipped: at 350 ms 6.8 V was due


@pytest.mark.parametrize(("call", "args", "match"), [
    ("ramp_to", (8.5, 2.0), r"ramp_to\(\): voltage = 8.5 refused: above the limit 8.4 "
                            r"\(bench YAML power.limits.max_volts\).*nothing was sent"),
    ("ramp_to", (-1.0, 2.0), r"ramp_to\(\): voltage = -1 refused: below the limit 0"),
    ("dip", (9.0, 100.0), r"dip\(\): voltage = 9 refused: above the limit 8.4"),
    ("dip", (math.nan, 100.0), r"dip\(\): voltage = nan refused: not a number"),
])
def test_fault_limits_refused_before_anything_is_sent(
        call: str, args: tuple[float, float], match: str) -> None:
    psu, fake, _ = make_timed([])
    with pytest.raises(LimitError, match=match):
        getattr(psu, call)(*args)
    assert fake.sent == ["*IDN?", "*CLS"]
    assert psu.trace == [] and not psu.ramping


@pytest.mark.parametrize(("call", "args", "match"), [
    ("ramp_to", (6.0, 0.0), r"ramp_to\(\): volts_per_s must be > 0, got 0.0"),
    ("ramp_to", (6.0, 2.0, math.inf), r"ramp_to\(\): step_ms must be > 0, got inf"),
    ("dip", (5.0, -1.0), r"dip\(\): ms must be > 0, got -1.0"),
    ("power_cycle", (0.0,), r"power_cycle\(\): off_ms must be > 0, got 0.0"),
])
def test_fault_arguments_refused_before_anything_is_sent(
        call: str, args: tuple[float, ...], match: str) -> None:
    psu, fake, _ = make_timed([])
    with pytest.raises(ConfigError, match=match):
        getattr(psu, call)(*args)
    fake.assert_done()


def test_ramp_from_a_setpoint_above_the_limit_sends_no_setpoint() -> None:
    psu, fake, _ = make_timed([("VOLT?", "9.5")])
    with pytest.raises(LimitError, match=r"ramp_to\(\): voltage = 9.3 refused: above"):
        psu.ramp_to(6.0, volts_per_s=2.0)
    fake.assert_done()
    assert not psu.ramping


def test_dip_back_to_a_setpoint_above_the_limit_sends_no_setpoint() -> None:
    psu, fake, _ = make_timed([("VOLT?", "9.0")])
    with pytest.raises(LimitError, match=r"dip\(\): voltage = 9 refused"):
        psu.dip(5.0, 100.0)
    fake.assert_done()


def test_stop_ramp_midway_sends_nothing_more() -> None:
    psu, fake, clock = make_timed([("VOLT?", "7.4"), *setpoints(7.2, 7.0, 6.8)])
    clock.hold_at = clock.t + 0.35  # parks before the 400 ms setpoint
    psu.ramp_to(6.0, volts_per_s=2.0)
    assert clock.parked.wait(2.0)
    assert psu.ramping
    assert psu.is_nominal() is False  # asks nothing while a ramp runs
    psu.stop_ramp()
    assert not psu.ramping
    fake.assert_done()
    psu.stop_ramp()  # idempotent


def test_stop_ramp_bound_is_named_when_the_thread_is_stuck() -> None:
    gate = threading.Event()

    class StuckTransport(SlowTransport):
        def write(self, cmd: str) -> None:
            self.fake.write(cmd)
            if cmd == "VOLT 7.200":
                assert gate.wait(5.0), "the test never let the instrument answer"

    fake = FakeScpiTransport(OPEN + [("VOLT?", "7.4"), *setpoints(7.2)])
    psu, _, _ = make_timed([], transport=StuckTransport(fake, "", 0.0))
    psu.ramp_to(6.0, volts_per_s=2.0)
    until(lambda: fake.sent[-1:] == ["VOLT 7.200"])
    with pytest.raises(NoResponse, match=r"stop_ramp\(\): the ramp from 7.4 V to 6 V at 2 V/s "
                                         r"\(100 ms steps\) did not stop within 0.05 s "
                                         r"\(setpoint 1/7 still being sent\)"):
        psu.stop_ramp(0.05)
    assert psu.ramping
    gate.set()
    psu.stop_ramp(2.0)
    assert not psu.ramping
    fake.assert_done()


def test_error_in_the_ramp_thread_is_raised_by_stop_ramp() -> None:
    lost = NoResponse("fake: no answer within 2000 ms")
    psu, fake, _ = make_timed([("VOLT?", "7.4"), *setpoints(7.2), ("VOLT 7.000", None),
                               ("*OPC?", lost)])
    psu.ramp_to(6.0, volts_per_s=2.0)
    until(lambda: not psu.ramping)
    with pytest.raises(RampError, match=r"^ScpiPowerSupply\(psu\): the ramp from 7.4 V to 6 V "
                                        r"at 2 V/s \(100 ms steps\) failed at setpoint 2/7 "
                                        r"\(7 V\): NoResponse: fake: no answer within 2000 ms$"
                       ) as err:
        psu.stop_ramp()
    assert err.value.__cause__ is lost
    assert isinstance(err.value, RigError)
    psu.stop_ramp()  # raised once; the ramp is gone
    fake.assert_done()


def test_error_in_the_ramp_thread_is_raised_by_wait_ramp() -> None:
    psu, fake, _ = make_timed([("VOLT?", "7.4"), ("VOLT 7.200", None),
                               ("*OPC?", TransportError("fake: link down"))])
    psu.ramp_to(6.0, volts_per_s=2.0)
    with pytest.raises(RampError, match=r"failed at setpoint 1/7 \(7.2 V\): TransportError"):
        psu.wait_ramp(2.0)
    fake.assert_done()


def test_setpoint_refused_inside_the_ramp_stops_it_and_is_kept() -> None:
    psu, fake, clock = make_timed([("VOLT?", "7.4"), *setpoints(7.2, 7.0)])
    clock.hold_at = clock.t + 0.25
    psu.ramp_to(6.0, volts_per_s=2.0)
    assert clock.parked.wait(2.0)
    psu.max_volts = 6.5  # the bench tightened its limit under the ramp's feet
    clock.release()
    with pytest.raises(RampError, match=r"failed at setpoint 3/7 \(6.8 V\): LimitError: .*"
                                        r"voltage = 6.8 refused.*nothing was sent") as err:
        psu.wait_ramp(2.0)
    assert isinstance(err.value.__cause__, LimitError)
    fake.assert_done()


def test_wait_ramp_bound_is_named() -> None:
    psu, fake, clock = make_timed([("VOLT?", "7.4"), *setpoints(7.2)])
    clock.hold_at = clock.t + 0.15
    psu.ramp_to(6.0, volts_per_s=2.0)
    with pytest.raises(NoResponse, match=r"wait_ramp\(\): the ramp from 7.4 V to 6 V .* did "
                                         r"not reach its end within 0.05 s \(1/7 setpoints sent\)"):
        psu.wait_ramp(0.05)
    psu.stop_ramp()
    fake.assert_done()


def test_a_new_ramp_stops_the_running_one() -> None:
    psu, fake, clock = make_timed([("VOLT?", "7.4"), *setpoints(7.2),
                                   ("VOLT?", "7.2"), *setpoints(7.4)])
    clock.hold_at = clock.t + 0.15
    psu.ramp_to(6.0, volts_per_s=2.0)
    assert clock.parked.wait(2.0)
    clock.hold_at = None
    psu.ramp_to(7.4, volts_per_s=2.0)
    psu.wait_ramp(2.0)
    fake.assert_done()


def test_set_voltage_takes_the_setpoint_from_a_running_ramp() -> None:
    psu, fake, clock = make_timed([("VOLT?", "7.4"), *setpoints(7.2, 5.0)])
    clock.hold_at = clock.t + 0.15
    psu.ramp_to(6.0, volts_per_s=2.0)
    assert clock.parked.wait(2.0)
    psu.set_voltage(5.0)
    assert not psu.ramping
    fake.assert_done()


def test_restore_nominal_stops_the_ramp_first() -> None:
    psu, fake, clock = make_timed([
        ("VOLT?", "7.4"), *setpoints(7.2, 7.0),
        ("*CLS", None), ("CURR 2.000", None), ("VOLT 7.400", None), ("OUTP ON", None),
        ("*OPC?", "1"), ("SYST:ERR?", '+0,"No error"'),
    ])
    clock.hold_at = clock.t + 0.25
    psu.ramp_to(6.0, volts_per_s=2.0)
    assert clock.parked.wait(2.0)
    psu.restore_nominal()
    assert not psu.ramping
    fake.assert_done()


def test_restore_nominal_restores_then_raises_a_failed_ramp() -> None:
    psu, fake, _ = make_timed([
        ("VOLT?", "7.4"), ("VOLT 7.200", None), ("*OPC?", "0"),
        ("*CLS", None), ("CURR 2.000", None), ("VOLT 7.400", None), ("OUTP ON", None),
        ("*OPC?", "1"), ("SYST:ERR?", '+0,"No error"'),
    ])
    psu.ramp_to(6.0, volts_per_s=2.0)
    until(lambda: not psu.ramping)
    with pytest.raises(RampError, match=r"'\*OPC\?' answered '0'"):
        psu.restore_nominal()
    fake.assert_done()  # the supply was restored all the same


def test_close_stops_the_ramp() -> None:
    psu, fake, clock = make_timed([("VOLT?", "7.4"), *setpoints(7.2)])
    clock.hold_at = clock.t + 0.15
    psu.ramp_to(6.0, volts_per_s=2.0)
    assert clock.parked.wait(2.0)
    psu.close()
    assert not psu.ramping and not fake.is_open
    fake.assert_done()


def test_dip_exact_commands_and_time_low() -> None:
    psu, fake, clock = make_timed([("VOLT?", "+7.40000000E+00"), *setpoints(5.0, 7.4)])
    low_s = psu.dip(5.0, 200.0)
    fake.assert_done()
    assert low_s == pytest.approx(0.2)
    assert clock.waits == [pytest.approx(0.2)]
    sets = [p for p in psu.trace if p.kind == "set"]
    assert [(p.value, round(p.t - sets[0].t, 9)) for p in sets] == [(5.0, 0.0), (7.4, 0.2)]


def test_dip_stops_a_running_ramp_and_returns_to_where_it_stood() -> None:
    psu, fake, clock = make_timed([("VOLT?", "7.4"), *setpoints(7.2),
                                   ("VOLT?", "7.2"), *setpoints(4.0, 7.2)])
    clock.hold_at = clock.t + 0.15
    psu.ramp_to(6.0, volts_per_s=2.0)
    assert clock.parked.wait(2.0)
    clock.hold_at = None
    psu.dip(4.0, 50.0)
    assert not psu.ramping
    fake.assert_done()


def test_power_cycle_exact_commands_and_time_off() -> None:
    psu, fake, clock = make_timed([("OUTP OFF", None), ("*OPC?", "1"),
                                   ("OUTP ON", None), ("*OPC?", "1")])
    off_s = psu.power_cycle(500.0)
    fake.assert_done()
    assert off_s == pytest.approx(0.5)
    assert [(p.quantity, p.value) for p in psu.trace] == [("output", 0.0), ("output", 1.0)]


# (set-voltage template with the value as {}, get-voltage, output off, output on) as each
# instrument spells them on channel 1, written out (not rendered from the dialect table).
SPELLED = {
    "keysight-e36xx": ("VOLT {}", "VOLT?", "OUTP OFF", "OUTP ON"),
    "keysight-e363xx": ("VOLT {},(@1)", "VOLT? (@1)", "OUTP OFF,(@1)", "OUTP ON,(@1)"),
    "rigol-dp8xx": (":SOUR1:VOLT {}", ":SOUR1:VOLT?", ":OUTP CH1,OFF", ":OUTP CH1,ON"),
    "rs-hmp": ("INST:NSEL 1;:VOLT {}", "INST:NSEL 1;:VOLT?", "INST:NSEL 1;:OUTP:SEL OFF",
               "INST:NSEL 1;:OUTP:SEL ON;:OUTP:GEN ON"),
    "siglent-spd": ("CH1:VOLT {}", "CH1:VOLT?", "OUTP CH1,OFF", "OUTP CH1,ON"),
}


def test_every_dialect_is_spelled_out_here() -> None:
    assert sorted(SPELLED) == sorted(DIALECTS)


@pytest.mark.parametrize("dialect", sorted(SPELLED))
def test_faults_in_every_dialect(dialect: str) -> None:
    set_v, get_v, off, on = SPELLED[dialect]
    psu, fake, _ = make_timed([
        (get_v, "7.4"), (set_v.format("7.000"), None), ("*OPC?", "1"),
        (set_v.format("6.700"), None), ("*OPC?", "1"),
        (get_v, "6.7"), (set_v.format("5.000"), None), ("*OPC?", "1"),
        (set_v.format("6.700"), None), ("*OPC?", "1"),
        (off, None), ("*OPC?", "1"), (on, None), ("*OPC?", "1"),
    ], dialect=dialect)
    psu.ramp_to(6.7, volts_per_s=4.0)
    psu.wait_ramp(2.0)
    psu.dip(5.0, 100.0)
    psu.power_cycle(100.0)
    fake.assert_done()

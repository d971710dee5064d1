"""rigs.power.ScpiPowerSupply against FakeScpiTransport: exact SCPI strings, in order."""

from __future__ import annotations

import pytest

from rigs.errors import (
    ConfigError,
    DeviceStateError,
    InstrumentError,
    LimitError,
    NoResponse,
    TransportError,
)
from rigs.interfaces import PowerSupply
from rigs.power import DIALECTS, ScpiPowerSupply
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

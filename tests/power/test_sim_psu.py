"""sim.psu.SimPowerSupply as a pure state machine (no sockets)."""

from __future__ import annotations

import pytest

from protocols.errors import SimError
from sim.psu import SimPowerSupply

# (line, response) in order; one PSU walks through the whole table.
SESSION: list[tuple[str, str | None]] = [
    ("*IDN?", "posrig,SimPowerSupply E36xx,SIM-PSU-0001,1.0"),
    ("OUTP?", "0"),
    ("VOLT?", "+0.00000000E+00"),
    ("MEAS:VOLT?", "+0.00000000E+00"),
    ("VOLT 7.4", None),
    ("volt?", "+7.40000000E+00"),
    ("SOURce:VOLTage:LEVel:IMMediate:AMPLitude?", "+7.40000000E+00"),
    ("MEAS:VOLT?", "+0.00000000E+00"),          # output still off
    ("OUTP ON", None),
    ("OUTPut:STATe?", "1"),
    ("MEASure:SCALar:VOLTage:DC?", "+7.40000000E+00"),
    ("MEAS:CURR?", "+0.00000000E+00"),          # nothing draws current yet
    ("CURR 2", None),
    ("CURR?", "+2.00000000E+00"),
    ("VOLT? MAX", "+3.00000000E+01"),
    ("CURR? MIN", "+0.00000000E+00"),
    ("SYST:ERR?", '+0,"No error"'),
    ("VOLT 6.5;MEAS:VOLT?;VOLT?;*OPC?", "+6.50000000E+00;+6.50000000E+00;1"),
    ("OUTP 0", None),
    ("OUTP?", "0"),
    ("OUTP 1", None),
    ("OUTP OFF", None),
    ("*OPC?", "1"),
]


def test_session_table() -> None:
    psu = SimPowerSupply(max_volts=30.0, max_amps=3.0)
    for line, expected in SESSION:
        assert psu.handle(line, 0.0) == expected, line
    assert psu.handle("SYST:ERR?", 0.0) == '+0,"No error"'


@pytest.mark.parametrize(("line", "entry"), [
    ("FOO", '-113,"Undefined header"'),
    ("MEAS:VOLT", '-113,"Undefined header"'),   # no such command form, only the query
    ("VOLT 31", '-222,"Data out of range"'),
    ("CURR 3.5", '-222,"Data out of range"'),
    ("VOLT -1", '-222,"Data out of range"'),
    ("VOLT seven", '-104,"Data type error"'),
    ("VOLT 1_0", '-121,"Invalid character in number"'),   # float() would take it as 10 V
    ("VOLT nan", '-104,"Data type error"'),
    ("VOLT inf", '-104,"Data type error"'),
    ("VOLT -inf", '-121,"Invalid character in number"'),
    ("VOLT 1e", '-121,"Invalid character in number"'),
    ("VOLT 1e99999", '-123,"Exponent too large"'),
    ("VOLT 1e300", '-222,"Data out of range"'),
    ("VOLT " + "1" * 4301, '-124,"Too many digits"'),
    ("VOLT 5 A", '-131,"Invalid suffix"'),
    ("VOLT \uff15", '-101,"Invalid character"'),             # fullwidth 5
    ("o\ufb00", '-101,"Invalid character"'),                # 'oﬀ'.upper() == 'OFF'
    ("VOLT 6;;OUTP ON", '-102,"Syntax error"'),
    ("VOLT 6;FOO", '-113,"Undefined header"'),              # the VOLT 6 is undone
    ("VOLT: 6", '-102,"Syntax error"'),
    ("VOLT " + "1" * 70000, '-363,"Input buffer overrun"'),
    ("VOLT", '-109,"Missing parameter"'),
    ("OUTP", '-109,"Missing parameter"'),
    ("OUTP MAYBE", '-224,"Illegal parameter value"'),
    ("MEAS:VOLT? 1", '-108,"Parameter not allowed"'),
    ("VOLT 1,2", '-108,"Parameter not allowed"'),
])
def test_errors_go_to_the_queue(line: str, entry: str) -> None:
    psu = SimPowerSupply()
    psu.handle("VOLT 5", 0.0)
    assert psu.handle(line, 0.0) is None  # a failed query answers nothing
    assert psu.handle("SYST:ERR?", 0.0) == entry
    assert psu.handle("SYSTem:ERRor:NEXT?", 0.0) == '+0,"No error"'
    assert psu.volts == 5.0  # a refused setpoint changes nothing


def test_units_and_blank_lines() -> None:
    psu = SimPowerSupply()
    assert psu.handle("VOLT 500 mV;VOLT?", 0.0) == "+5.00000000E-01"
    assert psu.handle("VOLT\t7.4V;CURR 250MA;CURR?", 0.0) == "+2.50000000E-01"
    assert psu.handle("VOLT?", 0.0) == "+7.40000000E+00"
    before = psu.state()
    assert psu.handle("", 0.0) is None and psu.handle(" \t ", 0.0) is None
    assert psu.handle("SYST:ERR?", 0.0) == '+0,"No error"'  # an empty message is no error
    assert psu.state() == before


def test_error_queue_order_cls_and_overflow() -> None:
    psu = SimPowerSupply()
    psu.handle("FOO", 0.0)
    psu.handle("VOLT 99", 0.0)
    assert psu.handle("SYST:ERR?", 0.0) == '-113,"Undefined header"'
    assert psu.handle("SYST:ERR?", 0.0) == '-222,"Data out of range"'
    psu.handle("FOO", 0.0)
    psu.handle("*CLS", 0.0)
    assert psu.handle("SYST:ERR?", 0.0) == '+0,"No error"'
    for _ in range(25):
        psu.handle("FOO", 0.0)
    entries = [psu.handle("SYST:ERR?", 0.0) for _ in range(21)]
    assert entries[:19] == ['-113,"Undefined header"'] * 19
    assert entries[19:] == ['-350,"Queue overflow"', '+0,"No error"']


def test_error_stops_rest_of_line() -> None:
    psu = SimPowerSupply()
    assert psu.handle("VOLT 99;VOLT 5", 0.0) is None
    assert psu.volts == 0.0


def test_rst_output_off_zero_volts() -> None:
    psu = SimPowerSupply(max_amps=3.0)
    for line in ("VOLT 7.4", "CURR 1", "OUTP ON", "*RST"):
        psu.handle(line, 0.0)
    assert (psu.output, psu.volts, psu.amps_limit, psu.rail_volts) == (False, 0.0, 3.0, 0.0)


@pytest.mark.parametrize(("state", "amps"), [
    ("booting", "+3.00000000E-01"), ("idle", "+1.20000000E-01"), ("card", "+1.80000000E-01"),
    ("comms", "+2.50000000E-01"), ("printing", "+1.20000000E+00")])
def test_load_states_draw_documented_current(state: str, amps: str) -> None:
    psu = SimPowerSupply()
    for line in ("VOLT 7.4", "CURR 2", "OUTP ON"):
        psu.handle(line, 0.0)
    psu.load_state = state
    assert psu.handle("MEAS:CURR?", 0.0) == amps
    assert psu.handle("MEAS:VOLT?", 0.0) == "+7.40000000E+00"
    assert not psu.constant_current


def test_current_limit_drops_the_rail() -> None:
    psu = SimPowerSupply()
    for line in ("VOLT 7.2", "CURR 1.0", "OUTP ON"):
        psu.handle(line, 0.0)
    psu.load_state = "printing"  # wants 1.2 A at 7.2 V = 6 ohm
    assert psu.constant_current
    assert psu.handle("MEAS:CURR?", 0.0) == "+1.00000000E+00"
    assert psu.rail_volts == pytest.approx(6.0)
    assert psu.handle("MEAS:VOLT?", 0.0) == "+6.00000000E+00"
    psu.handle("CURR 2", 0.0)
    assert psu.rail_volts == 7.2 and not psu.constant_current


def test_output_off_means_no_load_and_zero_rail() -> None:
    psu = SimPowerSupply()
    for line in ("VOLT 7.4", "OUTP ON"):
        psu.handle(line, 0.0)
    psu.load_state = "idle"
    psu.handle("OUTP OFF", 12.5)
    assert psu.rail_volts == 0.0 and psu.load_state is None and psu.last_change == 12.5
    assert psu.handle("MEAS:CURR?", 0.0) == "+0.00000000E+00"


def test_unknown_load_state_is_a_bench_bug() -> None:
    with pytest.raises(SimError, match="load_state 'dancing' unknown"):
        SimPowerSupply().load_state = "dancing"

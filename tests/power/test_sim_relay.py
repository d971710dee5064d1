"""sim.relay.SimRelayUnit as a pure state machine (no sockets)."""

from __future__ import annotations

import pytest

from sim.relay import SimRelayUnit, parse_channel_list
from sim.scpi import ScpiError

SESSION: list[tuple[str, str | None]] = [
    ("*IDN?", "posrig,SimRelayUnit 8ch,SIM-RLY-0001,1.0"),
    ("ROUT:CLOS? (@1:8)", "0,0,0,0,0,0,0,0"),
    ("ROUT:CLOS (@1)", None),
    ("ROUTe:CLOSe? (@1)", "1"),
    ("ROUT:CLOS (@3,5:6)", None),
    ("ROUT:CLOS? (@1:6)", "1,0,1,0,1,1"),
    ("ROUT:OPEN? (@1,2)", "0,1"),
    ("ROUT:OPEN (@1,3)", None),
    ("route:close? (@1,3,5)", "0,0,1"),
    ("ROUT:OPEN:ALL", None),
    ("ROUT:CLOS? (@1:8)", "0,0,0,0,0,0,0,0"),
    ("ROUT:CLOS (@2);ROUT:CLOS? (@2)", "1"),
    ("*RST", None),
    ("ROUT:CLOS? (@2)", "0"),
    ("SYST:ERR?", '+0,"No error"'),
]


def test_session_table() -> None:
    relay = SimRelayUnit()
    for line, expected in SESSION:
        assert relay.handle(line, 0.0) == expected, line


def test_closed_accessor_for_the_bench() -> None:
    relay = SimRelayUnit()
    relay.handle("ROUT:CLOS (@1)", 0.0)
    assert relay.closed(1) and not relay.closed(2)


@pytest.mark.parametrize(("param", "channels"), [
    ("(@1)", [1]), ("(@1,3)", [1, 3]), ("(@1:4)", [1, 2, 3, 4]), ("(@ 2 , 4:3 )", [2, 4, 3])])
def test_channel_lists(param: str, channels: list[int]) -> None:
    assert parse_channel_list(param, 8) == channels


@pytest.mark.parametrize(("line", "entry"), [
    ("ROUT:CLOS (@9)", '-222,"Data out of range"'),
    ("ROUT:CLOS (@0:2)", '-222,"Data out of range"'),
    ("ROUT:CLOS 1", '-102,"Syntax error"'),
    ("ROUT:CLOS (@a)", '-102,"Syntax error"'),
    # 4301 digits: int() refuses more than 4300 (ValueError escaped the error queue)
    ("ROUT:CLOS (@" + "1" * 4301 + ")", '-222,"Data out of range"'),
    ("ROUT:CLOS (@1:" + "9" * 5000 + ")", '-222,"Data out of range"'),
    ("ROUT:CLOS (@\u0661)", '-101,"Invalid character"'),  # Arabic-Indic 1 is no channel
    ("ROUT:CLOS (@1);ROUT:CLOS (@9)", '-222,"Data out of range"'),  # channel 1 stays open
    ("ROUT:CLOS", '-109,"Missing parameter"'),
    ("ROUT:OPEN:ALL (@1)", '-108,"Parameter not allowed"'),
    ("ROUT:SCAN (@1)", '-113,"Undefined header"'),
])
def test_errors(line: str, entry: str) -> None:
    relay = SimRelayUnit()
    relay.handle("ROUT:CLOS (@2)", 0.0)
    assert relay.handle(line, 0.0) is None
    assert relay.handle("SYST:ERR?", 0.0) == entry
    assert [relay.closed(ch) for ch in range(1, 9)] == [False, True] + [False] * 6


def test_channel_list_error_codes() -> None:
    with pytest.raises(ScpiError) as err:
        parse_channel_list("(@\u0661)", 8)   # int() would read it as 1
    assert err.value.code == -102
    with pytest.raises(ScpiError) as err:
        parse_channel_list("(@1:9)", 8)
    assert err.value.code == -222

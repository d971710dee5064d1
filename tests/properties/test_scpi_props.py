"""Property tests of the SCPI side: any line to the simulated supply and relay gets an answer
or exactly one queued SCPI error, and a refused line leaves the instrument's state as it was;
the rig's reply parsers take any text and refuse only with the project's own errors."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from protocols.scpi import NumberError, parse_number, split_number
from rigs.errors import TransportError
from rigs.scpi import parse_error_entry
from sim.psu import SimPowerSupply
from sim.relay import SimRelayUnit, parse_channel_list
from sim.scpi import ScpiError, SimScpiDevice

HEADERS = ["VOLT", "VOLT?", "CURR", "CURR?", "OUTP", "OUTP?", "MEAS:VOLT?", "MEAS:CURR?",
           "SOUR:VOLT:LEV:IMM:AMPL", "ROUT:CLOS", "ROUT:CLOS?", "ROUT:OPEN", "ROUT:OPEN?",
           "ROUT:OPEN:ALL", "*IDN?", "*RST", "*CLS", "*OPC?", "SYST:ERR?", "INST:NSEL", ""]
NUMBERISH = st.text(alphabet="0123456789+-.eE_ VvmMaA,;:()@nNiIfF\t\u00b2\uff15\u0661",
                    max_size=30)
PARAMS = st.one_of(
    NUMBERISH,
    st.builds(lambda a, b: f"(@{a}:{b})", st.integers(-3, 10**10), NUMBERISH),
    st.builds(lambda n: "1" * n, st.integers(1, 5000)),
    st.sampled_from(["ON", "OFF", "MIN", "MAX", "DEF", "nan", "inf", "1_0", "(@1,3)",
                     "(@" + "1" * 4301 + ")"]),
    st.text(max_size=20),
)
UNITS = st.builds(lambda h, p: f"{h} {p}" if p else h, st.sampled_from(HEADERS), PARAMS)
LINES = st.one_of(
    st.lists(UNITS, min_size=1, max_size=4).map(";".join),
    st.text(max_size=80),
    st.binary(max_size=80).map(lambda b: b.decode("ascii", "replace")),
)


def _one_line(device: SimScpiDevice, line: str) -> None:
    device.errors.clear()
    before = device.state()
    answer = device.handle(line, 1.0)
    assert len(device.errors) <= 1, list(device.errors)
    if device.errors:
        assert answer is None, answer
        assert device.state() == before, line
        entry = device.errors[0].queue_entry()
        assert entry.isascii() and entry.isprintable() and -400 < device.errors[0].code < 0
    elif answer is not None:
        assert answer.isascii() and answer.isprintable(), answer


@given(st.lists(LINES, min_size=1, max_size=6))
def test_supply_answers_or_queues_one_error(lines: list[str]) -> None:
    psu = SimPowerSupply()
    for line in lines:
        _one_line(psu, line)
        assert 0.0 <= psu.volts <= psu.max_volts and 0.0 <= psu.amps_limit <= psu.max_amps
        assert math.isfinite(psu.rail_volts)


@given(st.lists(LINES, min_size=1, max_size=6))
def test_relay_answers_or_queues_one_error(lines: list[str]) -> None:
    relay = SimRelayUnit()
    for line in lines:
        _one_line(relay, line)
        assert all(1 <= ch <= relay.channels for ch in relay._closed)


@given(st.one_of(PARAMS, st.text()))
def test_channel_lists_refuse_with_scpi_errors(param: str) -> None:
    try:
        channels = parse_channel_list(param, 8)
    except ScpiError as err:
        assert err.code in (-102, -222)
    else:
        assert all(1 <= ch <= 8 for ch in channels)


@given(st.one_of(NUMBERISH, st.text(), st.from_regex(r"\A[+-]?[0-9]{1,400}(\.[0-9]*)?"
                                                     r"([eE][+-]?[0-9]{1,8})?\Z")))
def test_numbers_by_the_one_grammar(text: str) -> None:
    try:
        value, suffix = split_number(text, "VOLT")
    except NumberError as err:
        assert 0 <= err.position <= len(text) and err.code in (-104, -121, -123, -124)
    else:
        assert not math.isnan(value) and (not suffix or suffix.isascii() and suffix.isalpha())
        assert "_" not in text and text.isascii()
    try:
        number = parse_number(text, "answer")
    except NumberError:
        pass
    else:
        assert math.isfinite(number)


ENTRIES = st.one_of(
    st.text(max_size=60),
    st.builds(lambda code, text: f'{code},"{text}"', st.one_of(
        st.integers(-10**6, 10**6).map(str), st.just("1" * 4301), NUMBERISH), st.text()),
)


@given(ENTRIES)
def test_error_queue_reply_parser_refuses_only_with_project_errors(answer: str) -> None:
    try:
        code, _ = parse_error_entry(answer, "psu")
    except TransportError as err:
        assert "psu: SYST:ERR? answered" in str(err)
    else:
        assert -99_999 <= code <= 99_999

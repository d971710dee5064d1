"""rigs.switch.ScpiRelayUnit against FakeScpiTransport."""

from __future__ import annotations

import pytest

from rigs.errors import ConfigError, DeviceStateError, InstrumentError, TransportError
from rigs.interfaces import SwitchUnit
from rigs.registry import check_conforms
from rigs.scpi import FakeScpiTransport
from rigs.switch import ScpiRelayUnit

OPEN = [("*IDN?", "posrig,SimRelayUnit 8ch,SIM-RLY-0001,1.0"), ("*CLS", None)]


def make(script: list[tuple[str, str | None | BaseException]]
         ) -> tuple[ScpiRelayUnit, FakeScpiTransport]:
    fake = FakeScpiTransport(OPEN + script)
    unit = ScpiRelayUnit("sw", fake)
    unit.open()
    return unit, fake


def test_exact_commands() -> None:
    unit, fake = make([
        ("ROUT:CLOS (@1)", None),
        ("*OPC?", "1"),
        ("ROUT:CLOS? (@1)", "1"),
        ("ROUT:OPEN (@1)", None),
        ("*OPC?", "1"),
        ("ROUT:CLOS? (@1)", "0"),
        ("ROUT:OPEN:ALL", None),
        ("*OPC?", "1"),
    ])
    as_interface: SwitchUnit = unit  # mypy checks ScpiRelayUnit satisfies the interface
    check_conforms(as_interface, SwitchUnit, "switch.driver")  # as a lab's own driver is checked
    unit.close_channel(1)
    assert unit.is_closed(1) is True
    unit.open_channel(1)
    assert unit.is_closed(1) is False
    unit.open_all()
    fake.assert_done()
    assert unit.trace_text().splitlines()[0].endswith("close ch1 CLOSED")
    assert unit.trace_csv().splitlines()[-1].endswith(",open_all,0,0")


def test_nominal_is_all_open() -> None:
    unit, fake = make([
        ("ROUT:CLOS? (@1:8)", "0,0,0,0,0,0,0,0"),
        ("ROUT:CLOS? (@1:8)", "1,0,0,0,0,0,0,0"),
        ("ROUT:OPEN:ALL", None),
        ("*OPC?", "1"),
        ("SYST:ERR?", '+0,"No error"'),
    ])
    assert unit.is_nominal() is True
    assert unit.is_nominal() is False
    unit.restore_nominal()
    fake.assert_done()


def test_restore_reports_instrument_errors() -> None:
    unit, fake = make([
        ("ROUT:OPEN:ALL", None),
        ("*OPC?", "1"),
        ("SYST:ERR?", '-113,"Undefined header"'),
        ("SYST:ERR?", '+0,"No error"'),
    ])
    with pytest.raises(InstrumentError, match="-113 Undefined header"):
        unit.restore_nominal()
    fake.assert_done()


def test_bad_channel_sends_nothing() -> None:
    unit, fake = make([])
    with pytest.raises(ConfigError, match=r"close_channel\(9\): channel outside 1..8"):
        unit.close_channel(9)
    fake.assert_done()


def test_malformed_answer() -> None:
    unit, fake = make([("ROUT:CLOS? (@1)", "1,0")])
    with pytest.raises(TransportError, match="expected 1 comma-separated 0/1 flag"):
        unit.is_closed(1)
    fake.assert_done()


def test_closed_session() -> None:
    unit = ScpiRelayUnit("sw", FakeScpiTransport([]))
    with pytest.raises(DeviceStateError,
                       match=r"ScpiRelayUnit\(sw\): close_channel\(\) needs an open session"):
        unit.close_channel(1)

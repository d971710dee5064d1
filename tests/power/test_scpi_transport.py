"""rigs.scpi: resource strings, the fake (it must catch what it is for), scpi_property."""

from __future__ import annotations

import pytest

from rigs.driver import Driver
from rigs.errors import ConfigError, DeviceStateError, LimitError, TransportError
from rigs.scpi import (
    FakeScpiTransport,
    VisaScpiTransport,
    parse_error_entry,
    read_error_queue,
    scpi_property,
)


@pytest.mark.parametrize("resource", [
    "TCPIP0::127.0.0.1::5025::SOCKET", "TCPIP::psu.lab::5025::SOCKET",
    "TCPIP0::192.0.2.5::inst0::INSTR", "ASRL/dev/ttyUSB0::INSTR", "ASRL3::INSTR",
    "USB0::0x2A8D::0x1002::MY12345678::INSTR", "GPIB0::5::INSTR"])
def test_resource_forms_accepted(resource: str) -> None:
    assert VisaScpiTransport(resource).resource == resource


@pytest.mark.parametrize("resource", [
    "", "127.0.0.1:5025", "TCPIP0::127.0.0.1::SOCKET", "socket://127.0.0.1:5025",
    "/dev/ttyUSB0", "USB0::0x2A8D::INSTR"])
def test_malformed_resource_shows_expected_form(resource: str) -> None:
    with pytest.raises(ConfigError, match=r"power.resource: .* is not a VISA resource string; "
                                          r"expected one of TCPIP0::host::5025::SOCKET, .*"
                                          r"ASRL/dev/ttyUSB0::INSTR, USB0::"):
        VisaScpiTransport(resource, where="power.resource")


def test_closed_visa_transport_refuses() -> None:
    with pytest.raises(TransportError, match="needs an open session; state is CLOSED"):
        VisaScpiTransport("TCPIP0::127.0.0.1::5025::SOCKET").query("*IDN?")


def test_fake_catches_wrong_command_kind_extra_and_leftover() -> None:
    fake = FakeScpiTransport([("VOLT 1.000", None), ("VOLT?", "1")])
    fake.open()
    with pytest.raises(AssertionError,
                       match=r"expected write\('VOLT 1.000'\), got write\('VOLT 1'\)"):
        fake.write("VOLT 1")
    fake = FakeScpiTransport([("VOLT?", "1")])
    fake.open()
    with pytest.raises(AssertionError, match=r"expected query\('VOLT\?'\), got write"):
        fake.write("VOLT?")
    fake = FakeScpiTransport([("VOLT?", "1")])
    fake.open()
    with pytest.raises(AssertionError, match="1 step\\(s\\) never happened"):
        fake.assert_done()
    assert fake.query("VOLT?") == "1"
    with pytest.raises(AssertionError, match="script is finished"):
        fake.query("VOLT?")


class _Load(Driver):
    """A plain instrument declared with scpi_property only."""

    level = scpi_property("CURR{ch}?", "CURR{ch} {:.2f}", limits=(0, 5), doc="Load current (A).")
    mode = scpi_property("FUNC?", parse=str)

    def __init__(self, transport: FakeScpiTransport) -> None:
        super().__init__("load")
        self.transport = transport
        self.scpi_fields = {"ch": 2}
        self.seen: list[tuple[str, str, object]] = []

    def scpi_observe(self, name: str, kind: str, value: object) -> None:
        self.seen.append((name, kind, value))


def test_scpi_property() -> None:
    fake = FakeScpiTransport([("CURR2 1.50", None), ("CURR2?", "1.5"), ("FUNC?", "CC")])
    load = _Load(fake)
    with pytest.raises(DeviceStateError, match=r"_Load\(load\): level\(\) needs an open session"):
        load.level = 1.0
    fake.open()
    load.open()
    load.level = 1.5
    assert load.level == 1.5
    assert load.mode == "CC"
    with pytest.raises(LimitError, match=r"level = 6 refused: above the limit 5; allowed 0..5"):
        load.level = 6.0
    with pytest.raises(AttributeError, match="read-only"):
        load.mode = "CV"
    fake.assert_done()
    assert load.seen == [("level", "set", 1.5), ("level", "get", 1.5), ("mode", "get", "CC")]
    assert _Load.level.__doc__ == "Load current (A)."


@pytest.mark.parametrize(("answer", "why"), [
    ("1_0", r"'1_0', not a scpi_float"),        # float() would read 10
    ("nan", r"'nan', not a scpi_float"),
    ("\uff11", r"not a scpi_float"),            # a fullwidth 1
    ("1" * 4301, r"not a scpi_float"),
])
def test_scpi_property_reads_numbers_by_the_scpi_grammar(answer: str, why: str) -> None:
    fake = FakeScpiTransport([("CURR2?", answer)])
    load = _Load(fake)
    fake.open()
    load.open()
    with pytest.raises(TransportError, match=why):
        _ = load.level
    fake.assert_done()


@pytest.mark.parametrize(("answer", "expected"), [
    ('-113,"Undefined header"', [(-113, "Undefined header")]),
    ('+0,"No error"', []),
    ("0, No error", []),
])
def test_error_queue_entries(answer: str, expected: list[tuple[int, str]]) -> None:
    script = [("SYST:ERR?", answer)] + ([("SYST:ERR?", '+0,"No error"')] if expected else [])
    fake = FakeScpiTransport(script)
    fake.open()
    assert read_error_queue(fake, "psu") == [f"{c:+d} {t}" for c, t in expected]
    fake.assert_done()


@pytest.mark.parametrize(("answer", "why"), [
    # a 4301-digit code: int() raised ValueError out of the error-queue reader
    ("1" * 4301 + ',"x"', r"the code at byte 0 has 4301 digits, at most 5"),
    ("-" + "9" * 6 + ',"x"', r"the code at byte 0 has 6 digits"),
    ('\u0661\u0661,"x"', r"expected '<code>,\"<text>\"'"),   # Arabic-Indic digits
    ("", r"expected '<code>"),
    ('1_0,"x"', r"expected '<code>"),
])
def test_error_queue_reader_refuses_with_project_errors(answer: str, why: str) -> None:
    fake = FakeScpiTransport([("SYST:ERR?", answer)])
    fake.open()
    with pytest.raises(TransportError, match=why):
        read_error_queue(fake, "psu")
    with pytest.raises(TransportError, match=why):
        parse_error_entry(answer, "psu")

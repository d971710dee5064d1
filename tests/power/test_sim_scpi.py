"""sim.scpi: header expansion, line/parameter splitting, number parsing, the TCP server."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from protocols.errors import SimError
from sim.psu import SimPowerSupply
from sim.scpi import (
    ScpiDevice,
    ScpiError,
    ScpiTcpServer,
    expand_header,
    format_number,
    normalize_header,
    parse_number,
    split_program_line,
    split_unit,
)


def test_expand_header_long_short_optional() -> None:
    spellings = expand_header("MEASure[:SCALar]:VOLTage[:DC]?")
    for s in ("MEAS:VOLT?", "MEASURE:VOLTAGE?", "MEAS:SCAL:VOLT:DC?", "MEASURE:SCALAR:VOLT?"):
        assert s in spellings
    assert "MEA:VOLT?" not in spellings
    assert "MEAS:VOLT" not in spellings  # the query mark is part of the header
    assert expand_header("*IDN?") == {"*IDN?"}
    assert expand_header("[SOURce]:VOLTage") == {"VOLT", "VOLTAGE", "SOUR:VOLT", "SOUR:VOLTAGE",
                                                  "SOURCE:VOLT", "SOURCE:VOLTAGE"}


def test_normalize_header() -> None:
    assert normalize_header(":sour1:Volt?") == "SOUR:VOLT?"
    assert normalize_header("OUTP2") == "OUTP2"  # only suffix 1 means the single channel
    assert normalize_header("*idn?") == "*IDN?"


def test_split_line_and_unit() -> None:
    assert split_program_line("VOLT 5;OUTP ON; ") == ["VOLT 5", "OUTP ON"]
    assert split_unit("ROUT:CLOS (@1,3)") == ("ROUT:CLOS", ["(@1,3)"])
    assert split_unit("APPL 5, 1") == ("APPL", ["5", "1"])
    with pytest.raises(ScpiError) as err:
        split_unit("ROUT:CLOS (@1,3")
    assert err.value.code == -102
    with pytest.raises(ScpiError) as err:
        split_unit("VOLT 5,,1")
    assert err.value.code == -102


@pytest.mark.parametrize(("param", "expected"), [
    ("7.4", 7.4), ("740E-2", 7.4), ("MIN", 0.0), ("maximum", 30.0), ("DEF", 1.0)])
def test_parse_number(param: str, expected: float) -> None:
    assert parse_number(param, minimum=0.0, maximum=30.0, default=1.0, what="VOLT") == expected


@pytest.mark.parametrize(("param", "code"), [
    ("abc", -104), ("nan", -104), ("inf", -104), ("Infinity", -104), ("30.01", -222),
    ("-0.1", -222), ("1_0", -121), ("+", -121), ("1e+", -121), ("0x10", -121),
    ("1e32001", -123), ("1" * 256, -124), ("5V", -138), ("\u0665", -104)])
def test_parse_number_errors(param: str, code: int) -> None:
    with pytest.raises(ScpiError) as err:
        parse_number(param, minimum=0.0, maximum=30.0, default=1.0, what="VOLT")
    assert err.value.code == code


def test_format_number_like_keysight() -> None:
    assert format_number(7.4) == "+7.40000000E+00"
    assert format_number(0.0) == "+0.00000000E+00"
    assert format_number(0.12) == "+1.20000000E-01"


# -- server ------------------------------------------------------------------------------

@pytest.fixture
def psu_server() -> Iterator[tuple[ScpiTcpServer, list[float]]]:
    rails: list[float] = []

    def after(device: ScpiDevice) -> None:
        assert isinstance(device, SimPowerSupply)
        rails.append(device.rail_volts)

    server = ScpiTcpServer(SimPowerSupply(), after=after, name="psu-test")
    server.start()
    try:
        yield server, rails
    finally:
        server.stop(timeout=2.0)


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=2.0)
    sock.settimeout(2.0)
    return sock


def _ask(sock: socket.socket, line: str) -> str:
    sock.sendall(line.encode() + b"\n")
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(4096)
        assert chunk, "server closed the connection"
        data += chunk
    return data.decode().rstrip("\n")


def test_server_lines_after_hook_and_several_clients(
        psu_server: tuple[ScpiTcpServer, list[float]]) -> None:
    server, rails = psu_server
    assert server.port > 0
    assert server.resource == f"TCPIP0::127.0.0.1::{server.port}::SOCKET"
    a, b = _connect(server.port), _connect(server.port)
    try:
        a.sendall(b"VOLT 7.4\r\nOUTP ON\n")  # two lines in one segment, CRLF tolerated
        assert _ask(b, "MEAS:VOLT?;OUTP?") == "+7.40000000E+00;1"
        assert _ask(a, "*IDN?").startswith("posrig,SimPowerSupply")
        assert rails[:3] == [0.0, 7.4, 7.4]  # after() sees every line's effect in order
        a.sendall(b"NOPE\n")
        assert _ask(a, "SYST:ERR?") == '-113,"Undefined header"'
    finally:
        a.close()
        b.close()


def test_server_refuses_non_loopback() -> None:
    with pytest.raises(SimError, match="binds only 127.0.0.1"):
        ScpiTcpServer(SimPowerSupply(), host="0.0.0.0")


class _Broken:
    def handle(self, line: str, now: float) -> str | None:
        raise RuntimeError("bench bug")


def test_server_device_failure_is_loud() -> None:
    server = ScpiTcpServer(_Broken(), name="broken")
    server.start()
    try:
        sock = _connect(server.port)
        try:
            sock.sendall(b"*IDN?\n")
            assert sock.recv(10) == b""  # the server stops serving: connection closed
        finally:
            sock.close()
    finally:
        with pytest.raises(SimError, match="device failed while serving: RuntimeError"):
            server.stop(timeout=2.0)


def test_stop_with_a_client_still_connected_is_bounded() -> None:
    server = ScpiTcpServer(SimPowerSupply(), name="lingering")
    server.start()
    sock = _connect(server.port)
    try:
        assert _ask(sock, "*OPC?") == "1"
        t0 = time.monotonic()
        server.stop(timeout=2.0)
        assert time.monotonic() - t0 < 1.0
        assert sock.recv(10) == b""  # the server closed our connection
    finally:
        sock.close()
        server.stop(timeout=2.0)  # idempotent

"""One grammar per fact: VISA resource strings (rigs.scpi) and serial ports (rigs.transport) mean
the same in the bench file (rigs.config) as in the transports that open them."""

from __future__ import annotations

import argparse
from typing import Any

import pytest
import pyvisa.rname

from protocols.errors import ConfigError
from protocols.yamlmodel import port_problem
from rigs.config import parse_bench
from rigs.scpi import RESOURCE_FORMS, VisaScpiTransport, check_resource, resource_error
from rigs.transport import URL_FORMS, serial_transport, serial_url_error, url_schemes
from sim.card.__main__ import _endpoint as vpcd_endpoint
from sim.serving import listen_address

TCPIP_INSTR = ["TCPIP0::192.0.2.5::INSTR", "TCPIP::psu.lab::INSTR",
               "TCPIP0::192.0.2.5::inst0::INSTR", "TCPIP0::psu.lab::hislip0::INSTR",
               "TCPIP0::192.0.2.5::gpib0,5::INSTR"]
GOOD_RESOURCES = [*TCPIP_INSTR, "TCPIP0::127.0.0.1::5025::SOCKET", "tcpip::h::5025::SOCKET",
                  "ASRL/dev/ttyUSB0::INSTR", "ASRL3::INSTR", "GPIB0::5::INSTR",
                  "USB0::0x2A8D::0x1002::MY12345678::INSTR", "USB0::0x2A8D::0x1002::MY1::0::RAW"]
BAD_RESOURCES = ["", "TCPIP::nowhere", "TCPIP0::h", "TCPIP0::127.0.0.1::SOCKET",
                 "TCPIP0::h::0::SOCKET", "TCPIP0::h::70000::SOCKET", "TCPIP0::h::inst0::x::INSTR",
                 "tcpip0::h::instr", "TCPIP0::h::5025::socket", "127.0.0.1:5025",
                 "socket://127.0.0.1:5025", "/dev/ttyUSB0", "USB0::0x2A8D::INSTR", "VXI0::1::INSTR"]


def _bench(**sections: Any) -> dict[str, Any]:
    return {"bench": {"name": "t"}, "terminal": {"port": "loop://"}, **sections}


def _power(resource: str) -> dict[str, Any]:
    return {"resource": resource, "limits": {"max_volts": 8.4, "max_amps": 2.0}}


@pytest.mark.parametrize("resource", GOOD_RESOURCES)
def test_visa_resource_accepted_by_config_scpi_and_pyvisa(resource: str) -> None:
    assert resource_error(resource) is None
    assert check_resource(resource) == resource
    assert VisaScpiTransport(resource).resource == resource
    config = parse_bench(_bench(power=_power(resource), switch={"resource": resource,
                                                                 "channels": {"x": 1}}))
    assert config.power is not None and config.power.resource == resource
    pyvisa.rname.parse_resource_name(resource)  # what the rig accepts, pyvisa-py reads


def test_tcpip_instr_without_device_name_is_inst0_for_pyvisa() -> None:
    parsed = pyvisa.rname.parse_resource_name("TCPIP0::192.0.2.5::INSTR")
    assert isinstance(parsed, pyvisa.rname.TCPIPInstr) and parsed.lan_device_name == "inst0"


@pytest.mark.parametrize("resource", BAD_RESOURCES)
def test_visa_resource_refused_by_config_and_scpi_alike(resource: str) -> None:
    why = resource_error(resource)
    assert why is not None and "expected one of TCPIP0::host::5025::SOCKET" in why
    with pytest.raises(ConfigError, match=r"^power.resource: ") as err:
        check_resource(resource, "power.resource")
    assert str(err.value) == f"power.resource: {why}"
    with pytest.raises(ConfigError) as err:
        parse_bench(_bench(power=_power(resource)), "b.yaml")
    assert f"  power.resource: {why}" in str(err.value)


SCHEMES_URLS = ["loop://", "LOOP://", "alt:///dev/ttyS0?class=PosixPollSerial", "hwgrep://0403:6001",
                "spy://loop://?file=/dev/null", "rfc2217://ser2net.lab:4001",
                "socket://127.0.0.1:4001", "/dev/ttyUSB0", "/dev/serial/by-id/usb-FTDI-if00"]


@pytest.mark.parametrize("url", SCHEMES_URLS)
def test_serial_url_accepted_by_config_and_transport(url: str) -> None:
    assert serial_url_error(url) is None
    config = parse_bench({"bench": {"name": "t"}, "terminal": {"port": url}})
    assert config.terminal.port == url
    if not url.lower().startswith(("hwgrep", "alt")):  # those look for hardware when built
        serial_transport(url)


def test_serial_schemes_are_pyserials_own() -> None:
    assert {"alt", "hwgrep", "loop", "rfc2217", "socket", "spy"} <= set(url_schemes())
    for scheme in url_schemes():
        assert f"{scheme}://" in URL_FORMS


@pytest.mark.parametrize(("url", "why"), [
    ("bogus://x", "pyserial has no handler for bogus://"),
    ("../etc://x", "pyserial has no handler for ../etc://"),
    ("COM3", "is not a serial port URL"),
    ("ttyUSB0", "is not a serial port URL"),
    ("", "is not a serial port URL"),
])
def test_serial_url_refused_by_config_and_transport_alike(url: str, why: str) -> None:
    message = serial_url_error(url)
    assert message is not None and why in message and message.endswith(URL_FORMS)
    with pytest.raises(ConfigError) as err:
        serial_transport(url, where="terminal.port")
    assert str(err.value) == f"terminal.port: {message}"
    with pytest.raises(ConfigError) as err:
        parse_bench({"bench": {"name": "t"}, "terminal": {"port": url}}, "b.yaml")
    assert f"  terminal.port: {message}" in str(err.value)


def test_power_sample_period_has_a_default_and_bounds_named_by_key() -> None:
    resource = "TCPIP0::198.18.3.10::5025::SOCKET"
    config = parse_bench(_bench(power=_power(resource)), "b.yaml")
    assert config.power is not None and config.power.sample_period_ms == 100.0
    fast = {**_power(resource), "sample_period_ms": 5}
    with pytest.raises(ConfigError, match=r"power.sample_period_ms: must be >= 10.0"):
        parse_bench(_bench(power=fast), "b.yaml")


@pytest.mark.parametrize("port", [0, 65536, 70000])
def test_one_port_rule_for_bench_files_visa_and_the_simulators_command_lines(port: int) -> None:
    """The TCP port range was written in rigs/scpi.py, sim/card/__main__.py and sim/serving.py
    apart; all of them now ask protocols.yamlmodel.port_problem (a listener may ask for 0)."""
    why = port_problem(port)
    assert why == f"port {port} outside 1..65535"
    assert resource_error(f"TCPIP0::h::{port}::SOCKET") == (
        f"'TCPIP0::h::{port}::SOCKET': {why}; expected one of {RESOURCE_FORMS}")
    with pytest.raises(argparse.ArgumentTypeError) as err:
        vpcd_endpoint(f"127.0.0.1:{port}")
    assert str(err.value) == f"'127.0.0.1:{port}' is not host:port: {why}"
    listen = listen_address("198.18.0.20:8600")
    if port == 0:
        assert listen("127.0.0.1:0") == ("127.0.0.1", 0)  # ephemeral: only a listener
    else:
        with pytest.raises(argparse.ArgumentTypeError, match=r"\(port 0 or 1\.\.65535\)"):
            listen(f"127.0.0.1:{port}")
    for edge in (1, 65535):
        assert port_problem(edge) is None and vpcd_endpoint(f"h:{edge}") == ("h", edge)
        assert listen(f"h:{edge}") == ("h", edge)
        assert resource_error(f"TCPIP0::h::{edge}::SOCKET") is None

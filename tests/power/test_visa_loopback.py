"""The real path: rig drivers → VisaScpiTransport (pyvisa-py) → TCP loopback → ScpiTcpServer →
the simulated instruments.  Port 0, servers torn down in fixtures, every wait bounded."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from rigs.errors import LimitError, NoResponse, TransportError
from rigs.power import ScpiPowerSupply
from rigs.scpi import VisaScpiTransport
from rigs.switch import ScpiRelayUnit
from sim.psu import SimPowerSupply
from sim.relay import SimRelayUnit
from sim.scpi import ScpiDevice, ScpiTcpServer

# the simulated supply, its server, the rail's changes, and (time.monotonic(), volts) of every
# setpoint the instrument took, as seen server-side
PsuBench = tuple[SimPowerSupply, ScpiTcpServer, list[float], list[tuple[float, float]]]


@pytest.fixture
def psu_bench() -> Iterator[PsuBench]:
    sim = SimPowerSupply(max_volts=30.0, max_amps=3.0)
    rail_changes: list[float] = []
    setpoints: list[tuple[float, float]] = []
    last = [sim.rail_volts, sim.volts]

    def supervisor(device: ScpiDevice) -> None:  # what sim/bench.py does, minus the process
        if sim.rail_volts != last[0]:
            last[0] = sim.rail_volts
            rail_changes.append(sim.rail_volts)
        if sim.volts != last[1]:
            last[1] = sim.volts
            setpoints.append((time.monotonic(), sim.volts))

    server = ScpiTcpServer(sim, after=supervisor, name="psu")
    server.start()
    try:
        yield sim, server, rail_changes, setpoints
    finally:
        server.stop(timeout=2.0)


@pytest.fixture
def relay_bench() -> Iterator[tuple[SimRelayUnit, ScpiTcpServer]]:
    sim = SimRelayUnit()
    server = ScpiTcpServer(sim, name="relay")
    server.start()
    try:
        yield sim, server
    finally:
        server.stop(timeout=2.0)


def test_power_supply_over_pyvisa(psu_bench: PsuBench) -> None:
    sim, server, rail_changes, _ = psu_bench
    psu = ScpiPowerSupply("psu", VisaScpiTransport(server.resource, timeout_ms=1000),
                          max_volts=8.4, max_amps=2.0, nominal_volts=7.4)
    psu.open()
    try:
        assert psu.idn == sim.idn
        psu.restore_nominal()
        assert rail_changes == [7.4]
        with server.lock:
            sim.load_state = "printing"
        assert psu.measure_current() == pytest.approx(1.2)
        assert psu.is_nominal()
        psu.set_current_limit(1.0)  # the printer now wants more than the supply gives
        assert psu.measure_voltage() == pytest.approx(6.1666667, abs=1e-6)
        assert not psu.is_nominal()
        psu.sag_to(5.9)
        with pytest.raises(LimitError):
            psu.sag_to(8.5)
        assert sim.volts == 5.9  # the refused setpoint never reached the instrument
        psu.output_off()
        assert psu.output is False
        assert rail_changes[-1] == 0.0
        psu.check_errors()
    finally:
        psu.close()


def test_ramp_over_pyvisa_lands_in_order_on_schedule(psu_bench: PsuBench) -> None:
    sim, server, rail_changes, setpoints = psu_bench
    psu = ScpiPowerSupply("psu", VisaScpiTransport(server.resource, timeout_ms=1000),
                          max_volts=8.4, max_amps=2.0, nominal_volts=7.4)
    psu.open()
    try:
        psu.restore_nominal()
        del setpoints[:]
        started = time.monotonic()
        psu.ramp_to(6.0, volts_per_s=5.6, step_ms=50.0)  # 250 ms, 5 setpoints
        assert psu.ramping and not psu.is_nominal()
        psu.wait_ramp(3.0)
        assert not psu.ramping
        plan = [7.12, 6.84, 6.56, 6.28, 6.0]
        landed = [v for _, v in setpoints]
        # in order and on the ramp's line (a ramp running late may skip one, never reorder)
        assert landed == [v for v in plan if v in landed] and landed[-1] == 6.0, landed
        assert setpoints[-1][0] >= started + 0.25 - 0.001  # the last one not before its time
        assert psu.measure_voltage() == pytest.approx(6.0)
        assert rail_changes[-1] == 6.0
        psu.check_errors()
    finally:
        psu.close()


def test_dip_over_pyvisa_is_back_at_the_setpoint(psu_bench: PsuBench) -> None:
    sim, server, _, setpoints = psu_bench
    psu = ScpiPowerSupply("psu", VisaScpiTransport(server.resource, timeout_ms=1000),
                          max_volts=8.4, max_amps=2.0, nominal_volts=7.4)
    psu.open()
    try:
        psu.restore_nominal()
        del setpoints[:]
        low_s = psu.dip(5.0, 80.0)
        assert low_s >= 0.08
        assert [v for _, v in setpoints] == [5.0, 7.4]
        assert setpoints[1][0] - setpoints[0][0] >= 0.08  # low that long, seen server-side
        assert psu.measure_voltage() == pytest.approx(7.4)
        with pytest.raises(LimitError):
            psu.dip(8.5, 80.0)
        assert [v for _, v in setpoints] == [5.0, 7.4]  # the refused dip never reached it
        assert psu.is_nominal()
    finally:
        psu.close()


def test_failed_query_is_no_response_with_bound(psu_bench: PsuBench) -> None:
    _, server, _, _ = psu_bench
    transport = VisaScpiTransport(server.resource, timeout_ms=150)
    transport.open()
    try:
        with pytest.raises(NoResponse, match=r"query\('VOLT\? 99'\) got no answer within 150 ms"):
            transport.query("VOLT? 99")
        assert transport.query("SYST:ERR?") == '-222,"Data out of range"'
    finally:
        transport.close()


def test_nothing_listening_is_transport_error() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    transport = VisaScpiTransport(f"TCPIP0::127.0.0.1::{port}::SOCKET", timeout_ms=300)
    with pytest.raises(TransportError, match=rf"127.0.0.1::{port}::SOCKET"):
        transport.open()
        try:
            transport.query("*IDN?")
        finally:
            transport.close()


def test_relay_over_pyvisa(relay_bench: tuple[SimRelayUnit, ScpiTcpServer]) -> None:
    sim, server = relay_bench
    unit = ScpiRelayUnit("sw", VisaScpiTransport(server.resource, timeout_ms=1000))
    unit.open()
    try:
        assert unit.is_nominal()
        unit.close_channel(1)
        assert sim.closed(1) and unit.is_closed(1)
        assert not unit.is_nominal()
        unit.restore_nominal()
        assert not sim.closed(1) and unit.is_nominal()
    finally:
        unit.close()

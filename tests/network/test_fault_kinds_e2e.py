"""End to end (root): the fault kinds that look inside segments, through the real bridge on a
unique test topology, with ISO 8583-framed messages over real TCP connections; and
carrier_loss, which takes the terminal's link down (its interface reports no carrier)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from protocols.faults import Direction, FaultSpec
from rigs.network import ScapyBridgeInjector
from sim import netns
from sim.netns import Topology
from sim.terminal.acquirer import NO_LINK_TEXT
from tests.network.bench_helpers import (
    HOST_PORT,
    connect_fails,
    exchange,
    listen_in_host_ns,
    needs_root,
    unique_topology,
)
from tests.network.test_fault_kinds import iso

pytestmark = needs_root
WAIT_S = 2.0
REPO = Path(__file__).resolve().parents[2]
REQUEST, RESPONSE = iso("0200"), iso("0210")


@pytest.fixture(scope="module")
def topo() -> Iterator[Topology]:
    t = unique_topology()
    netns.create(t)
    try:
        yield t
    finally:
        netns.destroy(t)


@pytest.fixture(scope="module")
def server(topo: Topology) -> Iterator[socket.socket]:
    srv = listen_in_host_ns(topo)
    try:
        yield srv
    finally:
        srv.close()


@pytest.fixture
def injector(topo: Topology, server: socket.socket, workdir: Path
             ) -> Iterator[ScapyBridgeInjector]:
    inj = ScapyBridgeInjector("net", topo.rig_term_if, topo.rig_host_if, topo.rig_ns, workdir)
    inj.open()
    try:
        assert exchange(topo, server, b"warm", WAIT_S) == b"warm"  # ARP caches warm
        yield inj
    finally:
        inj.close()


class Connection:
    """One terminal → host connection: the terminal's socket and the host's accepted one."""

    def __init__(self, topo: Topology, server: socket.socket) -> None:
        self.client = netns.netns_socket(topo.dut_ns)
        self.client.settimeout(WAIT_S)
        self.client.connect((topo.host_ip, HOST_PORT))
        server.settimeout(WAIT_S)
        self.host, _ = server.accept()
        self.host.settimeout(WAIT_S)

    def close(self) -> None:
        self.client.close()
        self.host.close()


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    got = b""
    while len(got) < size:
        chunk = sock.recv(size - len(got))
        assert chunk, "connection closed early"
        got += chunk
    return got


@pytest.fixture
def conn(topo: Topology, server: socket.socket, injector: ScapyBridgeInjector
         ) -> Iterator[Connection]:
    c = Connection(topo, server)
    try:
        yield c
    finally:
        c.close()


def test_drop_message_0210_the_host_answers_the_terminal_never_hears_it(
        injector: ScapyBridgeInjector, conn: Connection) -> None:
    rule_id = injector.apply(FaultSpec.of("drop_message", mti="0210"))
    conn.client.sendall(REQUEST)
    assert recv_exactly(conn.host, len(REQUEST)) == REQUEST  # the request passes
    conn.host.sendall(RESPONSE)
    conn.client.settimeout(1.0)
    with pytest.raises(TimeoutError):
        conn.client.recv(64)  # nor do the host's retransmissions arrive
    trip = injector.last_trip()
    assert trip is not None and trip.rule_id == rule_id and trip.direction is Direction.TO_TERMINAL
    assert trip.tcp is not None and trip.tcp.sport == HOST_PORT
    assert trip.tcp.payload_len == len(RESPONSE)
    record = next(r for r in injector.active() if r.id == rule_id)
    assert record.fired_count == 1 and record.frames_acted >= 2  # the segment + retransmission(s)
    injector.clear(rule_id)
    conn.client.settimeout(4 * WAIT_S)  # the next retransmission, after TCP's backoff
    assert recv_exactly(conn.client, len(RESPONSE)) == RESPONSE


def test_delay_holds_one_direction_without_holding_the_other(
        injector: ScapyBridgeInjector, conn: Connection) -> None:
    injector.apply(FaultSpec.of("delay", ms=150, direction="terminal_to_host"))
    started = time.monotonic()
    conn.client.sendall(REQUEST)
    assert recv_exactly(conn.host, len(REQUEST)) == REQUEST
    to_host = time.monotonic() - started
    started = time.monotonic()
    conn.host.sendall(RESPONSE)
    assert recv_exactly(conn.client, len(RESPONSE)) == RESPONSE
    to_terminal = time.monotonic() - started
    assert 0.14 <= to_host < 1.0, to_host
    assert to_terminal < 0.1, to_terminal
    injector.clear_all()
    stats = injector.stats()
    assert stats.to_host.frames_deferred >= 1 and stats.to_terminal.frames_deferred == 0


def test_delay_both_ways_slows_the_handshake(topo: Topology, server: socket.socket,
                                             injector: ScapyBridgeInjector) -> None:
    injector.apply(FaultSpec.of("delay", ms=100, jitter_ms=20, seed=3))
    started = time.monotonic()
    c = Connection(topo, server)
    took = time.monotonic() - started
    c.close()
    assert 0.16 <= took < 1.5, took  # SYN and SYN/ACK each held 100 ± 20 ms


def test_corrupt_byte_reaches_the_host_flipped(injector: ScapyBridgeInjector,
                                               conn: Connection) -> None:
    injector.apply(FaultSpec.of("corrupt_byte", mti="0200", offset=20))
    conn.client.sendall(REQUEST)
    got = recv_exactly(conn.host, len(REQUEST))
    at = 13 + 20
    assert got[at] == REQUEST[at] ^ 0xFF and got[:at] + got[at + 1:] == \
        REQUEST[:at] + REQUEST[at + 1:]


def test_corrupt_byte_with_bad_checksums_is_retransmitted_intact(
        injector: ScapyBridgeInjector, conn: Connection) -> None:
    rule_id = injector.apply(FaultSpec.of("corrupt_byte", mti="0200", fix_checksums="false"))
    conn.client.sendall(REQUEST)
    assert recv_exactly(conn.host, len(REQUEST)) == REQUEST  # the kernel dropped the bad one
    assert injector.trips()[-1].rule_id == rule_id


def test_forge_rst_resets_the_terminal_on_its_request(
        injector: ScapyBridgeInjector, conn: Connection) -> None:
    injector.apply(FaultSpec.of("forge_rst"))
    conn.client.sendall(REQUEST)
    with pytest.raises(ConnectionResetError):
        conn.client.recv(64)
    assert injector.stats().to_terminal.frames_injected == 1
    conn.host.settimeout(0.3)
    with pytest.raises(TimeoutError):
        conn.host.recv(64)  # the request was dropped


def test_syn_blackhole_makes_connects_time_out(topo: Topology, server: socket.socket,
                                               injector: ScapyBridgeInjector) -> None:
    injector.apply(FaultSpec.of("syn_blackhole"))
    failed, took = connect_fails(topo, 0.5)
    assert failed and took >= 0.45
    assert injector.last_trip() is not None
    injector.clear_all()
    server.settimeout(0.05)  # the connects that got through wait in the backlog: drop them
    try:
        while True:
            server.accept()[0].close()
    except TimeoutError:
        pass
    assert exchange(topo, server, b"back", WAIT_S) == b"back"


def test_drop_segment_the_nth_data_segment_is_lost_and_retransmitted(
        injector: ScapyBridgeInjector, conn: Connection) -> None:
    rule_id = injector.apply(FaultSpec.of("drop_segment", n=2))
    conn.client.sendall(REQUEST)
    assert recv_exactly(conn.host, len(REQUEST)) == REQUEST  # the first passes
    started = time.monotonic()
    conn.client.sendall(REQUEST)  # the second is dropped once: TCP retransmits it
    conn.host.settimeout(4 * WAIT_S)
    assert recv_exactly(conn.host, len(REQUEST)) == REQUEST
    assert time.monotonic() - started >= 0.18  # at least one retransmission time-out (200 ms)
    trips = [t for t in injector.trips() if t.rule_id == rule_id]
    assert len(trips) == 1 and trips[0].direction is Direction.TO_HOST
    assert trips[0].tcp is not None and trips[0].tcp.payload_len == len(REQUEST)


def test_duplicate_the_host_kernel_sees_the_segment_twice(
        injector: ScapyBridgeInjector, conn: Connection) -> None:
    rule_id = injector.apply(FaultSpec.of("duplicate", times=1))
    conn.client.sendall(REQUEST)
    assert recv_exactly(conn.host, len(REQUEST)) == REQUEST
    conn.host.settimeout(0.3)
    with pytest.raises(TimeoutError):
        conn.host.recv(64)  # TCP drops the copy: the application sees the bytes once
    stats = injector.stats()
    assert stats.to_host.frames_injected >= 1  # but the copy did cross the wire
    assert [t.rule_id for t in injector.trips()].count(rule_id) == 1


def test_flap_the_link_goes_down_and_up_and_traffic_gets_through(
        topo: Topology, server: socket.socket, injector: ScapyBridgeInjector) -> None:
    injector.apply(FaultSpec.of("flap", down_ms=300, up_ms=300))
    results = []
    started = time.monotonic()
    while time.monotonic() - started < 1.2:
        failed, _took = connect_fails(topo, 0.25)
        results.append(failed)
    assert True in results and False in results, \
        f"connects during the flapping never {'failed' if False in results else 'succeeded'}"
    injector.clear_all()
    server.settimeout(0.05)  # the connects that got through wait in the backlog: drop them
    try:
        while True:
            server.accept()[0].close()
    except TimeoutError:
        pass
    assert exchange(topo, server, b"back", WAIT_S) == b"back"


def carrier(topo: Topology) -> str:
    """The terminal interface's carrier as its own namespace's sysfs shows it."""
    done = subprocess.run(["ip", "netns", "exec", topo.dut_ns, "cat",
                           f"/sys/class/net/{topo.term_if}/carrier"],
                          capture_output=True, text=True, timeout=WAIT_S, check=False)
    return done.stdout.strip() or done.stderr.strip()


def carrier_becomes(topo: Topology, wanted: str, bound_s: float = WAIT_S) -> str:
    """Wait (bounded) for the terminal interface's carrier to read *wanted*; returns the last
    reading."""
    deadline = time.monotonic() + bound_s
    seen = carrier(topo)
    while seen != wanted and time.monotonic() < deadline:
        time.sleep(0.02)
        seen = carrier(topo)
    return seen


SIGN_IN_IN_DUT = """
import sys, time
from sim.terminal.acquirer import AcquirerClient, CommsError
host, ifname = sys.argv[1], sys.argv[2]
client = AcquirerClient(host, 8583, terminal_id="10000001", merchant_id="898100012340001",
                        master_key=bytes(16), connect_timeout=3.0, netif=ifname)
started = time.monotonic()
try:
    client.sign_in(operator="01", stan=1, batch_no=1)
    print("signed in")
except CommsError as exc:
    print(f"{time.monotonic() - started:.3f} {exc.stage} {exc.display} | {exc}")
"""


def sign_in_from_dut(topo: Topology) -> str:
    """The terminal's acquirer client, in the terminal's namespace, reading its real carrier."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(["ip", "netns", "exec", topo.dut_ns, sys.executable, "-c",
                           SIGN_IN_IN_DUT, topo.host_ip, topo.term_if],
                          capture_output=True, text=True, timeout=10.0, check=False, cwd=REPO,
                          env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_carrier_loss_takes_the_terminal_s_link_down_until_cleared(
        topo: Topology, server: socket.socket, injector: ScapyBridgeInjector) -> None:
    assert carrier(topo) == "1"
    rule_id = injector.apply(FaultSpec.of("carrier_loss"))
    assert carrier_becomes(topo, "0") == "0"
    assert not injector.has_carrier() and not injector.is_nominal()
    failed, _took = connect_fails(topo, 1.0)
    assert failed
    took, stage, text = sign_in_from_dut(topo).split(" | ")[0].split(" ", 2)
    assert (stage, text) == ("connect", NO_LINK_TEXT) and float(took) < 0.5  # no 3 s wait

    injector.clear(rule_id)
    assert carrier_becomes(topo, "1") == "1"
    assert injector.has_carrier() and injector.is_nominal()
    assert exchange(topo, server, b"back", WAIT_S) == b"back"  # through the same bridge
    stats = injector.stats()  # RUNNING (stats() raises for a FAILED bridge)
    assert stats.to_host.recv_link_down >= 1  # its port on the terminal side saw ENETDOWN


def test_restore_brings_the_terminal_s_link_up(
        topo: Topology, server: socket.socket, injector: ScapyBridgeInjector) -> None:
    injector.apply(FaultSpec.of("carrier_loss"))
    injector.apply(FaultSpec.of("carrier_loss"))
    assert carrier_becomes(topo, "0") == "0"
    injector.restore()
    assert carrier_becomes(topo, "1") == "1" and injector.is_nominal()
    assert exchange(topo, server, b"again", WAIT_S) == b"again"

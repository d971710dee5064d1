"""End to end (root): a test topology, the real bridge in the rig namespace, TCP from the
terminal's namespace to a server in the host's, cable pull and restore, the seen and delivered
pcaps, no kernel path."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP
from scapy.utils import rdpcap

from protocols.faults import Direction
from rigs.network import ScapyBridgeInjector
from sim import netns
from sim.netns import Topology
from tests.network.bench_helpers import (
    HOST_PORT,
    connect_fails,
    exchange,
    listen_in_host_ns,
    needs_root,
    unique_topology,
)

pytestmark = needs_root
WAIT_S = 2.0
PULLED_WAIT_S = 0.5


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


def make_injector(topo: Topology, workdir: Path) -> ScapyBridgeInjector:
    return ScapyBridgeInjector("net", topo.rig_term_if, topo.rig_host_if, topo.rig_ns, workdir)


def test_no_kernel_path_without_the_bridge(topo: Topology, server: socket.socket) -> None:
    failed, took = connect_fails(topo, PULLED_WAIT_S)
    assert failed, "terminal reached the host with no bridge running: there is a kernel path"
    assert took < PULLED_WAIT_S + 0.5


def test_pass_pull_restore_and_capture(topo: Topology, server: socket.socket,
                                       workdir: Path) -> None:
    injector = make_injector(topo, workdir)
    injector.open()
    try:
        injector.start_capture(workdir / "run.pcap")
        payload = b"\x00\xc8" + bytes(range(200))
        assert exchange(topo, server, payload, WAIT_S) == payload

        injector.pull_cable()
        assert injector.is_cable_pulled()
        failed, took = connect_fails(topo, PULLED_WAIT_S)
        assert failed, "connected through a pulled cable"
        assert took < PULLED_WAIT_S + 0.5
        dropped = injector.stats().direction(Direction.TO_HOST)
        assert dropped.frames_dropped >= 1  # at least the SYN

        injector.restore()
        assert injector.is_nominal()
        assert exchange(topo, server, b"again", WAIT_S) == b"again"
        final = injector.stats()
        capture = injector.stop_capture()
    finally:
        injector.close()

    frames = rdpcap(str(capture.seen))
    syns = [f for f in frames if TCP in f and f[TCP].flags == "S" and f[TCP].dport == HOST_PORT]
    assert len(syns) >= 3, "the SYNs of the pass, the pulled and the restored connect"
    assert all(f[IP].src == topo.terminal_ip and f[IP].dst == topo.host_ip for f in syns)
    data = [bytes(f[TCP].payload) for f in frames if TCP in f and len(f[TCP].payload)]
    assert data.count(payload) == 2  # request and echoed response, both directions
    assert data.count(b"again") == 2
    stats_total = sum(1 for f in frames if TCP in f)
    assert stats_total >= len(syns) + 4
    # what reached the other side: everything seen but the frames the pulled cable dropped
    delivered = rdpcap(str(capture.delivered))
    assert capture.frames_seen == len(frames) and capture.frames_delivered == len(delivered)
    # frames are only dropped while the cable is pulled, inside the capture
    assert len(frames) - len(delivered) == (final.to_host.frames_dropped
                                            + final.to_terminal.frames_dropped)
    delivered_syns = [f for f in delivered
                      if TCP in f and f[TCP].flags == "S" and f[TCP].dport == HOST_PORT]
    assert 2 <= len(delivered_syns) < len(syns)  # the pulled connect's SYN never arrived
    assert [bytes(f[TCP].payload) for f in delivered
            if TCP in f and len(f[TCP].payload)].count(payload) == 2


def test_pull_on_request_lets_the_connection_up_and_drops_the_request(
        topo: Topology, server: socket.socket, workdir: Path) -> None:
    injector = make_injector(topo, workdir)
    injector.open()
    client = netns.netns_socket(topo.dut_ns)
    conn: socket.socket | None = None
    try:
        assert exchange(topo, server, b"warm", WAIT_S) == b"warm"
        rule_id = injector.pull_cable_on_next_request()
        assert not injector.is_cable_pulled() and injector.last_trip() is None
        client.settimeout(WAIT_S)
        client.connect((topo.host_ip, HOST_PORT))  # the handshake crosses the armed bridge
        server.settimeout(WAIT_S)
        conn, _ = server.accept()
        assert injector.last_trip() is None  # nothing carried data yet
        client.sendall(b"\x00\x05hello")
        conn.settimeout(PULLED_WAIT_S)
        with pytest.raises(TimeoutError):
            conn.recv(64)  # the request never arrives (nor its retransmissions)
        trip = injector.last_trip()
        assert trip is not None and injector.is_cable_pulled() and trip.rule_id == rule_id
        assert trip.direction is Direction.TO_HOST and trip.became is not None
        assert trip.became.kind.value == "cable_pull"
        assert trip.tcp is not None and trip.tcp.dport == HOST_PORT and trip.tcp.payload_len == 7
        assert trip.tcp.src == topo.terminal_ip and trip.tcp.is_ack and trip.tcp.carries_data
        assert [t.n for t in injector.trips(after=trip.n - 1)] == [trip.n]
        injector.restore()
        assert injector.is_nominal() and injector.last_trip() is None
        conn.settimeout(2 * WAIT_S)  # the next retransmission comes after TCP's backoff
        assert conn.recv(64) == b"\x00\x05hello"  # TCP retransmits once the cable is back
    finally:
        client.close()
        if conn is not None:
            conn.close()
        injector.close()


def test_no_kernel_path_after_the_bridge_stopped(topo: Topology, server: socket.socket,
                                                 workdir: Path) -> None:
    injector = make_injector(topo, workdir)
    injector.open()
    assert exchange(topo, server, b"up", WAIT_S) == b"up"  # proves the check below can pass
    injector.close()
    failed, _ = connect_fails(topo, PULLED_WAIT_S)
    assert failed, "terminal reached the host after the bridge stopped: there is a kernel path"

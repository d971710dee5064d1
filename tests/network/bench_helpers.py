"""Helpers of the root-only network tests: unique test topologies and a bounded TCP exchange."""

from __future__ import annotations

import itertools
import os
import socket
import time

import pytest

from sim import netns
from sim.netns import Topology

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")
HOST_PORT = 8583
_counter = itertools.count()


def unique_topology() -> Topology:
    """A topology no other run uses: 'nt' + 4 digits of the pid + a letter (veth ≤ 15 chars)."""
    letter = "abcdefghijklmnopqrstuvwxyz"[next(_counter) % 26]
    return Topology.with_prefix(f"nt{os.getpid() % 10000:04d}{letter}")


def listen_in_host_ns(topo: Topology) -> socket.socket:
    srv = netns.netns_socket(topo.acq_ns)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((topo.host_ip, HOST_PORT))
    srv.listen(8)
    return srv


def exchange(topo: Topology, server: socket.socket, payload: bytes, wait_s: float) -> bytes:
    """Connect from the terminal's namespace, send *payload*, get it echoed back by the server
    side (handled here), all bounded by *wait_s*; returns what the terminal received."""
    client = netns.netns_socket(topo.dut_ns)
    conn: socket.socket | None = None
    try:
        client.settimeout(wait_s)
        client.connect((topo.host_ip, HOST_PORT))
        server.settimeout(wait_s)
        conn, _ = server.accept()
        conn.settimeout(wait_s)
        client.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = conn.recv(65536)
            assert chunk, "host side: connection closed early"
            got += chunk
        conn.sendall(got)
        back = b""
        while len(back) < len(payload):
            chunk = client.recv(65536)
            assert chunk, "terminal side: connection closed early"
            back += chunk
        return back
    finally:
        client.close()
        if conn is not None:
            conn.close()


def connect_fails(topo: Topology, wait_s: float) -> tuple[bool, float]:
    """Try to connect terminal → host within *wait_s*; (failed?, seconds taken)."""
    client = netns.netns_socket(topo.dut_ns)
    started = time.monotonic()
    try:
        client.settimeout(wait_s)
        client.connect((topo.host_ip, HOST_PORT))
        return False, time.monotonic() - started
    except OSError:
        return True, time.monotonic() - started
    finally:
        client.close()

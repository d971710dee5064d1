"""Round trips through the rig's in-line bridge, against a kernel bridge baseline.

    .tox/bench/bin/python benchmarks/network_rtt.py [--count 5000] [--warmup 200] [--connects 2000]

Root only.  Creates test topologies (unique prefix, destroyed at the end) and prints median /
p95 / p99 / max in microseconds; no pass/fail.

1. Per frame, in process: :meth:`BridgeCore.handle` with no rule (the fast path), with a
   CABLE_PULL that forwards the other way (no parsing), and with an armed PULL_ON_REQUEST
   judging a terminal→host ACK (parses the TCP header, forwards).
2. A 2-byte-length-framed 200-byte request answered by a 200-byte response, terminal namespace
   → host namespace: over the host namespace's loopback (reference, no bridge); through a
   Linux bridge in the rig namespace (``netns.create(kernel_bridge=True)``: the lab without an
   injector); through the injector with no rule; with no rule and the capture on.
3. TCP connect (SYN → SYN/ACK; the client then resets) through the kernel bridge, the injector
   with no rule, and the injector with an armed PULL_ON_REQUEST.  An armed PULL_ON_REQUEST
   parses every terminal→host frame and trips on the first one carrying data, so it can't stay
   armed across a request/response exchange; a connect's SYN and RST carry no data, so it
   parses them and forwards them and never trips (checked).  That is the cost of a rule that
   has to look inside frames.

:func:`side_by_side` (benchmarks/run_all.py: ``iso_rtt``, ``iso_rtt_delay_rule``) measures the
request/response of 2. between the *same* namespaces three ways: one topology made with a kernel
bridge, measured; the bridge deleted and the injector opened on the same veth ends, measured with
no rule, then with a ``delay`` rule.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from protocols.faults import Direction, FaultKind, FaultSpec
from rigs.network import ScapyBridgeInjector
from rigs.network.bridge import BridgeCore
from sim import netns
from sim.netns import Topology

PORT = 8583
SIZE = 200
IO_TIMEOUT_S = 2.0
LINGER_RESET = struct.pack("ii", 1, 0)


def recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"peer closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def serve(listener: socket.socket) -> None:
    """Answer every framed request with a framed 200-byte response until the client leaves."""
    conn, _ = listener.accept()
    with conn:
        conn.settimeout(IO_TIMEOUT_S)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        response = struct.pack(">H", SIZE) + bytes([0x5A]) * SIZE
        while True:
            try:
                header = recv_exact(conn, 2)
            except ConnectionError:
                return
            recv_exact(conn, struct.unpack(">H", header)[0])
            conn.sendall(response)


def percentile(sorted_values: list[float], fraction: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, round(fraction * (len(sorted_values) - 1)))]


def listen(server_ns: str, address: str) -> socket.socket:
    listener = netns.netns_socket(server_ns)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((address, PORT))
    listener.listen(64)
    listener.settimeout(IO_TIMEOUT_S)
    return listener


def measure(client_ns: str, server_ns: str, address: str, count: int, warmup: int) -> list[float]:
    """Request/response round trips on one connection (µs)."""
    listener = listen(server_ns, address)
    server = threading.Thread(target=serve, args=(listener,), daemon=True)
    server.start()
    client = netns.netns_socket(client_ns)
    try:
        client.settimeout(IO_TIMEOUT_S)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.connect((address, PORT))
        request = struct.pack(">H", SIZE) + bytes(range(SIZE))
        samples: list[float] = []
        for i in range(warmup + count):
            t0 = time.perf_counter()
            client.sendall(request)
            header = recv_exact(client, 2)
            recv_exact(client, struct.unpack(">H", header)[0])
            if i >= warmup:
                samples.append((time.perf_counter() - t0) * 1e6)
        return samples
    finally:
        client.close()
        server.join(IO_TIMEOUT_S)
        listener.close()


def measure_connects(client_ns: str, server_ns: str, address: str, count: int,
                     warmup: int) -> list[float]:
    """TCP connects (SYN → SYN/ACK), each closed with a reset (no TIME_WAIT, no data) (µs)."""
    listener = listen(server_ns, address)
    stop = threading.Event()

    def accept_all() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.close()

    acceptor = threading.Thread(target=accept_all, daemon=True)
    acceptor.start()
    samples: list[float] = []
    try:
        for i in range(warmup + count):
            client = netns.netns_socket(client_ns)
            try:
                client.settimeout(IO_TIMEOUT_S)
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
                t0 = time.perf_counter()
                client.connect((address, PORT))
                took = (time.perf_counter() - t0) * 1e6
            finally:
                client.close()
            if i >= warmup:
                samples.append(took)
        return samples
    finally:
        stop.set()
        acceptor.join(IO_TIMEOUT_S + 1)
        listener.close()


def report(label: str, samples: list[float], unit: str = "µs") -> None:
    s = sorted(samples)
    print(f"  {label:<44} n={len(s):>6}  median {statistics.median(s):8.1f} {unit}  "
          f"p95 {percentile(s, 0.95):8.1f} {unit}  p99 {percentile(s, 0.99):8.1f} {unit}  "
          f"max {s[-1]:8.1f} {unit}")


def per_frame_ns(core: BridgeCore, direction: Direction, frame: bytes, rounds: int) -> list[float]:
    """Nanoseconds per handle() call, in batches of 1000 frames."""
    handle = core.handle
    samples: list[float] = []
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        for _ in range(1000):
            handle(direction, frame, 0.0, 0.0)
        samples.append((time.perf_counter_ns() - t0) / 1000)
    return samples


def micro(rounds: int) -> None:
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    ack = bytes(Ether() / IP(src="198.18.0.10", dst="198.18.0.20")
                / TCP(sport=40000, dport=PORT, flags="A"))
    print("per frame, BridgeCore.handle() in process (batches of 1000 frames):")
    core = BridgeCore()
    report("no rule (fast path)", per_frame_ns(core, Direction.TO_HOST, ack, rounds), "ns")
    core.add_rule(FaultSpec.of(FaultKind.CABLE_PULL, direction="host_to_terminal"), 0.0)
    report("cable_pull(host_to_terminal), other way", per_frame_ns(
        core, Direction.TO_HOST, ack, rounds), "ns")
    core = BridgeCore()
    rule = core.add_rule(FaultSpec.of(FaultKind.PULL_ON_REQUEST), 0.0)
    report("pull_on_request() armed, terminal ACK", per_frame_ns(
        core, Direction.TO_HOST, ack, rounds), "ns")
    assert rule.fired_count == 0


Results = dict[str, list[float]]


def kernel_bridge_figures(args: argparse.Namespace, rtt: Results, connects: Results) -> None:
    topo = Topology.with_prefix(f"nb{os.getpid() % 10000:04d}k")
    netns.create(topo, kernel_bridge=True)
    try:
        rtt["host-ns loopback (no bridge, reference)"] = measure(
            topo.acq_ns, topo.acq_ns, "127.0.0.1", args.count, args.warmup)
        rtt["kernel bridge (baseline)"] = measure(
            topo.dut_ns, topo.acq_ns, topo.host_ip, args.count, args.warmup)
        connects["kernel bridge (baseline)"] = measure_connects(
            topo.dut_ns, topo.acq_ns, topo.host_ip, args.connects, args.warmup)
    finally:
        netns.destroy(topo)


DELAY_MS = 1.0
"""The delay rule measured: every frame held this long in each direction."""


def injector_figures(args: argparse.Namespace, rtt: Results, connects: Results) -> str:
    """Returns a note on the capture."""
    topo = Topology.with_prefix(f"nb{os.getpid() % 10000:04d}i")
    netns.create(topo)
    try:
        with tempfile.TemporaryDirectory(prefix="nb") as tmp:
            workdir = Path(tmp)
            injector = ScapyBridgeInjector("bench", topo.rig_term_if, topo.rig_host_if,
                                           topo.rig_ns, workdir)
            injector.open()
            try:
                rtt["injector, no rule"] = measure(
                    topo.dut_ns, topo.acq_ns, topo.host_ip, args.count, args.warmup)
                injector.start_capture(workdir / "rtt.pcap")
                rtt["injector, no rule, capture on (seen + delivered)"] = measure(
                    topo.dut_ns, topo.acq_ns, topo.host_ip, args.count, args.warmup)
                capture = injector.stop_capture()
                connects["injector, no rule"] = measure_connects(
                    topo.dut_ns, topo.acq_ns, topo.host_ip, args.connects, args.warmup)
                rule_id = injector.pull_cable_on_next_request()
                armed = measure_connects(topo.dut_ns, topo.acq_ns, topo.host_ip, args.connects,
                                         args.warmup)
                (record,) = injector.active()
                if record.id != rule_id or record.tripped:
                    raise RuntimeError(f"the armed rule tripped during the connects: "
                                       f"{record.describe()}")
                connects["injector, pull_on_request() armed (parses)"] = armed
                injector.clear_all()
                injector.apply(FaultSpec.of(FaultKind.DELAY, ms=DELAY_MS))
                rtt[f"injector, delay({DELAY_MS:g} ms) both ways (adds {2 * DELAY_MS:g} ms by "
                    f"design)"] = measure(topo.dut_ns, topo.acq_ns, topo.host_ip, args.count,
                                          args.warmup)
                injector.clear_all()
            finally:
                injector.close()
    finally:
        netns.destroy(topo)
    return (f"capture: {capture.frames_seen} frames seen, {capture.frames_delivered} "
            f"delivered")


SideBySide = dict[str, list[float]]
"""``kernel_bridge``, ``injector``, ``injector_delay``: request/response round trips (µs)."""


def drop_kernel_bridge(topo: Topology) -> None:
    """Delete *topo*'s kernel bridge: its two veth ends are released, as ``netns.create`` makes
    them without one (up, no address), ready for the injector."""
    subprocess.run([netns.IP, "-n", topo.rig_ns, "link", "del", topo.bridge_if], check=True,
                   capture_output=True, timeout=IO_TIMEOUT_S * 5)
    if netns.has_kernel_bridge(topo):
        raise RuntimeError(f"network_rtt: {topo.bridge_if} still in {topo.rig_ns} after deleting it")


def side_by_side(count: int, warmup: int, delay_ms: float = DELAY_MS) -> SideBySide:
    """Framed 200-byte request/response round trips, terminal namespace → host namespace, on one
    topology: through a kernel bridge; then, the bridge deleted, through the injector with no
    rule and with ``delay(delay_ms)`` (both ways: every frame held *delay_ms*)."""
    if os.geteuid() != 0:
        raise PermissionError("network_rtt: needs root (network namespaces)")
    topo = Topology.with_prefix(f"nb{os.getpid() % 10000:04d}s")
    netns.create(topo, kernel_bridge=True)
    out: SideBySide = {}
    try:
        out["kernel_bridge"] = measure(topo.dut_ns, topo.acq_ns, topo.host_ip, count, warmup)
        drop_kernel_bridge(topo)
        with tempfile.TemporaryDirectory(prefix="nb") as tmp:
            injector = ScapyBridgeInjector("bench", topo.rig_term_if, topo.rig_host_if,
                                           topo.rig_ns, Path(tmp))
            injector.open()
            try:
                out["injector"] = measure(topo.dut_ns, topo.acq_ns, topo.host_ip, count, warmup)
                injector.apply(FaultSpec.of(FaultKind.DELAY, ms=delay_ms))
                out["injector_delay"] = measure(topo.dut_ns, topo.acq_ns, topo.host_ip, count,
                                                warmup)
                injector.clear_all()
            finally:
                injector.close()
    finally:
        netns.destroy(topo)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--count", type=int, default=5000, help="request/response round trips")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--connects", type=int, default=2000, help="TCP connects per path")
    parser.add_argument("--frames", type=int, default=200, help="in-process batches of 1000")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("network_rtt: needs root (network namespaces)", file=sys.stderr)
        return 2
    micro(args.frames)
    rtt: Results = {}
    connects: Results = {}
    kernel_bridge_figures(args, rtt, connects)
    note = injector_figures(args, rtt, connects)
    print(f"request/response, {SIZE}-byte framed request and response, one connection:")
    for label, samples in rtt.items():
        report(label, samples)
    print(f"  ({note})")
    print("TCP connect (SYN -> SYN/ACK), each connection then reset:")
    for label, samples in connects.items():
        report(label, samples)
    print("  (an armed pull_on_request() parses every terminal->host frame; SYN and RST carry no\n"
          "   data, so it forwards them and never trips: checked in the fault ledger)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

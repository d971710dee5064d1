"""Round-trip time of a 200-byte request/response over TCP through the rig's in-line bridge.

    .venv/bin/python benchmarks/network_rtt.py [--count 5000] [--warmup 200]

Root only.  Creates a test topology (unique prefix, destroyed at the end), starts the bridge in
its rig namespace, and times a 2-byte-length-framed 200-byte request answered by a 200-byte
response, terminal namespace → host namespace: once in PASS without capture, once with the pcap
capture on.  For reference, the same exchange over the host namespace's loopback (no bridge).
Prints median / p95 / p99 / max in microseconds; no pass/fail.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

from rigs.network import ScapyBridgeInjector
from sim import netns
from sim.netns import Topology

PORT = 8583
SIZE = 200
IO_TIMEOUT_S = 2.0


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


def measure(client_ns: str, server_ns: str, address: str, count: int, warmup: int) -> list[float]:
    listener = netns.netns_socket(server_ns)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((address, PORT))
    listener.listen(1)
    listener.settimeout(IO_TIMEOUT_S)
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


def report(label: str, samples: list[float]) -> None:
    s = sorted(samples)
    print(f"{label:<34} n={len(s):>6}  median {statistics.median(s):8.1f} µs  "
          f"p95 {percentile(s, 0.95):8.1f} µs  p99 {percentile(s, 0.99):8.1f} µs  "
          f"max {s[-1]:8.1f} µs")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("network_rtt: needs root (network namespaces)", file=sys.stderr)
        return 2
    topo = Topology.with_prefix(f"nb{os.getpid() % 10000:04d}")
    netns.create(topo)
    try:
        with tempfile.TemporaryDirectory(prefix="nb") as tmp:
            workdir = Path(tmp)
            report("host-ns loopback (no bridge)",
                   measure(topo.acq_ns, topo.acq_ns, "127.0.0.1", args.count, args.warmup))
            injector = ScapyBridgeInjector("bench", topo.rig_term_if, topo.rig_host_if,
                                           topo.rig_ns, workdir)
            injector.open()
            try:
                report("through the bridge, PASS",
                       measure(topo.dut_ns, topo.acq_ns, topo.host_ip, args.count, args.warmup))
                injector.start_capture(workdir / "rtt.pcap")
                report("through the bridge, PASS + pcap",
                       measure(topo.dut_ns, topo.acq_ns, topo.host_ip, args.count, args.warmup))
                pcap = injector.stop_capture()
                print(f"pcap: {pcap.stat().st_size} bytes captured")
            finally:
                injector.close()
    finally:
        netns.destroy(topo)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The rig's in-line network injector: a user-space Ethernet bridge between two interfaces.

Run as a process (the driver :class:`rigs.network.ScapyBridgeInjector` starts it)::

    python -m rigs.network.bridge --terminal-if r-term --host-if r-host --control /path/ctl.sock

In a lab the two interfaces are two NICs of the rig PC (terminal side, host side); on the
virtual bench they are the rig's veth ends inside netns ``rig``.  Same code.

Layers, each testable on its own:

* **Rules** — pure functions ``(direction, frame, now) -> Verdict`` (forward / drop / replace
  bytes / defer until a time; a verdict may also name the mode to switch to after this frame,
  which is how a traffic-triggered fault trips).  A mode is a rule; :data:`MODE_RULES` is the
  dispatch table.
  Frames are raw bytes; a rule that needs to look parses them itself (scapy ``Ether(frame)``),
  so the fast path (PASS) never dissects anything.
* :class:`BridgeCore` — applies the current rule, keeps per-direction counters, the timed queue
  of deferred frames and the pcap capture.  No sockets; time passed in.  An exception raised by
  a rule marks the core FAILED (every later frame is dropped and every control answer says
  FAILED): a bug in a rule must fail the scenario loudly, never look like an injected fault.
* :func:`handle_request` — the control protocol (JSON objects in, JSON objects out).
* :class:`BridgeLoop` — the host: ``select`` over the two ports, the control socket and a
  signal wake-up fd, bounded timeouts.  No logic beyond moving bytes.
* :class:`ScapyPort` — a scapy L2 socket bound to one interface, read with ``recv_raw`` (the
  frames we send ourselves are filtered out).

Control protocol (unix stream socket, UTF-8 JSON, one object per line; every answer carries
``ok``, ``state`` (``RUNNING``/``FAILED``), ``failure`` and ``mode``)::

    {"op":"ping"}                               -> {"ok":true,"pid":123,...}
    {"op":"set_mode","mode":"CABLE_PULLED"}     -> {"ok":true,"mode":"CABLE_PULLED",...}
    {"op":"start_capture","path":"/abs/x.pcap"} -> {"ok":true,"path":"/abs/x.pcap",...}
    {"op":"stop_capture"}                       -> {"ok":true,"path":"/abs/x.pcap","frames":42,...}
    {"op":"stats"}                              -> {"ok":true,"directions":{...},"capture":...,
                                                    "trip":{...} or null,"trips":[...]}
    anything wrong                              -> {"ok":false,"error":"...",...}
"""

from __future__ import annotations

import argparse
import enum
import heapq
import json
import logging
import os
import selectors
import signal
import socket
import struct
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any, Protocol

from protocols.errors import hexdump

log = logging.getLogger(__name__)

MAX_FRAME = 65535
IDLE_WAKE_S = 0.5
"""Longest the loop sleeps in select() without an event (it is woken by frames, control
requests, signals and deferred-frame deadlines before that)."""
CONTROL_LINE_MAX = 64 * 1024
TRIPS_KEPT = 100


class Direction(enum.StrEnum):
    TO_HOST = "terminal_to_host"
    TO_TERMINAL = "host_to_terminal"


class Mode(enum.StrEnum):
    PASS = "PASS"
    CABLE_PULLED = "CABLE_PULLED"
    PULL_ON_REQUEST = "PULL_ON_REQUEST"
    """Armed: forward until the terminal sends a TCP segment carrying data towards the host,
    drop that segment and switch to CABLE_PULLED (the cable is pulled with the request in
    flight: the connection is up, the request never arrives)."""


class BridgeState(enum.StrEnum):
    RUNNING = "RUNNING"
    FAILED = "FAILED"


class Action(enum.Enum):
    FORWARD = "forward"
    DROP = "drop"
    REPLACE = "replace"
    DEFER = "defer"


@dataclass(frozen=True)
class Verdict:
    """What a rule decided for one frame.  Build with the helpers below."""

    action: Action
    data: bytes = b""
    until: float = 0.0
    then: Mode | None = None
    """Switch the bridge to this mode once the frame is handled (the fault trips)."""

    @staticmethod
    def replace(data: bytes | bytearray) -> Verdict:
        """Forward *data* instead of the frame (corrupt a byte, forge a RST)."""
        return Verdict(Action.REPLACE, data=bytes(data))

    @staticmethod
    def defer(until: float) -> Verdict:
        """Forward the frame unchanged at monotonic time *until* (delay, reorder)."""
        return Verdict(Action.DEFER, until=until)

    @staticmethod
    def drop_then(mode: Mode) -> Verdict:
        """Drop the frame and switch the bridge to *mode* from the next frame on."""
        return Verdict(Action.DROP, then=mode)


FORWARD = Verdict(Action.FORWARD)
DROP = Verdict(Action.DROP)

Rule = Callable[[Direction, bytes, float], Verdict]
"""A fault rule: (direction, raw Ethernet frame, monotonic now) -> Verdict.  Pure."""


def pass_rule(direction: Direction, frame: bytes, now: float) -> Verdict:
    """PASS: forward everything, untouched."""
    return FORWARD


def cable_pulled_rule(direction: Direction, frame: bytes, now: float) -> Verdict:
    """CABLE_PULLED: drop everything, both directions."""
    return DROP


@dataclass(frozen=True)
class TcpSegment:
    """What a rule may look at in an IPv4 TCP segment: addresses, ports, flags, sequence number
    and the payload length (never the payload itself)."""

    src: str
    dst: str
    sport: int
    dport: int
    flags: int
    seq: int
    payload_len: int

    def describe(self) -> str:
        names = "".join(n for bit, n in zip((0x02, 0x10, 0x08, 0x01, 0x04), "SAPFR", strict=True)
                        if self.flags & bit)
        return (f"TCP {self.src}:{self.sport} > {self.dst}:{self.dport} [{names or '.'}] "
                f"seq {self.seq} with {self.payload_len} payload byte(s)")


ETH_P_IP = 0x0800
ETH_P_8021Q = 0x8100
IPPROTO_TCP = 6


def tcp_segment(frame: bytes) -> TcpSegment | None:
    """Parse just enough of an Ethernet frame (one optional 802.1Q tag) to describe an IPv4 TCP
    segment; None for anything else, including truncated or non-first IP fragments."""
    offset = 12
    if len(frame) < offset + 2:
        return None
    ethertype = int.from_bytes(frame[offset:offset + 2], "big")
    offset += 2
    if ethertype == ETH_P_8021Q:
        if len(frame) < offset + 4:
            return None
        ethertype = int.from_bytes(frame[offset + 2:offset + 4], "big")
        offset += 4
    if ethertype != ETH_P_IP or len(frame) < offset + 20:
        return None
    version_ihl = frame[offset]
    ihl = (version_ihl & 0x0F) * 4
    total_len = int.from_bytes(frame[offset + 2:offset + 4], "big")
    fragment_offset = int.from_bytes(frame[offset + 6:offset + 8], "big") & 0x1FFF
    if (version_ihl >> 4 != 4 or ihl < 20 or frame[offset + 9] != IPPROTO_TCP
            or fragment_offset or total_len < ihl + 20 or len(frame) < offset + total_len):
        return None
    tcp = offset + ihl
    data_offset = (frame[tcp + 12] >> 4) * 4
    if data_offset < 20 or ihl + data_offset > total_len:
        return None
    src = ".".join(str(b) for b in frame[offset + 12:offset + 16])
    dst = ".".join(str(b) for b in frame[offset + 16:offset + 20])
    sport, dport, seq = struct.unpack_from("!HHI", frame, tcp)
    return TcpSegment(src, dst, sport, dport, frame[tcp + 13], seq,
                      total_len - ihl - data_offset)


def pull_on_request_rule(direction: Direction, frame: bytes, now: float) -> Verdict:
    """PULL_ON_REQUEST: forward (ARP, the TCP handshake, …) until the terminal sends data
    towards the host; that segment is dropped and the cable is pulled from then on."""
    if direction is Direction.TO_HOST:
        segment = tcp_segment(frame)
        if segment is not None and segment.payload_len > 0:
            return Verdict.drop_then(Mode.CABLE_PULLED)
    return FORWARD


MODE_RULES: Mapping[Mode, Rule] = MappingProxyType({
    Mode.PASS: pass_rule,
    Mode.CABLE_PULLED: cable_pulled_rule,
    Mode.PULL_ON_REQUEST: pull_on_request_rule,
})


def frame_summary(frame: bytes) -> str:
    """Ethernet header and length only: payloads may carry card data and never go in a message."""
    return f"{len(frame)}-byte frame, Ethernet header {hexdump(frame[:14])}"


# --- capture ---------------------------------------------------------------------------------

PCAP_MAGIC_US = 0xA1B2C3D4
LINKTYPE_ETHERNET = 1


class PcapSink:
    """A classic pcap file (microsecond timestamps, Ethernet); raw bytes in, nothing parsed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.frames = 0
        self._file: IO[bytes] = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._file.write(struct.pack("<IHHiIII", PCAP_MAGIC_US, 2, 4, 0, 0, MAX_FRAME,
                                     LINKTYPE_ETHERNET))

    def write(self, frame: bytes, wall: float) -> None:
        sec = int(wall)
        usec = int((wall - sec) * 1_000_000)
        self._file.write(struct.pack("<IIII", sec, usec, len(frame), len(frame)))
        self._file.write(frame)
        self.frames += 1

    def close(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()


# --- the core ---------------------------------------------------------------------------------


@dataclass
class DirectionStats:
    frames_forwarded: int = 0
    bytes_forwarded: int = 0
    frames_dropped: int = 0
    bytes_dropped: int = 0
    frames_replaced: int = 0
    frames_deferred: int = 0
    send_errors: int = 0


class BridgeError(Exception):
    """A control request the core refuses (turned into ``{"ok": false}`` by handle_request)."""


class BridgeCore:
    """The bridge's state machine: frames in, frames to send out.  No sockets, time passed in."""

    def __init__(self, rules: Mapping[Mode, Rule] = MODE_RULES, mode: Mode = Mode.PASS) -> None:
        self.rules = rules
        self.mode = mode
        self.state = BridgeState.RUNNING
        self.failure: str | None = None
        self.stats: dict[Direction, DirectionStats] = {d: DirectionStats() for d in Direction}
        self.capture: PcapSink | None = None
        self._deferred: list[tuple[float, int, Direction, bytes]] = []
        self._seq = 0
        self.trip: dict[str, Any] | None = None
        """The last traffic-triggered mode switch since the mode was last set, or None."""
        self.trips: deque[dict[str, Any]] = deque(maxlen=TRIPS_KEPT)
        """The latest traffic-triggered switches, each numbered ``n`` from 1 (never reset)."""
        self._trip_count = 0

    def set_mode(self, mode: Mode) -> None:
        if mode not in self.rules:
            raise BridgeError(f"mode {mode.value} has no rule; known: "
                              f"{', '.join(m.value for m in self.rules)}")
        if mode is not self.mode:
            log.info("bridge: mode %s -> %s", self.mode.value, mode.value)
        self.mode = mode
        self.trip = None

    def _tripped(self, direction: Direction, frame: bytes, verdict: Verdict, to: Mode,
                 wall: float) -> None:
        segment = tcp_segment(frame)
        self._trip_count += 1
        self.trip = {
            "n": self._trip_count, "wall": wall, "from": self.mode.value, "to": to.value,
            "direction": direction.value, "action": verdict.action.value,
            "frame": segment.describe() if segment is not None else frame_summary(frame),
            "tcp": None if segment is None else asdict(segment),
        }
        self.trips.append(self.trip)
        log.info("bridge: tripped %s -> %s on %s", self.mode.value, to.value, self.trip["frame"])
        self.mode = to

    def handle(self, direction: Direction, frame: bytes, now: float,
               wall: float) -> list[tuple[Direction, bytes]]:
        """One frame received travelling *direction*; returns the frames to send now."""
        if self.capture is not None:
            self.capture.write(frame, wall)
        counters = self.stats[direction]
        if self.state is BridgeState.FAILED:
            counters.frames_dropped += 1
            counters.bytes_dropped += len(frame)
            return []
        try:
            verdict = self.rules[self.mode](direction, frame, now)
            out = self._apply(direction, frame, verdict, counters)
            if verdict.then is not None:
                if verdict.then not in self.rules:
                    raise TypeError(f"verdict switches to mode {verdict.then!r}, which has no rule")
                self._tripped(direction, frame, verdict, verdict.then, wall)
        except Exception as exc:  # a rule's bug: reported loudly, never an injected fault
            self._fail(f"rule for mode {self.mode.value} raised {type(exc).__name__}: {exc} "
                       f"on a {direction.value} {frame_summary(frame)}")
            counters.frames_dropped += 1
            counters.bytes_dropped += len(frame)
            return []
        return out

    def _apply(self, direction: Direction, frame: bytes, verdict: Verdict,
               counters: DirectionStats) -> list[tuple[Direction, bytes]]:
        action = verdict.action
        if action is Action.FORWARD:
            counters.frames_forwarded += 1
            counters.bytes_forwarded += len(frame)
            return [(direction, frame)]
        if action is Action.DROP:
            counters.frames_dropped += 1
            counters.bytes_dropped += len(frame)
            return []
        if action is Action.REPLACE:
            if not isinstance(verdict.data, bytes) or len(verdict.data) < 14:
                raise TypeError(f"REPLACE verdict carries {len(verdict.data)} bytes; an Ethernet "
                                "frame has at least 14")
            counters.frames_replaced += 1
            counters.frames_forwarded += 1
            counters.bytes_forwarded += len(verdict.data)
            return [(direction, verdict.data)]
        if action is Action.DEFER:
            counters.frames_deferred += 1
            self._seq += 1
            heapq.heappush(self._deferred, (verdict.until, self._seq, direction, frame))
            return []
        raise TypeError(f"unknown verdict action {action!r}")

    def release(self, now: float) -> list[tuple[Direction, bytes]]:
        """Deferred frames whose time has come, in deadline order."""
        out: list[tuple[Direction, bytes]] = []
        while self._deferred and self._deferred[0][0] <= now:
            _, _, direction, frame = heapq.heappop(self._deferred)
            if self.state is BridgeState.FAILED:
                continue
            counters = self.stats[direction]
            counters.frames_forwarded += 1
            counters.bytes_forwarded += len(frame)
            out.append((direction, frame))
        return out

    def next_deadline(self) -> float | None:
        return self._deferred[0][0] if self._deferred else None

    def send_failed(self, direction: Direction, frame: bytes, error: OSError) -> None:
        counters = self.stats[direction]
        counters.send_errors += 1
        if counters.send_errors == 1 or counters.send_errors % 1000 == 0:
            log.warning("bridge: sending a %s %s failed (%s); %d send errors so far",
                        direction.value, frame_summary(frame), error, counters.send_errors)

    def _fail(self, why: str) -> None:
        if self.state is BridgeState.FAILED:
            return
        self.state = BridgeState.FAILED
        self.failure = why
        log.error("bridge: FAILED: %s", why)

    def port_failed(self, port: str, error: OSError) -> None:
        self._fail(f"receiving on {port} failed: {error}")

    def start_capture(self, path: Path) -> None:
        if self.capture is not None:
            raise BridgeError(f"start_capture: a capture to {self.capture.path} is running; "
                              "stop it first")
        if not path.is_absolute():
            raise BridgeError(f"start_capture: path {str(path)!r} must be absolute")
        try:
            self.capture = PcapSink(path)
        except OSError as exc:
            raise BridgeError(f"start_capture: cannot write {path}: {exc}") from exc
        log.info("bridge: capturing to %s", path)

    def stop_capture(self) -> tuple[Path, int]:
        if self.capture is None:
            raise BridgeError("stop_capture: no capture is running")
        sink, self.capture = self.capture, None
        sink.close()
        log.info("bridge: capture %s closed with %d frames", sink.path, sink.frames)
        return sink.path, sink.frames

    def close(self) -> None:
        if self.capture is not None:
            self.stop_capture()

    def snapshot(self) -> dict[str, Any]:
        return {
            "directions": {d.value: asdict(s) for d, s in self.stats.items()},
            "capture": None if self.capture is None else {
                "path": str(self.capture.path), "frames": self.capture.frames},
            "deferred": len(self._deferred),
            "trip": self.trip,
            "trips": list(self.trips),
        }


# --- control protocol -------------------------------------------------------------------------


def _op_ping(core: BridgeCore, request: Mapping[str, Any]) -> dict[str, Any]:
    return {"pid": os.getpid()}


def _op_set_mode(core: BridgeCore, request: Mapping[str, Any]) -> dict[str, Any]:
    raw = request.get("mode")
    try:
        mode = Mode(str(raw))
    except ValueError as exc:
        raise BridgeError(f"set_mode: mode {raw!r} is unknown; expected one of "
                          f"{', '.join(m.value for m in Mode)}") from exc
    core.set_mode(mode)
    return {}


def _op_start_capture(core: BridgeCore, request: Mapping[str, Any]) -> dict[str, Any]:
    raw = request.get("path")
    if not isinstance(raw, str) or not raw:
        raise BridgeError(f"start_capture: 'path' must be a non-empty string, got {raw!r}")
    core.start_capture(Path(raw))
    return {"path": raw}


def _op_stop_capture(core: BridgeCore, request: Mapping[str, Any]) -> dict[str, Any]:
    path, frames = core.stop_capture()
    return {"path": str(path), "frames": frames}


def _op_stats(core: BridgeCore, request: Mapping[str, Any]) -> dict[str, Any]:
    return core.snapshot()


OPS: Mapping[str, Callable[[BridgeCore, Mapping[str, Any]], dict[str, Any]]] = MappingProxyType({
    "ping": _op_ping,
    "set_mode": _op_set_mode,
    "start_capture": _op_start_capture,
    "stop_capture": _op_stop_capture,
    "stats": _op_stats,
})


def handle_request(core: BridgeCore, line: bytes) -> dict[str, Any]:
    """One control line in, one answer out (never raises for a bad request)."""
    answer: dict[str, Any]
    try:
        request = json.loads(line.decode("utf-8"))
        if not isinstance(request, dict):
            raise BridgeError(f"a request is a JSON object, got {type(request).__name__}")
        op = request.get("op")
        handler = OPS.get(op) if isinstance(op, str) else None
        if handler is None:
            raise BridgeError(f"unknown op {op!r}; expected one of {', '.join(OPS)}")
        answer = {"ok": True, **handler(core, request)}
    except (ValueError, UnicodeDecodeError) as exc:
        answer = {"ok": False, "error": f"request is not a JSON line: {exc}"}
    except BridgeError as exc:
        answer = {"ok": False, "error": str(exc)}
    answer.update(state=core.state.value, failure=core.failure, mode=core.mode.value)
    return answer


# --- hosting: ports, the select loop, the process -----------------------------------------------


class Port(Protocol):
    """One side of the bridge."""

    name: str

    def fileno(self) -> int: ...

    def recv_frame(self) -> bytes | None:
        """One received frame, or None if what was read is not to be bridged (our own)."""

    def send_frame(self, frame: bytes) -> None: ...

    def close(self) -> None: ...


SOL_PACKET = 263
PACKET_IGNORE_OUTGOING = 23


class ScapyPort:
    """A scapy L2 socket on one interface: raw frames, never dissected."""

    def __init__(self, ifname: str) -> None:
        # imported here: the driver and the rules don't need scapy (conf.L2socket on Linux)
        from scapy.arch.linux import L2Socket

        self.name = ifname
        self._sock = L2Socket(iface=ifname, promisc=True)
        try:  # don't even queue the frames we send (recv_raw would filter them anyway)
            self._sock.ins.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        except OSError:
            log.debug("bridge: %s: PACKET_IGNORE_OUTGOING unsupported; recv_raw filters", ifname)

    def fileno(self) -> int:
        return int(self._sock.fileno())

    def recv_frame(self) -> bytes | None:
        _, data, _ = self._sock.recv_raw(MAX_FRAME)
        return data if data else None

    def send_frame(self, frame: bytes) -> None:
        self._sock.send(frame)  # type: ignore[arg-type]  # scapy sends bytes as they are

    def close(self) -> None:
        self._sock.close()


class BridgeLoop:
    """select() over both ports, the control socket and a wake-up fd; moves bytes, nothing else."""

    def __init__(self, core: BridgeCore, terminal: Port, host: Port, control: socket.socket,
                 wake_fd: int | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.core = core
        self.ports = {Direction.TO_HOST: host, Direction.TO_TERMINAL: terminal}
        self.control = control
        self.clock = clock
        self.wall = wall
        self.stopping = False
        self._buffers: dict[socket.socket, bytearray] = {}
        self._sel = selectors.DefaultSelector()
        self._sel.register(terminal.fileno(), selectors.EVENT_READ, ("port", Direction.TO_HOST))
        self._sel.register(host.fileno(), selectors.EVENT_READ, ("port", Direction.TO_TERMINAL))
        control.setblocking(False)
        self._sel.register(control, selectors.EVENT_READ, ("listen", None))
        if wake_fd is not None:
            self._sel.register(wake_fd, selectors.EVENT_READ, ("wake", None))
        self._sources = {Direction.TO_HOST: terminal, Direction.TO_TERMINAL: host}

    def stop(self) -> None:
        self.stopping = True

    def run(self) -> None:
        while not self.stopping:
            self.run_once()

    def run_once(self) -> None:
        timeout = IDLE_WAKE_S
        deadline = self.core.next_deadline()
        if deadline is not None:
            timeout = min(timeout, max(0.0, deadline - self.clock()))
        # frames first: a request answered in this round sees every frame already received
        events = sorted(self._sel.select(timeout), key=lambda ev: ev[0].data[0] != "port")
        for key, _ in events:
            kind, arg = key.data
            if kind == "port":
                self._on_frame(arg, key.fd)
            elif kind == "listen":
                self._on_accept()
            elif kind == "conn":
                self._on_control(key.fileobj)  # type: ignore[arg-type]
            else:
                self._drain_wake(key.fd)
        if self.core.next_deadline() is not None:
            self._send(self.core.release(self.clock()))

    def _on_frame(self, direction: Direction, fd: int) -> None:
        port = self._sources[direction]
        try:
            frame = port.recv_frame()
        except OSError as exc:
            self.core.port_failed(port.name, exc)
            self._sel.unregister(fd)
            return
        if frame is None:
            return
        self._send(self.core.handle(direction, frame, self.clock(), self.wall()))

    def _send(self, frames: list[tuple[Direction, bytes]]) -> None:
        for direction, frame in frames:
            try:
                self.ports[direction].send_frame(frame)
            except OSError as exc:
                self.core.send_failed(direction, frame, exc)

    def _on_accept(self) -> None:
        try:
            conn, _ = self.control.accept()
        except BlockingIOError:
            return
        conn.setblocking(False)
        self._buffers[conn] = bytearray()
        self._sel.register(conn, selectors.EVENT_READ, ("conn", None))

    def _on_control(self, conn: socket.socket) -> None:
        try:
            chunk = conn.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._drop_conn(conn)
            return
        buf = self._buffers[conn]
        buf += chunk
        while b"\n" in buf:
            line, _, rest = bytes(buf).partition(b"\n")
            buf[:] = rest
            answer = handle_request(self.core, line)
            try:
                conn.setblocking(True)
                conn.settimeout(1.0)
                conn.sendall(json.dumps(answer).encode() + b"\n")
                conn.setblocking(False)
            except OSError:
                self._drop_conn(conn)
                return
        if len(buf) > CONTROL_LINE_MAX:
            log.warning("bridge: control client sent %d bytes without a newline; dropped", len(buf))
            self._drop_conn(conn)

    def _drop_conn(self, conn: socket.socket) -> None:
        self._buffers.pop(conn, None)
        self._sel.unregister(conn)
        conn.close()

    def _drain_wake(self, fd: int) -> None:
        try:
            os.read(fd, 512)
        except BlockingIOError:
            pass

    def close(self) -> None:
        for conn in list(self._buffers):
            self._drop_conn(conn)
        self._sel.close()


def listen_control(path: Path) -> socket.socket:
    """Bind the control socket (a stale socket file from a dead bridge is replaced)."""
    if path.exists() or path.is_symlink():
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    os.chmod(path, 0o600)
    sock.listen(8)
    return sock


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m rigs.network.bridge",
                                     description="The rig's in-line Ethernet fault injector.")
    parser.add_argument("--terminal-if", required=True, help="interface on the terminal side")
    parser.add_argument("--host-if", required=True, help="interface on the host side")
    parser.add_argument("--control", required=True, type=Path, help="unix socket path")
    parser.add_argument("--ready-fd", type=int, default=None,
                        help="write 'ready PID' (or 'error ...') on this fd, then close it")
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def _report(fd: int | None, text: str) -> None:
    if fd is None:
        return
    try:
        os.write(fd, text.encode() + b"\n")
        os.close(fd)
    except OSError:
        pass


def main(argv: list[str] | None = None, *,
         port_factory: Callable[[str], Port] = ScapyPort,
         rules: Mapping[Mode, Rule] = MODE_RULES) -> int:
    """Entry point of the bridge process.  Exit 0 after SIGTERM/SIGINT, 2 if it cannot start.

    *port_factory* and *rules* are the seams a test bridge replaces (fake ports, a failing rule).
    """
    args = _parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(args.log_level)

    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    loop: BridgeLoop | None = None

    def on_signal(signum: int, _frame: object) -> None:
        log.info("bridge: signal %d, stopping", signum)
        if loop is not None:
            loop.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    core = BridgeCore(rules)
    ports: list[Port] = []
    control: socket.socket | None = None
    try:
        try:
            ports.append(port_factory(args.terminal_if))
            ports.append(port_factory(args.host_if))
            control = listen_control(args.control)
        except Exception as exc:  # reported on the ready fd: the driver raises with the text
            why = f"cannot start bridging {args.terminal_if} ⇄ {args.host_if}: {exc}"
            log.error("bridge: %s", why)
            _report(args.ready_fd, f"error {why}")
            return 2
        loop = BridgeLoop(core, ports[0], ports[1], control, wake_fd=wake_r)
        log.info("bridge: pid %d bridging %s ⇄ %s, control %s", os.getpid(),
                 args.terminal_if, args.host_if, args.control)
        _report(args.ready_fd, f"ready {os.getpid()}")
        loop.run()
        return 0
    finally:
        core.close()
        if loop is not None:
            loop.close()
        for port in ports:
            port.close()
        if control is not None:
            control.close()
            try:
                args.control.unlink()
            except FileNotFoundError:
                pass
        stats = {d.value: asdict(s) for d, s in core.stats.items()}
        log.info("bridge: stopped; %s", json.dumps(stats))


if __name__ == "__main__":
    raise SystemExit(main())

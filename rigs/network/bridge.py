"""The rig's in-line network injector: a user-space Ethernet bridge between two interfaces.

Run as a process (the driver :class:`rigs.network.ScapyBridgeInjector` starts it)::

    python -m rigs.network.bridge --terminal-if r-term --host-if r-host --control /path/ctl.sock

In a lab the two interfaces are two NICs of the rig PC (terminal side, host side); on the
virtual bench they are the rig's veth ends inside netns ``rig``.  Same code.

Layers, each testable on its own:

* **Rules** — pure objects ``rule(direction, frame, now) -> Verdict`` (forward / drop / replace
  bytes / defer until a time; a verdict may also mark a trip, and name the fault the rule turns
  into after this frame, which is how a traffic-triggered fault trips).  A rule is built from a
  :class:`~protocols.faults.FaultSpec` by the factory :data:`RULE_KINDS` maps its kind to.
  Frames are raw bytes; a rule that needs to look parses what it needs (:func:`tcp_segment`),
  so with no rule active the fast path dissects nothing.
* :class:`BridgeCore` — the active rules (in the order they were added; the first verdict
  that is not FORWARD decides), the fault ledger (every rule ever added, latest
  :data:`LEDGER_KEPT`: armed / fired / cleared with wall times), per-direction counters, the timed
  queue of deferred frames and the two pcap captures (frames seen, frames delivered), and
  whether the terminal's link is to be up (``carrier_loss``: it calls an injected carrier hook
  when that changes).  No sockets; time passed in.  An exception raised by a rule marks the
  core FAILED (every later frame is dropped and every control answer says FAILED): a bug in a
  rule must fail the scenario loudly, never look like an injected fault.
* :func:`handle_request` / :class:`ControlSession` — the control protocol (JSON lines in, JSON
  lines out; :mod:`protocols.jsonlines`).
* :class:`BridgeLoop` — the host: ``select`` over the two ports, the control socket and a
  signal wake-up fd, bounded timeouts.  No logic beyond moving bytes.
* :class:`ScapyPort` — a scapy L2 socket bound to one interface, read with ``recv_raw`` (the
  frames we send ourselves are filtered out).
* :class:`IpLink` — the carrier hook of the bridge process: ``ip link set dev IF up|down`` on
  the port facing the terminal, for ``carrier_loss`` (the core decides when; this does it).

Control protocol (unix stream socket, UTF-8 JSON, one object per line; every answer carries
``ok``, ``state`` (``RUNNING``/``FAILED``), ``failure``, ``active`` — the active rules, each
``{"id": N, "spec": {"kind": ..., "params": {...}}}`` in the order they apply — and ``carrier``
(false while the bridge holds the terminal's link down); a request's integer ``seq`` is echoed
in its answer)::

    {"op":"ping"}                                         -> {"pid":123}
    {"op":"add_rule","rule":{"kind":"cable_pull","params":{"direction":"both"}}}
                                                          -> {"id":1,"rule":RULE}
    {"op":"clear_rule","id":1}                            -> {"rule":RULE}
    {"op":"clear_rules"}                                  -> {"cleared":[RULE,...]}
    {"op":"rules"}                                        -> {"rules":[RULE,...]} (the ledger)
    {"op":"trips","after":0}                              -> {"trips":[TRIP,...]}
    {"op":"start_capture","path":"/abs/x.pcap"}           -> {"capture":CAPTURE}
    {"op":"flush_capture"}                                -> {"capture":CAPTURE}
    {"op":"stop_capture"}                                 -> {"capture":CAPTURE}
    {"op":"stats"}                                        -> {"directions":{...},"deferred":0,
                                                              "capture":CAPTURE|null,
                                                              "trips_total":0}
    anything wrong                                        -> {"ok":false,"error":"..."}

RULE, TRIP and CAPTURE are the JSON forms of :class:`~rigs.network.records.RuleRecord`,
:class:`~rigs.network.records.Trip` and :class:`~rigs.network.records.CapturePaths`.
"""

from __future__ import annotations

import argparse
import ctypes
import enum
import errno
import heapq
import json
import logging
import os
import random
import selectors
import signal
import socket
import struct
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any, Protocol

from protocols import controlserver
from protocols.controlserver import ControlClients, answer_request, listen_unix
from protocols.digits import ascii_digits
from protocols.errors import ConfigError, hexdump
from protocols.faults import (
    FAULT_KINDS,
    QR_PARTS,
    Direction,
    FaultKind,
    FaultSpec,
    Target,
    parse_spec,
)
from protocols.iso8583 import HEADER_LEN, LENGTH_PREFIX, MAX_BODY, MIN_BODY, TPDU_LEN
from protocols.qr import OPERATIONS, Operation
from rigs.network.records import (
    FRAME_DIRECTIONS,
    Action,
    CapturePaths,
    RuleRecord,
    TcpSegment,
    Trip,
    delivered_path,
)

log = logging.getLogger(__name__)

MAX_FRAME = 65535
IDLE_WAKE_S = 0.5
"""Longest the loop sleeps in select() without an event (it is woken by frames, control
requests, signals and deferred-frame deadlines before that)."""
CONTROL_SEND_TIMEOUT_S = 1.0
"""Bound of sending one control answer to a client that does not read."""
IP_LINK_TIMEOUT_S = 1.5
"""Bound of one ``ip link set`` of the carrier hook (below the driver's 2 s per request)."""
LINK_DOWN_ERRNOS = frozenset({errno.ENETDOWN, errno.ENXIO})
"""Errors of a receive that mean "the port's link is down", not a broken port."""
LEDGER_KEPT = 200
"""Rules the fault ledger keeps (active ones are never dropped; the oldest cleared ones go)."""
TRIPS_PER_RULE = 50
"""Trips kept per rule in the ledger (``fired_count`` counts them all)."""


class BridgeState(enum.StrEnum):
    RUNNING = "RUNNING"
    FAILED = "FAILED"


# --- verdicts and rules ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """What a rule decided for one frame.  Build with the constants and helpers below."""

    action: Action
    data: bytes = b""
    until: float = 0.0
    then: FaultSpec | None = None
    """Turn the rule into this fault once the frame is handled (the fault trips)."""
    trip: bool = False
    """Record this frame as a trip of the rule in the ledger (implied by ``then``)."""
    extra: tuple[tuple[Direction, bytes], ...] = ()
    """Frames the bridge sends as well, each out of the port its direction leads to (a forged
    RST towards either side, a duplicate); counted as ``frames_injected``."""

    @staticmethod
    def replace(data: bytes | bytearray) -> Verdict:
        """Forward *data* instead of the frame (corrupt a byte, forge a RST)."""
        return Verdict(Action.REPLACE, data=bytes(data))

    @staticmethod
    def defer(until: float) -> Verdict:
        """Forward the frame unchanged at monotonic time *until* (delay, reorder)."""
        return Verdict(Action.DEFER, until=until)

    @staticmethod
    def drop_then(spec: FaultSpec) -> Verdict:
        """Drop the frame and turn the rule into *spec* from the next frame on (a trip)."""
        return Verdict(Action.DROP, then=spec, trip=True)

    @staticmethod
    def drop_and_send(direction: Direction, frame: bytes | bytearray) -> Verdict:
        """Drop the frame and send *frame* travelling *direction* instead (a forged RST)."""
        return Verdict(Action.DROP, extra=((direction, bytes(frame)),))

    @staticmethod
    def forward_twice(direction: Direction, frame: bytes) -> Verdict:
        """Forward the frame, then the same bytes once more (a duplicate)."""
        return Verdict(Action.FORWARD, extra=((direction, frame),))

    def tripped(self) -> Verdict:
        """This verdict, recorded as a trip of the rule (e.g. 'drop the 3rd segment')."""
        return Verdict(self.action, self.data, self.until, self.then, True, self.extra)

    @property
    def decides(self) -> bool:
        """Whether this verdict settles the frame (later rules do not see it)."""
        return self.action is not Action.FORWARD or bool(self.extra)

    @property
    def is_trip(self) -> bool:
        return self.trip or self.then is not None


FORWARD = Verdict(Action.FORWARD)
DROP = Verdict(Action.DROP)


Rule = Callable[[Direction, bytes, float], Verdict]
"""A fault rule: (direction, raw Ethernet frame, monotonic now) -> Verdict.  A function or an
object with ``__call__``; no I/O; it may keep its own state (a counter), nothing else."""


RuleFactory = Callable[[FaultSpec], Rule]
"""Builds the rule of one (validated) fault spec; raises ConfigError for a spec it refuses."""


ETH_P_IP = 0x0800
ETH_P_8021Q = 0x8100
IPPROTO_TCP = 6


_HALF = struct.Struct("!H")
_PORTS_SEQ_ACK = struct.Struct("!HHII")


def _tcp_header(frame: bytes) -> tuple[int, int, int] | None:
    """(IP header offset, TCP header offset, payload length) of an IPv4 TCP segment in an
    Ethernet frame (one optional 802.1Q tag); None for anything else, including truncated or
    non-first IP fragments.  Reads header bytes only."""
    size = len(frame)
    if size < 34:  # Ethernet + the smallest IP header
        return None
    ethertype = _HALF.unpack_from(frame, 12)[0]
    offset = 14
    if ethertype == ETH_P_8021Q:
        if size < 38:
            return None
        ethertype = _HALF.unpack_from(frame, 16)[0]
        offset = 18
    if ethertype != ETH_P_IP or size < offset + 20:
        return None
    version_ihl = frame[offset]
    ihl = (version_ihl & 0x0F) * 4
    total_len = _HALF.unpack_from(frame, offset + 2)[0]
    if (version_ihl >> 4 != 4 or ihl < 20 or frame[offset + 9] != IPPROTO_TCP
            or _HALF.unpack_from(frame, offset + 6)[0] & 0x1FFF
            or total_len < ihl + 20 or size < offset + total_len):
        return None
    tcp = offset + ihl
    data_offset = (frame[tcp + 12] >> 4) * 4
    if data_offset < 20 or ihl + data_offset > total_len:
        return None
    return offset, tcp, total_len - ihl - data_offset


def tcp_payload_len(frame: bytes) -> int | None:
    """The TCP payload length of an IPv4 TCP segment, or None for anything else (the cheapest
    look a rule can take: no record built)."""
    header = _tcp_header(frame)
    return None if header is None else header[2]


def tcp_segment(frame: bytes) -> TcpSegment | None:
    """Describe an IPv4 TCP segment (addresses, ports, flags, sequence and acknowledgement
    numbers, payload length; never the payload); None for anything else."""
    header = _tcp_header(frame)
    if header is None:
        return None
    ip, tcp, payload_len = header
    src = ".".join(str(b) for b in frame[ip + 12:ip + 16])
    dst = ".".join(str(b) for b in frame[ip + 16:ip + 20])
    sport, dport, seq, ack = _PORTS_SEQ_ACK.unpack_from(frame, tcp)
    return TcpSegment(src, dst, sport, dport, frame[tcp + 13], seq, ack, payload_len)


@dataclass(frozen=True)
class CablePull:
    """CABLE_PULL: drop every frame travelling the given way(s).  Parses nothing."""

    reach: Direction = Direction.BOTH

    @classmethod
    def from_spec(cls, spec: FaultSpec) -> CablePull:
        return cls(Direction(spec.params["direction"]))

    def __call__(self, direction: Direction, frame: bytes, now: float) -> Verdict:
        reach = self.reach
        return DROP if reach is Direction.BOTH or reach is direction else FORWARD


CABLE_PULLED_BOTH = FaultSpec.of(FaultKind.CABLE_PULL, direction=Direction.BOTH.value)
_PULL_NOW = Verdict.drop_then(CABLE_PULLED_BOTH)


@dataclass(frozen=True)
class PullOnRequest:
    """PULL_ON_REQUEST: forward (ARP, the TCP handshake, …) until the terminal sends a TCP
    segment carrying data towards the host; drop it, and become CABLE_PULL(both)."""

    @classmethod
    def from_spec(cls, spec: FaultSpec) -> PullOnRequest:
        return cls()

    def __call__(self, direction: Direction, frame: bytes, now: float) -> Verdict:
        if direction is Direction.TO_HOST:
            payload_len = tcp_payload_len(frame)
            if payload_len is not None and payload_len > 0:
                return _PULL_NOW
        return FORWARD


@dataclass(frozen=True)
class CarrierLoss:
    """CARRIER_LOSS: drop every frame both ways, as CABLE_PULL(both).  While a rule of this kind
    is active the core also keeps the terminal's link down (:data:`LINK_KINDS`, its carrier
    hook): the rule itself does no I/O.  Parses nothing."""

    @classmethod
    def from_spec(cls, spec: FaultSpec) -> CarrierLoss:
        return cls()

    def __call__(self, direction: Direction, frame: bytes, now: float) -> Verdict:
        return DROP


# --- helpers of the rules that look inside segments ----------------------------------------------

TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_ACK = 0x10
ISO_MTI_AT = LENGTH_PREFIX + TPDU_LEN + HEADER_LEN
"""Where the MTI starts in a TCP payload that starts an ISO 8583 frame (length, TPDU, header)."""
ISO_TPDU_ID = 0x60
RETRANSMISSIONS_KEPT = 64
"""Dropped messages whose TCP retransmissions a DROP_MESSAGE rule keeps dropping (the latest)."""
FLAP_CATCH_UP_CYCLES = 1000
"""A FLAP rule idle for longer than this many nominal cycles skips them without drawing."""


def tcp_payload(frame: bytes) -> tuple[int, int, int, int] | None:
    """(IP header offset, TCP header offset, payload offset, payload length) of an IPv4 TCP
    segment (see :func:`tcp_payload_len`); None for anything else.  Reads header bytes only."""
    header = _tcp_header(frame)
    if header is None:
        return None
    ip, tcp, size = header
    return ip, tcp, ip + _HALF.unpack_from(frame, ip + 2)[0] - size, size


def _iso_frame_start(frame: bytes, start: int, size: int) -> bool:
    """The payload at *start* (*size* bytes) begins an ISO 8583 frame: a plausible length
    prefix, the TPDU ID and room for the MTI.  Looks at 3 bytes."""
    if size < ISO_MTI_AT + 2 or frame[start + LENGTH_PREFIX] != ISO_TPDU_ID:
        return False
    return MIN_BODY <= _HALF.unpack_from(frame, start)[0] <= MAX_BODY


def _parse_mti(mti: str) -> bytes:
    if len(mti) != 4 or not ascii_digits(mti):
        raise ConfigError(f"an MTI is 4 digits, got {mti!r}")
    return bytes.fromhex(mti)


def iso_mti(frame: bytes) -> str | None:
    """The MTI ("0210") of the ISO 8583 frame a TCP segment's payload starts, or None (not TCP,
    no payload, not the start of a frame, or an MTI that is not BCD)."""
    where = tcp_payload(frame)
    if where is None or not _iso_frame_start(frame, where[2], where[3]):
        return None
    text = frame[where[2] + ISO_MTI_AT:where[2] + ISO_MTI_AT + 2].hex()
    return text if ascii_digits(text) else None


def _carries_mti(frame: bytes, mti: bytes) -> tuple[int, int, int, int] | None:
    """tcp_payload() of a segment whose payload starts an ISO 8583 frame of MTI *mti* (2 BCD
    bytes), else None."""
    where = tcp_payload(frame)
    if where is None or where[3] == 0:
        return None
    start = where[2]
    if (frame[start + ISO_MTI_AT:start + ISO_MTI_AT + 2] != mti
            or not _iso_frame_start(frame, start, where[3])):
        return None
    return where


def internet_checksum(data: bytes | bytearray) -> int:
    """The 16-bit ones' complement checksum of IPv4 and TCP (RFC 1071)."""
    if len(data) % 2:
        data = bytes(data) + b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def fix_checksums(frame: bytearray, ip: int, tcp: int) -> None:
    """Recompute the IPv4 header and TCP checksums of the segment in *frame*, in place."""
    ihl = (frame[ip] & 0x0F) * 4
    total = _HALF.unpack_from(frame, ip + 2)[0]
    frame[ip + 10:ip + 12] = b"\0\0"
    _HALF.pack_into(frame, ip + 10, internet_checksum(frame[ip:ip + ihl]))
    frame[tcp + 16:tcp + 18] = b"\0\0"
    pseudo = bytes(frame[ip + 12:ip + 20]) + struct.pack("!BBH", 0, IPPROTO_TCP, total - ihl)
    _HALF.pack_into(frame, tcp + 16, internet_checksum(pseudo + frame[tcp:ip + total]))


def forge_rst(frame: bytes, *, reply: bool) -> bytes:
    """A TCP RST|ACK the receiver accepts (its sequence number is the one the receiver expects
    next), built from the intercepted data segment *frame*.  ``reply=False``: it travels the
    segment's way, from its sender to its receiver (seq = the segment's seq).  ``reply=True``:
    it travels back, as if from the segment's receiver (seq = the segment's ack, ack = the end of
    the segment).  Ethernet header (MACs swapped for a reply, 802.1Q tag kept), a 20-byte IPv4
    header (DF, TTL 64) and a 20-byte TCP header with correct checksums, padded to 60 bytes."""
    where = tcp_payload(frame)
    if where is None:
        raise ValueError("forge_rst needs an IPv4 TCP segment")
    ip, tcp, _, size = where
    sport, dport, seq, ack = _PORTS_SEQ_ACK.unpack_from(frame, tcp)
    src, dst = frame[ip + 12:ip + 16], frame[ip + 16:ip + 20]
    eth = frame[:ip]
    if reply:
        flags = frame[tcp + 13]
        end = seq + size + (1 if flags & TCP_SYN else 0) + (1 if flags & TCP_FIN else 0)
        eth = frame[6:12] + frame[0:6] + frame[12:ip]
        src, dst, sport, dport = dst, src, dport, sport
        seq, ack = ack, end & 0xFFFFFFFF
    out = bytearray(eth)
    ip_at = len(out)
    out += struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0x4000, 64, IPPROTO_TCP, 0, src, dst)
    out += struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, TCP_RST | TCP_ACK, 0, 0, 0)
    fix_checksums(out, ip_at, ip_at + 20)
    if len(out) < 60:
        out += bytes(60 - len(out))
    return bytes(out)


_DROP_TRIP = DROP.tripped()


def _direction(spec: FaultSpec) -> Direction:
    return Direction(spec.params["direction"])


# --- the rules of the kinds that look inside segments ---------------------------------------------


class DropMessage:
    """DROP_MESSAGE: drop the TCP segments whose payload starts an ISO 8583 frame of one MTI,
    either direction, ``times`` of them (0: every one; each a trip), and from then on the TCP
    retransmissions of those segments (same flow, same sequence number; not trips), so the
    message never arrives.  Everything else is forwarded; once spent, the rule stays active
    (dropping retransmissions only) until cleared."""

    __slots__ = ("mti", "times", "dropped", "_gone")

    def __init__(self, mti: str, times: int = 1) -> None:
        self.mti = _parse_mti(mti)
        self.times = times
        self.dropped = 0
        self._gone: dict[bytes, None] = {}  # flow + seq of the dropped segments, oldest first

    @classmethod
    def from_spec(cls, spec: FaultSpec) -> DropMessage:
        return cls(str(spec.params["mti"]), int(spec.params["times"]))

    def __call__(self, direction: Direction, frame: bytes, now: float) -> Verdict:
        where = tcp_payload(frame)
        if where is None or where[3] == 0:
            return FORWARD
        ip, tcp = where[0], where[1]
        if self._gone and _flow_seq(frame, ip, tcp) in self._gone:
            return DROP  # a retransmission of a dropped message
        if self.times and self.dropped >= self.times:
            return FORWARD
        if _carries_mti(frame, self.mti) is None:
            return FORWARD
        self.dropped += 1
        self._gone[_flow_seq(frame, ip, tcp)] = None
        if len(self._gone) > RETRANSMISSIONS_KEPT:
            del self._gone[next(iter(self._gone))]
        return _DROP_TRIP


def _flow_seq(frame: bytes, ip: int, tcp: int) -> bytes:
    """Addresses, ports and sequence number of a segment, as one key."""
    return frame[ip + 12:ip + 20] + frame[tcp:tcp + 8]


class Delay:
    """DELAY: defer every frame travelling the given way(s) by ``ms`` ± a uniform jitter drawn
    from ``random.Random(seed)`` (never below 0).  The core's timed queue holds the frames; other
    traffic is not stalled.  Without jitter the order of a direction is kept (deadlines grow with
    arrival); with jitter, frames closer together than the jitter may be reordered."""

    __slots__ = ("delay_s", "jitter_s", "reach", "_rng")

    def __init__(self, ms: float, jitter_ms: float = 0.0, reach: Direction = Direction.BOTH,
                 seed: int = 0) -> None:
        self.delay_s = ms / 1000.0
        self.jitter_s = jitter_ms / 1000.0
        self.reach = reach
        self._rng = random.Random(seed)

    @classmethod
    def from_spec(cls, spec: FaultSpec) -> Delay:
        p = spec.params
        return cls(float(p["ms"]), float(p["jitter_ms"]), _direction(spec), int(p["seed"]))

    def __call__(self, direction: Direction, frame: bytes, now: float) -> Verdict:
        reach = self.reach
        if reach is not Direction.BOTH and reach is not direction:
            return FORWARD
        delay = self.delay_s
        if self.jitter_s:
            delay = max(0.0, delay + self._rng.uniform(-self.jitter_s, self.jitter_s))
        return Verdict.defer(now + delay)


class CorruptByte:
    """CORRUPT_BYTE: in the next ``times`` segments (0: every one) whose payload starts an ISO
    8583 frame of the MTI, flip all bits of the byte at ``offset`` from the MTI's first byte
    (a trip each), fixing the IPv4 and TCP checksums unless told not to (then the receiver's
    kernel drops the segment and TCP retransmits the original).  A segment too short to hold
    that byte is forwarded untouched and not counted."""

    __slots__ = ("mti", "offset", "fix", "times", "done")

    def __init__(self, mti: str, offset: int = 20, fix: bool = True, times: int = 1) -> None:
        if offset < 0:
            raise ConfigError(f"corrupt_byte: offset must be >= 0, got {offset}")
        self.mti = _parse_mti(mti)
        self.offset = offset
        self.fix = fix
        self.times = times
        self.done = 0

    @classmethod
    def from_spec(cls, spec: FaultSpec) -> CorruptByte:
        p = spec.params
        return cls(str(p["mti"]), int(p["offset"]), bool(p["fix_checksums"]), int(p["times"]))

    def __call__(self, direction: Direction, frame: bytes, now: float) -> Verdict:
        if self.times and self.done >= self.times:
            return FORWARD
        where = _carries_mti(frame, self.mti)
        if where is None:
            return FORWARD
        ip, tcp, start, size = where
        index = ISO_MTI_AT + self.offset
        if index >= size:
            return FORWARD
        out = bytearray(frame)
        out[start + index] ^= 0xFF
        if self.fix:
            fix_checksums(out, ip, tcp)
        self.done += 1
        return Verdict.replace(out).tripped()


class ForgeRst:
    """FORGE_RST: one-shot.  On the trigger — the next segment whose payload starts an ISO 8583
    frame of ``on_mti`` (either direction), or without ``on_mti`` the next segment carrying data
    that travels against ``direction`` — drop it and send a forged RST travelling ``direction``
    (host_to_terminal: the terminal gets a RST as if from the host), with the sequence number the
    receiver expects.  A trip; forwards everything afterwards."""

    __slots__ = ("reach", "mti", "spent")

    def __init__(self, reach: Direction = Direction.TO_TERMINAL, on_mti: str | None = None
                 ) -> None:
        if reach is Direction.BOTH:
            raise ConfigError("forge_rst: direction is terminal_to_host or host_to_terminal")
        self.reach = reach
        self.mti = None if on_mti is None else _parse_mti(on_mti)
        self.spent = False

    @classmethod
    def from_spec(cls, spec: FaultSpec) -> ForgeRst:
        on_mti = spec.params["on_mti"]
        return cls(_direction(spec), None if on_mti is None else str(on_mti))

    def __call__(self, direction: Direction, frame: bytes, now: float) -> Verdict:
        if self.spent:
            return FORWARD
        if self.mti is None:
            if direction is self.reach or not tcp_payload_len(frame):
                return FORWARD
        elif _carries_mti(frame, self.mti) is None:
            return FORWARD
        self.spent = True
        rst = forge_rst(frame, reply=direction is not self.reach)
        return Verdict.drop_and_send(self.reach, rst).tripped()


class DropSegment:
    """DROP_SEGMENT: count the TCP segments carrying data that travel the given way(s) after
    arming (retransmissions too) and drop the ``n``th (a trip); forward everything else.
    One-shot: TCP retransmits the dropped segment."""

    __slots__ = ("n", "reach", "seen")

    def __init__(self, n: int, reach: Direction = Direction.TO_HOST) -> None:
        if n < 1:
            raise ConfigError(f"drop_segment: n counts from 1, got {n}")
        self.n = n
        self.reach = reach
        self.seen = 0

    @classmethod
    def from_spec(cls, spec: FaultSpec) -> DropSegment:
        return cls(int(spec.params["n"]), _direction(spec))

    def __call__(self, direction: Direction, frame: bytes, now: float) -> Verdict:
        if self.seen >= self.n or not (self.reach is Direction.BOTH or self.reach is direction):
            return FORWARD
        if not tcp_payload_len(frame):
            return FORWARD
        self.seen += 1
        return _DROP_TRIP if self.seen == self.n else FORWARD


@dataclass(frozen=True)
class SynBlackhole:
    """SYN_BLACKHOLE: drop every TCP SYN (without ACK) travelling towards the host, each a trip;
    the terminal's connects time out.  Everything else is forwarded."""

    @classmethod
    def from_spec(cls, spec: FaultSpec) -> SynBlackhole:
        return cls()

    def __call__(self, direction: Direction, frame: bytes, now: float) -> Verdict:
        if direction is not Direction.TO_HOST:
            return FORWARD
        header = _tcp_header(frame)
        if header is None:
            return FORWARD
        flags = frame[header[1] + 13]
        return _DROP_TRIP if flags & TCP_SYN and not flags & TCP_ACK else FORWARD


class Duplicate:
    """DUPLICATE: forward the next ``times`` TCP segments carrying data (0: every one) that
    travel the given way(s) twice, back to back (a trip each; the copy is counted as
    injected)."""

    __slots__ = ("reach", "times", "done")

    def __init__(self, reach: Direction = Direction.TO_HOST, times: int = 1) -> None:
        self.reach = reach
        self.times = times
        self.done = 0

    @classmethod
    def from_spec(cls, spec: FaultSpec) -> Duplicate:
        return cls(_direction(spec), int(spec.params["times"]))

    def takes(self, direction: Direction, frame: bytes) -> bool:
        """Whether this frame is one of the next ``times`` data segments travelling the rule's
        way (counted when it is)."""
        if self.times and self.done >= self.times:
            return False
        if not (self.reach is Direction.BOTH or self.reach is direction):
            return False
        if not tcp_payload_len(frame):
            return False
        self.done += 1
        return True

    def __call__(self, direction: Direction, frame: bytes, now: float) -> Verdict:
        if not self.takes(direction, frame):
            return FORWARD
        return Verdict.forward_twice(direction, frame).tripped()


class Flap:
    """FLAP: the cable goes down (every frame dropped, both directions) and up in turn.  The
    pattern starts, down, with the first frame the rule sees (a rule knows no time before it):
    down ``down_ms``, up ``up_ms``, down …  ``seed`` 0 gives a strict square wave; any other
    seed draws each period uniformly in [0.5, 1.5] × its nominal length from
    ``random.Random(seed)``.  The first frame dropped in each down period is a trip.  Parses
    nothing."""

    __slots__ = ("down_s", "up_s", "_rng", "_end", "_down", "_period", "_tripped")

    def __init__(self, down_ms: float, up_ms: float, seed: int = 0) -> None:
        if down_ms <= 0 or up_ms <= 0:
            raise ConfigError("flap: down_ms and up_ms must be > 0")
        self.down_s = down_ms / 1000.0
        self.up_s = up_ms / 1000.0
        self._rng = random.Random(seed) if seed else None
        self._end: float | None = None
        self._down = True
        self._period = 0
        self._tripped = -1

    @classmethod
    def from_spec(cls, spec: FaultSpec) -> Flap:
        p = spec.params
        return cls(float(p["down_ms"]), float(p["up_ms"]), int(p["seed"]))

    def _length(self, down: bool) -> float:
        nominal = self.down_s if down else self.up_s
        return nominal if self._rng is None else nominal * self._rng.uniform(0.5, 1.5)

    def is_down(self, now: float) -> bool:
        """Where the pattern is at *now* (monotonic; time only goes forward)."""
        end = self._end
        if end is None:
            end = now + self._length(True)
        cycle = self.down_s + self.up_s
        if now - end > FLAP_CATCH_UP_CYCLES * cycle:  # long idle: skip whole cycles, no draws
            skipped = int((now - end) // cycle)
            end += skipped * cycle
            self._period += 2 * skipped
        while now >= end:
            self._down = not self._down
            self._period += 1
            end += self._length(self._down)
        self._end = end
        return self._down

    def __call__(self, direction: Direction, frame: bytes, now: float) -> Verdict:
        if not self.is_down(now):
            return FORWARD
        if self._tripped != self._period:
            self._tripped = self._period
            return _DROP_TRIP
        return DROP


class WatchMessage:
    """WATCH_MESSAGE: forward everything untouched; a segment starting an ISO 8583 message of
    the MTI (either direction) is a trip, so the rig learns the moment the message crossed and
    can fire a fault elsewhere (cut the power as the 0200 leaves).  Retransmissions of a noted
    segment are not noted again."""

    __slots__ = ("mti", "_seen")

    def __init__(self, mti: str) -> None:
        self.mti = _parse_mti(mti)
        self._seen: set[bytes] = set()

    @classmethod
    def from_spec(cls, spec: FaultSpec) -> WatchMessage:
        return cls(str(spec.params["mti"]))

    def __call__(self, direction: Direction, frame: bytes, now: float) -> Verdict:
        found = _carries_mti(frame, self.mti)
        if found is None:
            return FORWARD
        ip, tcp = found[0], found[1]
        key = _flow_seq(frame, ip, tcp)
        if key in self._seen:
            return FORWARD
        if len(self._seen) > 4096:  # a long watch: forget the oldest notes, keep working
            self._seen.clear()
        self._seen.add(key)
        return NOTED


NOTED = Verdict(Action.FORWARD, trip=True)


def _flow(frame: bytes, ip: int, tcp: int) -> bytes:
    """Addresses and ports of a segment (source first), as one key."""
    return frame[ip + 12:ip + 20] + frame[tcp:tcp + 4]


def _reverse_flow(frame: bytes, ip: int, tcp: int) -> bytes:
    """The key of the segments travelling back on the same connection."""
    return frame[ip + 16:ip + 20] + frame[ip + 12:ip + 16] + frame[tcp + 2:tcp + 4] + \
        frame[tcp:tcp + 2]


class DropQr:
    """DROP_QR: the terminal's HTTP requests to the QR payment platform for one operation (a
    segment whose payload starts ``POST /v1/<operation> ``), ``times`` of them (0: every one),
    each a trip.  ``part=request``: that segment and every later data segment of its connection
    towards the platform (the body, retransmissions) are dropped: the platform never hears it.
    ``part=answer``: the request is forwarded; every data segment coming back on its connection
    is dropped (the first one a trip): the platform acted, the terminal never hears its answer.
    Segments without data (ACK, FIN) pass, so the connection hangs rather than fails: the
    terminal waits out its own bound.  Looks at a segment's first bytes only; nothing else is
    touched, and nothing is parsed while the rule is not active."""

    __slots__ = ("line", "operation", "answer", "times", "matched", "_flows", "_noted")

    def __init__(self, operation: str, part: str = "answer", times: int = 1) -> None:
        if operation not in {op.value for op in Operation}:
            raise ConfigError(f"drop_qr: no QR platform operation {operation!r}; known: "
                              f"{', '.join(op.value for op in Operation)}")
        if part not in QR_PARTS:
            raise ConfigError(f"drop_qr: part must be one of {', '.join(QR_PARTS)}, got "
                              f"{part!r}")
        self.operation = operation
        self.line = f"POST {OPERATIONS[Operation(operation)].path} ".encode("ascii")
        self.answer = part == "answer"
        self.times = times
        self.matched = 0
        self._flows: dict[bytes, None] = {}  # connections whose data (one way) is dropped
        self._noted: set[bytes] = set()      # answer flows whose first drop was recorded

    @classmethod
    def from_spec(cls, spec: FaultSpec) -> DropQr:
        p = spec.params
        return cls(str(p["operation"]), str(p["part"]), int(p["times"]))

    def __call__(self, direction: Direction, frame: bytes, now: float) -> Verdict:
        where = tcp_payload(frame)
        if where is None or where[3] == 0:
            return FORWARD
        ip, tcp, start = where[0], where[1], where[2]
        flow = _flow(frame, ip, tcp)
        if flow in self._flows:
            if self.answer and flow not in self._noted:
                self._noted.add(flow)
                return _DROP_TRIP  # the platform's answer, first segment
            return DROP
        if (direction is not Direction.TO_HOST or (self.times and self.matched >= self.times)
                or frame[start:start + len(self.line)] != self.line):
            return FORWARD
        self.matched += 1
        if len(self._flows) >= RETRANSMISSIONS_KEPT:
            gone = next(iter(self._flows))
            del self._flows[gone]
            self._noted.discard(gone)
        if not self.answer:
            self._flows[flow] = None
            return _DROP_TRIP
        self._flows[_reverse_flow(frame, ip, tcp)] = None
        return FORWARD
"""Forward untouched, record as a trip (a watch, not a fault)."""


class Bandwidth:
    """BANDWIDTH: a link of ``kbps`` kilobits per second the given way(s): each frame leaves
    when the previous one of its direction has been serialised (frame bytes × 8 / rate after
    the later of its arrival and the link being free).  Frames wait in the core's timed queue,
    in order; nothing is dropped.  Parses nothing."""

    __slots__ = ("bytes_per_s", "reach", "_free")

    def __init__(self, kbps: float, reach: Direction = Direction.BOTH) -> None:
        if kbps <= 0:
            raise ConfigError("bandwidth: kbps must be > 0")
        self.bytes_per_s = kbps * 1000.0 / 8.0
        self.reach = reach
        self._free: dict[Direction, float] = {}

    @classmethod
    def from_spec(cls, spec: FaultSpec) -> Bandwidth:
        return cls(float(spec.params["kbps"]), _direction(spec))

    def __call__(self, direction: Direction, frame: bytes, now: float) -> Verdict:
        if not (self.reach is Direction.BOTH or self.reach is direction):
            return FORWARD
        start = max(now, self._free.get(direction, now))
        done = start + len(frame) / self.bytes_per_s
        self._free[direction] = done
        return Verdict.defer(done)


class Reorder(Duplicate):
    """REORDER: hold the next ``times`` TCP segments carrying data the given way (0: every one)
    for ``ms``, so the segments sent after them overtake them (a trip each).  Other frames pass
    at once.  It picks its segments as :class:`Duplicate` does."""

    __slots__ = ("hold_s",)

    def __init__(self, ms: float, reach: Direction = Direction.TO_HOST, times: int = 1) -> None:
        super().__init__(reach, times)
        self.hold_s = ms / 1000.0

    @classmethod
    def from_spec(cls, spec: FaultSpec) -> Reorder:
        p = spec.params
        return cls(float(p["ms"]), _direction(spec), int(p["times"]))

    def __call__(self, direction: Direction, frame: bytes, now: float) -> Verdict:
        if not self.takes(direction, frame):
            return FORWARD
        return Verdict.defer(now + self.hold_s).tripped()


RULE_KINDS: Mapping[FaultKind, RuleFactory] = MappingProxyType({
    FaultKind.CABLE_PULL: CablePull.from_spec,
    FaultKind.PULL_ON_REQUEST: PullOnRequest.from_spec,
    FaultKind.DROP_MESSAGE: DropMessage.from_spec,
    FaultKind.DELAY: Delay.from_spec,
    FaultKind.CORRUPT_BYTE: CorruptByte.from_spec,
    FaultKind.FORGE_RST: ForgeRst.from_spec,
    FaultKind.DROP_SEGMENT: DropSegment.from_spec,
    FaultKind.SYN_BLACKHOLE: SynBlackhole.from_spec,
    FaultKind.DUPLICATE: Duplicate.from_spec,
    FaultKind.FLAP: Flap.from_spec,
    FaultKind.WATCH_MESSAGE: WatchMessage.from_spec,
    FaultKind.BANDWIDTH: Bandwidth.from_spec,
    FaultKind.REORDER: Reorder.from_spec,
    FaultKind.CARRIER_LOSS: CarrierLoss.from_spec,
    FaultKind.DROP_QR: DropQr.from_spec,
})
"""Fault kind → factory of its rule.  Adding a network fault kind = one rule class + one row
(and the kind with its parameters in :data:`protocols.faults.FAULT_KINDS`)."""

LINK_KINDS = frozenset({FaultKind.CARRIER_LOSS})
"""Kinds whose active rules take the terminal's link down: while at least one is active the
core has its carrier hook set the port facing the terminal down; when the last one goes it
sets it up again."""

CarrierHook = Callable[[bool], None]
"""Sets the link of the bridge's port facing the terminal: ``True`` up, ``False`` down (the
terminal's NIC then reports no carrier).  Raises, with the interface and the reason in the
message, when it cannot; the core turns that into the refusal of the request."""


def no_carrier_hook(carrier: bool) -> None:
    """The core's default hook: a core without a link to set (unit tests, fake ports)."""


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

    def flush(self) -> None:
        """Whole records only reach the file (the loop is single-threaded): readable as is."""
        self._file.flush()

    def close(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()


class Capture:
    """The two pcaps of one capture: frames seen (as received, whatever became of them) and
    frames delivered (as sent out of a port)."""

    def __init__(self, seen: Path) -> None:
        self.seen = PcapSink(seen)
        try:
            self.delivered = PcapSink(delivered_path(seen))
        except OSError:
            self.seen.close()
            raise

    def paths(self) -> CapturePaths:
        return CapturePaths(self.seen.path, self.delivered.path, self.seen.frames,
                            self.delivered.frames)

    def flush(self) -> None:
        self.seen.flush()
        self.delivered.flush()

    def close(self) -> None:
        try:
            self.seen.close()
        finally:
            self.delivered.close()


# --- the core ---------------------------------------------------------------------------------


@dataclass
class DirectionCounters:
    """Mutable counters of one direction (the driver reads them as records.DirectionStats)."""

    frames_forwarded: int = 0
    bytes_forwarded: int = 0
    frames_dropped: int = 0
    bytes_dropped: int = 0
    frames_replaced: int = 0
    frames_deferred: int = 0
    send_errors: int = 0
    frames_injected: int = 0
    """Frames a rule made up and sent (a forged RST, a duplicate); not in frames_forwarded."""
    recv_link_down: int = 0
    """Receives on this direction's source port that found its link down (ENETDOWN, ENXIO)."""


class BridgeError(Exception):
    """A control request the core refuses (turned into ``{"ok": false}`` by handle_request)."""


class RuleEntry:
    """A rule of the ledger, as the core keeps it (mutable; :meth:`record` is the typed view)."""

    __slots__ = ("id", "spec", "current", "rule", "armed", "cleared", "fired", "fired_count",
                 "frames_acted")

    def __init__(self, rule_id: int, spec: FaultSpec, rule: Rule, armed: float) -> None:
        self.id = rule_id
        self.spec = spec
        self.current = spec
        self.rule = rule
        self.armed = armed
        self.cleared: float | None = None
        self.fired: deque[Trip] = deque(maxlen=TRIPS_PER_RULE)
        self.fired_count = 0
        self.frames_acted = 0

    @property
    def active(self) -> bool:
        return self.cleared is None

    def record(self) -> RuleRecord:
        return RuleRecord(self.id, self.spec, self.current, self.armed, tuple(self.fired),
                          self.fired_count, self.frames_acted, self.cleared, self.active)


class BridgeCore:
    """The bridge's state machine: frames in, frames to send out.  No sockets, time passed in."""

    def __init__(self, rule_kinds: Mapping[FaultKind, RuleFactory] = RULE_KINDS, *,
                 ledger_kept: int = LEDGER_KEPT,
                 on_carrier: CarrierHook = no_carrier_hook) -> None:
        self.rule_kinds = rule_kinds
        self.ledger_kept = ledger_kept
        self.on_carrier = on_carrier
        self.carrier = True
        """The terminal's link as the core last set it (False while a LINK_KINDS rule is
        active, or while setting it up again failed)."""
        self.state = BridgeState.RUNNING
        self.failure: str | None = None
        self.stats: dict[Direction, DirectionCounters] = {
            d: DirectionCounters() for d in FRAME_DIRECTIONS}
        self.capture: Capture | None = None
        self._deferred: list[tuple[float, int, Direction, bytes]] = []
        self._seq = 0
        self._active: list[RuleEntry] = []
        self._ledger: dict[int, RuleEntry] = {}
        self._next_id = 1
        self._trip_count = 0

    # --- rules and the ledger ----------------------------------------------------------------------

    def add_rule(self, spec: FaultSpec, wall: float) -> RuleEntry:
        """Build *spec*'s rule and append it to the active ones (it applies after them)."""
        if spec.target is not Target.NETWORK:
            raise BridgeError(f"add_rule: {spec.describe()} is a {spec.target.value} fault; this "
                              f"bridge injects network faults only")
        factory = self.rule_kinds.get(spec.kind)
        if factory is None:
            raise BridgeError(f"add_rule: kind {spec.kind.value} has no rule in this bridge; it "
                              f"has {', '.join(k.value for k in self.rule_kinds)}")
        try:
            rule = factory(spec)
        except ConfigError as exc:
            raise BridgeError(f"add_rule: {exc}") from exc
        except Exception as exc:  # a factory's bug: the bridge is not to be trusted any more
            self._fail(f"building the rule of {spec.describe()} raised "
                       f"{type(exc).__name__}: {exc}")
            raise BridgeError(f"add_rule: building the rule of {spec.describe()} failed "
                              f"({type(exc).__name__}); the bridge is FAILED") from exc
        oldest: RuleEntry | None = None
        if len(self._ledger) >= self.ledger_kept:
            oldest = next((e for e in self._ledger.values() if not e.active), None)
            if oldest is None:
                raise BridgeError(f"add_rule: {len(self._ledger)} rules are active, the most "
                                  f"this bridge keeps; clear some first")
        if spec.kind in LINK_KINDS and self.carrier:  # refused, not added, if the link stays up
            self._set_carrier(False, f"add_rule: {spec.describe()}")
        if oldest is not None:
            del self._ledger[oldest.id]
        entry = RuleEntry(self._next_id, spec, rule, wall)
        self._next_id += 1
        self._ledger[entry.id] = entry
        self._active.append(entry)
        log.info("bridge: rule #%d %s armed (%d active)", entry.id, spec.describe(),
                 len(self._active))
        return entry

    def clear_rule(self, rule_id: int, wall: float) -> RuleEntry:
        entry = self._ledger.get(rule_id)
        if entry is None:
            kept = ", ".join(f"#{i}" for i in self._ledger) or "none"
            raise BridgeError(f"clear_rule: no rule #{rule_id} (rules kept: {kept})")
        if not entry.active:
            raise BridgeError(f"clear_rule: rule #{rule_id} {entry.spec.describe()} was already "
                              f"cleared")
        if not self.carrier and self._wants_carrier(without=entry):  # stays active if it fails
            self._set_carrier(True, f"clear_rule: rule #{rule_id} {entry.current.describe()}")
        entry.cleared = wall
        self._active.remove(entry)
        log.info("bridge: rule #%d %s cleared (%d active)", entry.id, entry.current.describe(),
                 len(self._active))
        return entry

    def clear_rules(self, wall: float) -> list[RuleEntry]:
        if not self.carrier:  # the link first: if it stays down, every rule stays active
            self._set_carrier(True, "clear_rules")
        return [self.clear_rule(entry.id, wall) for entry in list(self._active)]

    # --- the terminal's link -------------------------------------------------------------------

    def _wants_carrier(self, without: RuleEntry | None = None) -> bool:
        """Whether the link is to be up: no active LINK_KINDS rule (other than *without*)."""
        return not any(e.current.kind in LINK_KINDS for e in self._active if e is not without)

    def _set_carrier(self, carrier: bool, operation: str) -> None:
        """Call the carrier hook; its failure is a BridgeError naming *operation* (the request
        is refused and the core's view of the link is left as it was)."""
        way = "up" if carrier else "down"
        try:
            self.on_carrier(carrier)
        except Exception as exc:  # the hook does I/O: any failure refuses the request
            raise BridgeError(f"{operation}: setting the terminal's link {way} failed: "
                              f"{exc}") from exc
        self.carrier = carrier
        log.info("bridge: the terminal's link is %s (%s)", way, operation)

    def active(self) -> list[RuleEntry]:
        """The active rules, in the order they apply."""
        return list(self._active)

    def ledger(self) -> list[RuleEntry]:
        """Every rule kept, oldest first."""
        return list(self._ledger.values())

    def trips(self, after: int = 0) -> list[Trip]:
        """The kept trips numbered above *after*, in order."""
        found = [t for e in self._ledger.values() for t in e.fired if t.n > after]
        return sorted(found, key=lambda t: t.n)

    @property
    def trips_total(self) -> int:
        return self._trip_count

    # --- frames ------------------------------------------------------------------------------------

    def handle(self, direction: Direction, frame: bytes, now: float,
               wall: float) -> list[tuple[Direction, bytes]]:
        """One frame received travelling *direction*; returns the frames to send now."""
        capture = self.capture
        if capture is not None:
            capture.seen.write(frame, wall)
        counters = self.stats[direction]
        if self.state is BridgeState.FAILED:
            counters.frames_dropped += 1
            counters.bytes_dropped += len(frame)
            return []
        if not self._active:  # the fast path: nothing parsed, nothing decided
            counters.frames_forwarded += 1
            counters.bytes_forwarded += len(frame)
            if capture is not None:
                capture.delivered.write(frame, wall)
            return [(direction, frame)]
        blame: RuleEntry | None = None
        try:
            verdict = FORWARD
            decider: RuleEntry | None = None
            trips: list[tuple[RuleEntry, Verdict]] | None = None
            for blame in self._active:
                v = blame.rule(direction, frame, now)
                if v is FORWARD:  # the common answer: nothing to look at
                    continue
                self._check(v)
                if v.is_trip:
                    trips = [*(trips or ()), (blame, v)]
                if v.decides:
                    verdict, decider = v, blame
                    break
            blame = decider
            out = self._apply(direction, frame, verdict, counters)
            if decider is not None:
                decider.frames_acted += 1
            for blame, v in trips or ():
                self._trip(blame, direction, frame, v, wall)
        except Exception as exc:  # a rule's bug: reported loudly, never an injected fault
            who = (f"rule #{blame.id} {blame.current.describe()}" if blame is not None
                   else "the bridge core")
            self._fail(f"{who} raised {type(exc).__name__}: {exc} on a {direction.value} "
                       f"{frame_summary(frame)}")
            counters.frames_dropped += 1
            counters.bytes_dropped += len(frame)
            return []
        if capture is not None:
            for _, sent in out:
                capture.delivered.write(sent, wall)
        return out

    def _check(self, verdict: object) -> None:
        """A verdict other than the FORWARD constant: is it one the core can carry out?"""
        if not isinstance(verdict, Verdict):
            raise TypeError(f"it returned {type(verdict).__name__}, not a Verdict")
        if verdict.then is not None and verdict.then.kind not in self.rule_kinds:
            raise TypeError(f"its verdict switches to {verdict.then.describe()}, which has no "
                            f"rule in this bridge")
        for item in verdict.extra:
            if (not isinstance(item, tuple) or len(item) != 2 or item[0] not in self.stats
                    or not isinstance(item[1], bytes) or len(item[1]) < 14):
                raise TypeError("its verdict's extra frames must be (terminal_to_host or "
                                "host_to_terminal, an Ethernet frame of 14 bytes or more)")

    def _trip(self, entry: RuleEntry, direction: Direction, frame: bytes, verdict: Verdict,
              wall: float) -> None:
        segment = tcp_segment(frame)
        self._trip_count += 1
        trip = Trip(self._trip_count, entry.id, entry.current, wall, direction,
                    segment.describe() if segment is not None else frame_summary(frame),
                    segment, verdict.action, verdict.then)
        entry.fired.append(trip)
        entry.fired_count += 1
        if verdict.then is not None:
            entry.rule = self.rule_kinds[verdict.then.kind](verdict.then)
            entry.current = verdict.then
            if self._wants_carrier() != self.carrier:  # it became (or stopped being) a link kind
                self._set_carrier(not self.carrier, f"rule #{entry.id} became "
                                                    f"{verdict.then.describe()}")
        log.info("bridge: %s", trip.describe())

    def _apply(self, direction: Direction, frame: bytes, verdict: Verdict,
               counters: DirectionCounters) -> list[tuple[Direction, bytes]]:
        out = self._act(direction, frame, verdict, counters)
        for way, made in verdict.extra:
            self.stats[way].frames_injected += 1
            out.append((way, made))
        return out

    def _act(self, direction: Direction, frame: bytes, verdict: Verdict,
             counters: DirectionCounters) -> list[tuple[Direction, bytes]]:
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

    def release(self, now: float, wall: float) -> list[tuple[Direction, bytes]]:
        """Deferred frames whose time has come, in deadline order (they are not judged again)."""
        out: list[tuple[Direction, bytes]] = []
        while self._deferred and self._deferred[0][0] <= now:
            _, _, direction, frame = heapq.heappop(self._deferred)
            if self.state is BridgeState.FAILED:
                continue
            counters = self.stats[direction]
            counters.frames_forwarded += 1
            counters.bytes_forwarded += len(frame)
            if self.capture is not None:
                self.capture.delivered.write(frame, wall)
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

    def port_link_down(self, direction: Direction, port: str, error: OSError) -> None:
        """A receive on *port* (the source of *direction*) found its link down (ENETDOWN, as a
        packet socket reports once when its interface goes down): counted, not a failure; the
        port stays registered and frames flow again once the link is up."""
        counters = self.stats[direction]
        counters.recv_link_down += 1
        if counters.recv_link_down == 1 or counters.recv_link_down % 1000 == 0:
            log.info("bridge: %s: link down (%s); %d such receive(s) so far", port, error,
                     counters.recv_link_down)

    # --- capture -------------------------------------------------------------------------------------

    def start_capture(self, path: Path) -> CapturePaths:
        if self.capture is not None:
            raise BridgeError(f"start_capture: a capture to {self.capture.seen.path} is running; "
                              "stop it first")
        if not path.is_absolute():
            raise BridgeError(f"start_capture: path {str(path)!r} must be absolute")
        try:
            self.capture = Capture(path)
        except OSError as exc:
            raise BridgeError(f"start_capture: cannot write {path}: {exc}") from exc
        log.info("bridge: capturing to %s and %s", path, self.capture.delivered.path)
        return self.capture.paths()

    def flush_capture(self) -> CapturePaths:
        if self.capture is None:
            raise BridgeError("flush_capture: no capture is running")
        try:
            self.capture.flush()
        except OSError as exc:
            raise BridgeError(f"flush_capture: writing {self.capture.seen.path} failed: "
                              f"{exc}") from exc
        return self.capture.paths()

    def stop_capture(self) -> CapturePaths:
        if self.capture is None:
            raise BridgeError("stop_capture: no capture is running")
        capture, self.capture = self.capture, None
        paths = capture.paths()
        try:
            capture.close()
        except OSError as exc:
            raise BridgeError(f"stop_capture: closing {paths.seen} failed: {exc}") from exc
        log.info("bridge: capture closed: %d frame(s) seen, %d delivered", paths.frames_seen,
                 paths.frames_delivered)
        return paths

    def close(self) -> None:
        """Stop the capture and bring the terminal's link up again (raises BridgeError if
        either fails, after trying both)."""
        try:
            if self.capture is not None:
                self.stop_capture()
        finally:
            if not self.carrier:
                self._set_carrier(True, "bridge shutdown")

    # --- views ---------------------------------------------------------------------------------------

    def active_json(self) -> list[dict[str, Any]]:
        return [{"id": e.id, "spec": e.current.to_json()} for e in self._active]

    def snapshot(self) -> dict[str, Any]:
        return {
            "directions": {d.value: asdict(s) for d, s in self.stats.items()},
            "capture": None if self.capture is None else self.capture.paths().to_json(),
            "deferred": len(self._deferred),
            "trips_total": self._trip_count,
        }


# --- control protocol -------------------------------------------------------------------------

Request = Mapping[str, Any]


def _op_ping(core: BridgeCore, request: Request, wall: float) -> dict[str, Any]:
    return {"pid": os.getpid()}


def _op_add_rule(core: BridgeCore, request: Request, wall: float) -> dict[str, Any]:
    if "rule" not in request:
        raise BridgeError('add_rule: a request needs "rule": {"kind": ..., "params": {...}}; '
                          f"network kinds: {', '.join(_network_kinds())}")
    try:
        spec = parse_spec(request["rule"], where="add_rule: rule")
    except ConfigError as exc:
        raise BridgeError(str(exc)) from exc
    entry = core.add_rule(spec, wall)
    return {"id": entry.id, "rule": entry.record().to_json()}


def _network_kinds() -> list[str]:
    return [k.value for k, ks in FAULT_KINDS.items() if ks.target is Target.NETWORK]


def _rule_id(request: Request) -> int:
    raw = request.get("id")
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise BridgeError(f"clear_rule: 'id' must be a rule id (an integer), got {raw!r}")
    return raw


def _op_clear_rule(core: BridgeCore, request: Request, wall: float) -> dict[str, Any]:
    return {"rule": core.clear_rule(_rule_id(request), wall).record().to_json()}


def _op_clear_rules(core: BridgeCore, request: Request, wall: float) -> dict[str, Any]:
    return {"cleared": [e.record().to_json() for e in core.clear_rules(wall)]}


def _op_rules(core: BridgeCore, request: Request, wall: float) -> dict[str, Any]:
    return {"rules": [e.record().to_json() for e in core.ledger()]}


def _op_trips(core: BridgeCore, request: Request, wall: float) -> dict[str, Any]:
    after = request.get("after", 0)
    if isinstance(after, bool) or not isinstance(after, int) or after < 0:
        raise BridgeError(f"trips: 'after' must be a trip number >= 0, got {after!r}")
    return {"trips": [t.to_json() for t in core.trips(after)]}


def _op_start_capture(core: BridgeCore, request: Request, wall: float) -> dict[str, Any]:
    raw = request.get("path")
    if not isinstance(raw, str) or not raw:
        raise BridgeError(f"start_capture: 'path' must be a non-empty string, got {raw!r}")
    return {"capture": core.start_capture(Path(raw)).to_json()}


def _op_flush_capture(core: BridgeCore, request: Request, wall: float) -> dict[str, Any]:
    return {"capture": core.flush_capture().to_json()}


def _op_stop_capture(core: BridgeCore, request: Request, wall: float) -> dict[str, Any]:
    return {"capture": core.stop_capture().to_json()}


def _op_stats(core: BridgeCore, request: Request, wall: float) -> dict[str, Any]:
    return core.snapshot()


OPS: Mapping[str, Callable[[BridgeCore, Request, float], dict[str, Any]]] = MappingProxyType({
    "ping": _op_ping,
    "add_rule": _op_add_rule,
    "clear_rule": _op_clear_rule,
    "clear_rules": _op_clear_rules,
    "rules": _op_rules,
    "trips": _op_trips,
    "start_capture": _op_start_capture,
    "flush_capture": _op_flush_capture,
    "stop_capture": _op_stop_capture,
    "stats": _op_stats,
})


def _stamp(core: BridgeCore, answer: dict[str, Any]) -> dict[str, Any]:
    answer.update(state=core.state.value, failure=core.failure, active=core.active_json(),
                  carrier=core.carrier)
    return answer


def error_answer(core: BridgeCore, error: str) -> dict[str, Any]:
    """A refusal: ``ok`` false, the reason, and the core's state."""
    return _stamp(core, {"ok": False, "error": error})


def handle_request(core: BridgeCore, request: object, wall: float) -> dict[str, Any]:
    """One decoded control request in, one answer out (never raises for a bad request).
    *wall* is the time rules are armed / cleared at.  A request's ``seq`` (an integer) is echoed
    in its answer, so a client can tell a late answer from the one it waits for."""
    return answer_request(OPS, core, request, wall, refused=(BridgeError,),
                          finish=partial(_stamp, core))


class ControlSession(controlserver.ControlSession):
    """One control client: bytes in (any chunking), answers out, one per request line
    (``feed(data, wall)``).  A line that is not a JSON object gets an error answer and the
    session goes on; a line longer than the buffer's bound ends the session (:attr:`broken`)."""

    def __init__(self, core: BridgeCore, where: str = "bridge control socket") -> None:
        super().__init__(partial(handle_request, core), where,
                         refusal=partial(error_answer, core))


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


IFF_UP = 0x1


class LinkControl(Protocol):
    """The bridge process's hold on the port facing the terminal: the core's carrier hook
    (``control(False)`` sets it down, ``control(True)`` up) and its present state."""

    def __call__(self, carrier: bool) -> None: ...

    def is_up(self) -> bool:
        """Whether the interface is administratively up."""


class LinkError(Exception):
    """The port facing the terminal cannot be set up or down (or read)."""


class IpLink:
    """Sets one interface of the bridge's own network namespace up or down with
    ``ip link set dev IF up|down`` (bounded by :data:`IP_LINK_TIMEOUT_S`); a failure raises
    :class:`LinkError` naming the interface, the command and its stderr."""

    def __init__(self, ifname: str, ip: str = "ip", timeout_s: float = IP_LINK_TIMEOUT_S,
                 sysfs: Path = Path("/sys/class/net")) -> None:
        self.ifname = ifname
        self.ip = ip
        self.timeout_s = timeout_s
        self.sysfs = sysfs

    def __repr__(self) -> str:
        return f"IpLink({self.ifname})"

    def __call__(self, carrier: bool) -> None:
        argv = [self.ip, "link", "set", "dev", self.ifname, "up" if carrier else "down"]
        command = " ".join(argv)
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=self.timeout_s,
                                  check=False, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise LinkError(f"{self.ifname}: `{command}` did not finish within "
                            f"{self.timeout_s:.1f} s") from exc
        except OSError as exc:
            raise LinkError(f"{self.ifname}: `{command}` cannot run: {exc}") from exc
        if done.returncode != 0:
            raise LinkError(f"{self.ifname}: `{command}` failed with exit code "
                            f"{done.returncode}: {done.stderr.strip() or '(no stderr)'}")

    def is_up(self) -> bool:
        path = self.sysfs / self.ifname / "flags"
        try:
            return bool(int(path.read_text().strip(), 16) & IFF_UP)
        except (OSError, ValueError) as exc:
            raise LinkError(f"{self.ifname}: cannot read its flags from {path}: {exc}") from exc


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
        self._sel = selectors.DefaultSelector()
        self._clients = ControlClients(control, lambda: ControlSession(core),
                                       where="bridge control socket",
                                       send_timeout_s=CONTROL_SEND_TIMEOUT_S, recv_size=4096,
                                       on_drop=self._sel.unregister)
        self._sel.register(terminal.fileno(), selectors.EVENT_READ, ("port", Direction.TO_HOST))
        self._sel.register(host.fileno(), selectors.EVENT_READ, ("port", Direction.TO_TERMINAL))
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
            self._send(self.core.release(self.clock(), self.wall()))

    def _on_frame(self, direction: Direction, fd: int) -> None:
        port = self._sources[direction]
        try:
            frame = port.recv_frame()
        except OSError as exc:
            if exc.errno in LINK_DOWN_ERRNOS:  # its link went down (carrier_loss): not broken
                self.core.port_link_down(direction, port.name, exc)
                return
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
        conn = self._clients.accept()
        if conn is not None:
            self._sel.register(conn, selectors.EVENT_READ, ("conn", None))

    def _on_control(self, conn: socket.socket) -> None:
        self._clients.serve(conn, self.wall())

    def _drain_wake(self, fd: int) -> None:
        try:
            os.read(fd, 512)
        except BlockingIOError:
            pass

    def close(self) -> None:
        self._clients.close()
        self._sel.close()


def listen_control(path: Path) -> socket.socket:
    """Bind the control socket (a stale socket file from a dead bridge is replaced; mode
    0600)."""
    return listen_unix(path, "bridge control socket")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m rigs.network.bridge",
                                     description="The rig's in-line Ethernet fault injector.")
    parser.add_argument("--terminal-if", required=True, help="interface on the terminal side")
    parser.add_argument("--host-if", required=True, help="interface on the host side")
    parser.add_argument("--control", required=True, type=Path, help="unix socket path")
    parser.add_argument("--ready-fd", type=int, default=None,
                        help="write 'ready PID' (or 'error ...') on this fd, then close it")
    parser.add_argument("--parent-pid", type=int, default=None,
                        help="die with this process (the rig): SIGTERM when it exits")
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> bool:
    """Ask the kernel for SIGTERM when the process that started this one exits
    (``PR_SET_PDEATHSIG``), here after the exec rather than in a ``preexec_fn`` of the rig: the
    rig has threads (grpc's among them, with a labgrid place), and Python code run between
    fork and exec in a threaded process can deadlock or abort.  False when that parent is
    already gone (it died before the request took effect): the caller exits."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        log.warning("bridge: prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    return os.getppid() == parent_pid


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
         rule_kinds: Mapping[FaultKind, RuleFactory] = RULE_KINDS,
         link_factory: Callable[[str], LinkControl] = IpLink) -> int:
    """Entry point of the bridge process.  Exit 0 after SIGTERM/SIGINT, 2 if it cannot start,
    1 if stopping failed (the terminal's link could not be set up again, or the capture not
    closed; the log says which).

    *port_factory*, *rule_kinds* and *link_factory* (the terminal-side interface's link, for
    ``carrier_loss``) are the seams a test bridge replaces (fake ports, a failing rule, a fake
    link).  A terminal-side interface found down at start (left so by a bridge killed while it
    held the link down) is set up first.
    """
    args = _parse_args(argv)
    if args.parent_pid is not None and not die_with_parent(args.parent_pid):
        _report(args.ready_fd, f"error the rig (pid {args.parent_pid}) exited before the "
                               f"bridge started")
        return 2
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

    link = link_factory(args.terminal_if)
    core = BridgeCore(rule_kinds, on_carrier=link)
    ports: list[Port] = []
    control: socket.socket | None = None
    closed = True
    try:
        try:
            ports.append(port_factory(args.terminal_if))
            ports.append(port_factory(args.host_if))
            if not link.is_up():
                log.warning("bridge: %s is down (a bridge killed during carrier_loss?); "
                            "setting it up", args.terminal_if)
                link(True)
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
    finally:
        try:
            core.close()
        except BridgeError as exc:
            log.error("bridge: stopping: %s", exc)
            closed = False
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
    return 0 if closed else 1


if __name__ == "__main__":
    raise SystemExit(main())

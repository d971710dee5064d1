"""Typed records that cross the injector's process boundary (bridge process → driver → steps).

The bridge answers its control requests with JSON; the driver turns every answer into these
frozen dataclasses with ``from_json`` and hands out nothing else, so a step never reads a raw
dict or a TCP flag bit.  ``from_json`` validates: a malformed answer (a bridge of another
version, a bug) raises :class:`~protocols.errors.TransportError` naming the field, e.g.
``answer to 'rules': rules[2].fired[0].tcp.sport must be an integer >= 0, got 'x'``.

The bridge builds :class:`TcpSegment` and :class:`Trip` itself and serialises them with
``to_json``; the driver reads them back with ``from_json`` (one format, one place).

None of these records holds a payload byte: a TCP segment is described by its header fields and
payload *length* only (payloads carry PAN, track 2 and the PIN block).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from protocols.errors import ConfigError, TransportError
from protocols.faults import Direction, FaultSpec, parse_spec
from rigs.answers import as_bool, as_int, as_list, as_number, as_object, as_str, bad

E = TypeVar("E", bound=enum.Enum)
R = TypeVar("R")

FRAME_DIRECTIONS: tuple[Direction, Direction] = (Direction.TO_HOST, Direction.TO_TERMINAL)
"""The two ways a frame travels (:attr:`Direction.BOTH` only ever names a rule's reach)."""


def covers(reach: Direction, direction: Direction) -> bool:
    """Whether a rule acting on *reach* acts on frames (or a question) about *direction*."""
    return reach is Direction.BOTH or reach is direction


def delivered_path(seen: Path) -> Path:
    """The delivered-frames capture next to the seen one: ``x.pcap`` → ``x.delivered.pcap``
    (any other name gets ``.delivered.pcap`` appended)."""
    if seen.suffix == ".pcap":
        return seen.with_suffix(".delivered.pcap")
    return seen.with_name(seen.name + ".delivered.pcap")


class Action(enum.Enum):
    """What the bridge did with a frame."""

    FORWARD = "forward"
    DROP = "drop"
    REPLACE = "replace"
    DEFER = "defer"


# --- validation helpers (errors name the field) ---------------------------------------------------

_bad = bad
_object = as_object


def _int(raw: Mapping[str, Any], key: str, where: str, *, minimum: int = 0) -> int:
    return as_int(raw.get(key), f"{where}.{key}", minimum=minimum)


def _float(raw: Mapping[str, Any], key: str, where: str) -> float:
    return as_number(raw.get(key), f"{where}.{key}")


def _opt_float(raw: Mapping[str, Any], key: str, where: str) -> float | None:
    if key not in raw:
        raise bad(f"{where}.{key}", "a number or null", "(missing)")
    return None if raw[key] is None else _float(raw, key, where)


def _str(raw: Mapping[str, Any], key: str, where: str) -> str:
    return as_str(raw.get(key), f"{where}.{key}")


def _bool(raw: Mapping[str, Any], key: str, where: str) -> bool:
    return as_bool(raw.get(key), f"{where}.{key}")


def _list(raw: Mapping[str, Any], key: str, where: str) -> Sequence[Any]:
    return as_list(raw.get(key), f"{where}.{key}")


def _enum(cls: type[E], raw: Mapping[str, Any], key: str, where: str) -> E:
    value = raw.get(key)
    try:
        return cls(value)
    except ValueError:
        allowed = ", ".join(str(m.value) for m in cls)
        raise _bad(f"{where}.{key}", f"one of {allowed}", value) from None


def _spec(raw: Mapping[str, Any], key: str, where: str) -> FaultSpec:
    try:
        return parse_spec(raw.get(key), where=f"{where}.{key}")
    except ConfigError as exc:
        raise TransportError(str(exc)) from None


# --- records --------------------------------------------------------------------------------------

TCP_FLAGS: tuple[tuple[int, str], ...] = (
    (0x01, "FIN"), (0x02, "SYN"), (0x04, "RST"), (0x08, "PSH"), (0x10, "ACK"), (0x20, "URG"),
    (0x40, "ECE"), (0x80, "CWR"))
_LETTERS = ((0x02, "S"), (0x10, "A"), (0x08, "P"), (0x01, "F"), (0x04, "R"))


@dataclass(frozen=True)
class TcpSegment:
    """An IPv4 TCP segment's header fields and payload length (never the payload itself)."""

    src: str
    dst: str
    sport: int
    dport: int
    flags: int
    seq: int
    ack: int
    payload_len: int

    @property
    def carries_data(self) -> bool:
        return self.payload_len > 0

    @property
    def flag_names(self) -> tuple[str, ...]:
        """Set flags by name, lowest bit first: ``("SYN", "ACK")``."""
        return tuple(name for bit, name in TCP_FLAGS if self.flags & bit)

    @property
    def is_syn(self) -> bool:
        return bool(self.flags & 0x02)

    @property
    def is_ack(self) -> bool:
        return bool(self.flags & 0x10)

    @property
    def is_fin(self) -> bool:
        return bool(self.flags & 0x01)

    @property
    def is_rst(self) -> bool:
        return bool(self.flags & 0x04)

    @property
    def is_psh(self) -> bool:
        return bool(self.flags & 0x08)

    def describe(self) -> str:
        letters = "".join(letter for bit, letter in _LETTERS if self.flags & bit)
        return (f"TCP {self.src}:{self.sport} > {self.dst}:{self.dport} [{letters or '.'}] "
                f"seq {self.seq} with {self.payload_len} payload byte(s)")

    def to_json(self) -> dict[str, Any]:
        return {"src": self.src, "dst": self.dst, "sport": self.sport, "dport": self.dport,
                "flags": self.flags, "seq": self.seq, "ack": self.ack,
                "payload_len": self.payload_len}

    @classmethod
    def from_json(cls, raw: object, where: str = "tcp") -> TcpSegment:
        obj = _object(raw, where)
        return cls(src=_str(obj, "src", where), dst=_str(obj, "dst", where),
                   sport=_int(obj, "sport", where), dport=_int(obj, "dport", where),
                   flags=_int(obj, "flags", where), seq=_int(obj, "seq", where),
                   ack=_int(obj, "ack", where), payload_len=_int(obj, "payload_len", where))


@dataclass(frozen=True)
class Trip:
    """A rule fired on a frame: which rule (and what it was then), when (wall time), on what,
    what it did, and what it became (a PULL_ON_REQUEST becomes a CABLE_PULL), if anything.
    ``n`` counts trips from 1 over the bridge's life."""

    n: int
    rule_id: int
    spec: FaultSpec
    wall: float
    direction: Direction
    frame: str
    """Description of the frame: TCP header fields, or length and Ethernet header."""
    tcp: TcpSegment | None
    action: Action
    became: FaultSpec | None = None

    def describe(self) -> str:
        switched = f", became {self.became.describe()}" if self.became is not None else ""
        return (f"trip #{self.n}: rule #{self.rule_id} {self.spec.describe()} "
                f"{self.action.value} {self.direction.value} {self.frame}{switched}")

    def to_json(self) -> dict[str, Any]:
        return {"n": self.n, "rule": self.rule_id, "spec": self.spec.to_json(), "wall": self.wall,
                "direction": self.direction.value, "frame": self.frame,
                "tcp": None if self.tcp is None else self.tcp.to_json(),
                "action": self.action.value,
                "became": None if self.became is None else self.became.to_json()}

    @classmethod
    def from_json(cls, raw: object, where: str = "trip") -> Trip:
        obj = _object(raw, where)
        tcp = obj.get("tcp")
        became = obj.get("became")
        return cls(n=_int(obj, "n", where, minimum=1), rule_id=_int(obj, "rule", where, minimum=1),
                   spec=_spec(obj, "spec", where), wall=_float(obj, "wall", where),
                   direction=_enum(Direction, obj, "direction", where),
                   frame=_str(obj, "frame", where),
                   tcp=None if tcp is None else TcpSegment.from_json(tcp, f"{where}.tcp"),
                   action=_enum(Action, obj, "action", where),
                   became=None if became is None else _spec(obj, "became", where))


@dataclass(frozen=True)
class ActiveRule:
    """An entry of the ``active`` list every control answer carries: id and current spec."""

    id: int
    spec: FaultSpec

    @classmethod
    def from_json(cls, raw: object, where: str = "active") -> ActiveRule:
        obj = _object(raw, where)
        return cls(_int(obj, "id", where, minimum=1), _spec(obj, "spec", where))


def active_from_json(raw: object, where: str = "answer") -> tuple[ActiveRule, ...]:
    """The ``active`` list of a control answer."""
    items = _list(_object(raw, where), "active", where)
    return tuple(ActiveRule.from_json(item, f"{where}.active[{i}]") for i, item in enumerate(items))


def carrier_from_json(raw: object, where: str = "answer") -> bool:
    """The ``carrier`` of a control answer: false while the bridge holds the terminal's link
    down (a ``carrier_loss`` rule active, or setting the link up again failed)."""
    return _bool(_object(raw, where), "carrier", where)


def list_from_json(raw: object, key: str, parse: Callable[[object, str], R],
                   where: str = "answer") -> list[R]:
    """``raw[key]`` as a list, each item parsed by *parse* (errors name ``key[i]``)."""
    items = _list(_object(raw, where), key, where)
    return [parse(item, f"{key}[{i}]") for i, item in enumerate(items)]


@dataclass(frozen=True)
class RuleRecord:
    """One rule of the fault ledger: armed / fired / cleared with wall times.

    ``spec`` is the rule as it was added; ``current`` what it is now (they differ after a
    traffic-triggered switch).  ``fired`` holds the rule's latest trips (``fired_count`` counts
    all of them); ``frames_acted`` counts the frames it dropped, replaced or deferred."""

    id: int
    spec: FaultSpec
    current: FaultSpec
    armed: float
    fired: tuple[Trip, ...]
    fired_count: int
    frames_acted: int
    cleared: float | None
    active: bool

    @property
    def tripped(self) -> bool:
        return self.fired_count > 0

    @property
    def last_trip(self) -> Trip | None:
        return self.fired[-1] if self.fired else None

    def describe(self) -> str:
        now = "" if self.current == self.spec else f" (now {self.current.describe()})"
        state = "active" if self.active else "cleared"
        return (f"rule #{self.id} {self.spec.describe()}{now}: {state}, fired "
                f"{self.fired_count} time(s), acted on {self.frames_acted} frame(s)")

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "spec": self.spec.to_json(), "current": self.current.to_json(),
                "armed": self.armed, "fired": [t.to_json() for t in self.fired],
                "fired_count": self.fired_count, "frames_acted": self.frames_acted,
                "cleared": self.cleared, "active": self.active}

    @classmethod
    def from_json(cls, raw: object, where: str = "rule") -> RuleRecord:
        obj = _object(raw, where)
        fired = tuple(Trip.from_json(t, f"{where}.fired[{i}]")
                      for i, t in enumerate(_list(obj, "fired", where)))
        return cls(id=_int(obj, "id", where, minimum=1), spec=_spec(obj, "spec", where),
                   current=_spec(obj, "current", where), armed=_float(obj, "armed", where),
                   fired=fired, fired_count=_int(obj, "fired_count", where),
                   frames_acted=_int(obj, "frames_acted", where),
                   cleared=_opt_float(obj, "cleared", where), active=_bool(obj, "active", where))


@dataclass(frozen=True)
class DirectionStats:
    """The bridge's counters for one direction since it started."""

    frames_forwarded: int = 0
    bytes_forwarded: int = 0
    frames_dropped: int = 0
    bytes_dropped: int = 0
    frames_replaced: int = 0
    frames_deferred: int = 0
    send_errors: int = 0
    frames_injected: int = 0
    """Frames a rule made up and sent this way (a forged RST, a duplicate's copy)."""
    recv_link_down: int = 0
    """Receives on this direction's source port that found its link down (ENETDOWN: the
    terminal's link set down for carrier_loss); not a failure of the bridge."""

    @classmethod
    def from_json(cls, raw: object, where: str = "direction") -> DirectionStats:
        obj = _object(raw, where)
        return cls(**{name: _int(obj, name, where) for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class CapturePaths:
    """The two pcaps of one capture: every frame the bridge *saw* (received, whatever became of
    it) and every frame it *delivered* (sent out of a port: forwarded, replaced, released after a
    delay).  Both hold raw payloads (card data): only the driver's caller handles them."""

    seen: Path
    delivered: Path
    frames_seen: int
    frames_delivered: int

    def to_json(self) -> dict[str, Any]:
        return {"seen": str(self.seen), "delivered": str(self.delivered),
                "frames_seen": self.frames_seen, "frames_delivered": self.frames_delivered}

    @classmethod
    def from_json(cls, raw: object, where: str = "capture") -> CapturePaths:
        obj = _object(raw, where)
        return cls(Path(_str(obj, "seen", where)), Path(_str(obj, "delivered", where)),
                   _int(obj, "frames_seen", where), _int(obj, "frames_delivered", where))


@dataclass(frozen=True)
class InjectorStats:
    """Counters per direction, frames waiting in the delay queue, the running capture (if any)
    and how many trips the bridge has numbered so far."""

    to_host: DirectionStats
    to_terminal: DirectionStats
    deferred: int
    capture: CapturePaths | None
    trips_total: int

    @property
    def frames_dropped(self) -> int:
        """Frames dropped in both directions."""
        return self.to_host.frames_dropped + self.to_terminal.frames_dropped

    def direction(self, direction: Direction) -> DirectionStats:
        if direction is Direction.TO_HOST:
            return self.to_host
        if direction is Direction.TO_TERMINAL:
            return self.to_terminal
        raise ValueError(f"InjectorStats.direction({direction.value}): counters are kept per "
                         f"direction ({', '.join(d.value for d in FRAME_DIRECTIONS)})")

    @classmethod
    def from_json(cls, raw: object, where: str = "stats") -> InjectorStats:
        obj = _object(raw, where)
        dirs = _object(obj.get("directions"), f"{where}.directions")
        capture = obj.get("capture")
        return cls(
            to_host=DirectionStats.from_json(dirs.get(Direction.TO_HOST.value),
                                             f"{where}.directions.{Direction.TO_HOST.value}"),
            to_terminal=DirectionStats.from_json(
                dirs.get(Direction.TO_TERMINAL.value),
                f"{where}.directions.{Direction.TO_TERMINAL.value}"),
            deferred=_int(obj, "deferred", where),
            capture=None if capture is None else CapturePaths.from_json(capture,
                                                                        f"{where}.capture"),
            trips_total=_int(obj, "trips_total", where))


__all__ = [
    "FRAME_DIRECTIONS",
    "Action",
    "ActiveRule",
    "CapturePaths",
    "DirectionStats",
    "InjectorStats",
    "RuleRecord",
    "TcpSegment",
    "Trip",
    "active_from_json",
    "carrier_from_json",
    "covers",
    "delivered_path",
    "list_from_json",
]

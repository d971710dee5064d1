"""Faults as data: a kind and its parameters, the vocabulary every layer shares.

A :class:`FaultSpec` is what a step asks for ("pull the cable", "sag the supply to 6.8 V"),
what crosses a process boundary (the network injector's control channel carries
``{"kind": ..., "params": {...}}``) and what the per-scenario fault ledger records (armed,
fired, cleared, with times).  Each kind declares its parameters with their types, defaults and
allowed values (:data:`FAULT_KINDS`), so a misspelt or missing parameter is refused with the
kind, the parameter and what was expected, before anything is touched.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from protocols.apdu import INS_NAMES
from protocols.errors import ConfigError
from protocols.qr import Operation


class FaultKind(enum.StrEnum):
    # network (in-line injector)
    CABLE_PULL = "cable_pull"
    """Drop every frame in the given direction(s) from now on."""
    PULL_ON_REQUEST = "pull_on_request"
    """Armed: forward until the terminal sends a TCP segment with data towards the host; drop it
    and pull the cable (both directions) from then on."""
    DROP_MESSAGE = "drop_message"
    """Drop the TCP segments starting an ISO 8583 message of an MTI (either direction), and
    their retransmissions."""
    DELAY = "delay"
    """Defer every frame in the given direction(s) by ms ± seeded uniform jitter."""
    CORRUPT_BYTE = "corrupt_byte"
    """Flip all bits of one byte of an ISO 8583 message of an MTI (checksums fixed or not)."""
    FORGE_RST = "forge_rst"
    """Drop a triggering segment and send one side a forged TCP RST from the other."""
    DROP_SEGMENT = "drop_segment"
    """Drop the nth TCP segment carrying data after arming (one-shot; TCP retransmits it)."""
    SYN_BLACKHOLE = "syn_blackhole"
    """Drop every TCP SYN towards the host (connects time out); forward everything else."""
    DUPLICATE = "duplicate"
    """Forward the next data-carrying TCP segment(s) twice."""
    FLAP = "flap"
    """The cable goes down and up in a time-based pattern (both directions)."""
    WATCH_MESSAGE = "watch_message"
    """Not a fault: the injector notes each ISO 8583 message of an MTI as it crosses (it is
    forwarded untouched), so a fault elsewhere can be armed on it."""
    BANDWIDTH = "bandwidth"
    """A slow link: frames leave at a limited bit rate, in order, none dropped."""
    REORDER = "reorder"
    """The next data segment(s) held back so later ones overtake them."""
    DROP_QR = "drop_qr"
    """Drop the QR payment platform's requests of one operation (``micropay``, ``query`` …),
    or the platform's answers to them, as they cross; the rest of the platform's traffic
    passes."""
    CARRIER_LOSS = "carrier_loss"
    """The terminal's network link goes down (no carrier), as when its cable is pulled: every
    frame dropped and the rig's port facing the terminal set down."""
    # card (the card bank's relay between the card and the probe in the terminal's slot)
    CARD_MUTE = "card_mute"
    """The card gives no ATR and answers no command (a dead or dirty chip)."""
    CARD_PULLED = "card_pulled"
    """The card leaves the slot as the terminal sends the nth command of an instruction."""
    CARD_STATUS_WORD = "card_status_word"
    """The card answers a chosen status word (alone) to a chosen instruction."""
    CARD_CORRUPT = "card_corrupt"
    """One byte of the card's response data to an instruction is flipped."""
    CARD_SLOW = "card_slow"
    """Every answer of the card comes later by a fixed time."""
    STRIPE_UNREADABLE = "stripe_unreadable"
    """The stripe reads badly: the tracks of the next swipe(s) reach the terminal with a wrong
    LRC (a dirty stripe) or with their data cut short (a swipe too fast for the head)."""
    # printer (relay unit across the paper sensors and the printer's presence line)
    PAPER_OUT = "paper_out"
    PAPER_LOW = "paper_low"
    """The paper near-end sensor reads 'paper low'."""
    PRINTER_DISCONNECTED = "printer_disconnected"
    """The printer's presence line reads 'no printer' (cable off the printer module)."""
    # supply standing in for the battery
    SUPPLY_SAG = "supply_sag"
    POWER_CUT = "power_cut"
    BATTERY_DISCHARGE = "battery_discharge"
    """The supply ramps down at a rate to a final voltage (a battery running flat)."""
    BROWNOUT_DIP = "brownout_dip"
    """The supply dips to a voltage for a number of milliseconds, then comes back."""
    CURRENT_LIMIT = "current_limit"
    """The supply's current limit is set below what the terminal needs."""
    POWER_CYCLE = "power_cycle"
    """The supply's output goes off for a time and on again (one-shot)."""


class Direction(enum.StrEnum):
    """Which way a network fault acts."""

    TO_HOST = "terminal_to_host"
    TO_TERMINAL = "host_to_terminal"
    BOTH = "both"


class Target(enum.StrEnum):
    """The instrument that carries out a fault kind."""

    NETWORK = "network"
    CARDS = "cards"
    SWITCH = "switch"
    POWER = "power"


@dataclass(frozen=True)
class Param:
    type: type
    default: object = None
    required: bool = False
    choices: tuple[str, ...] = ()
    doc: str = ""
    minimum: float | None = None
    """Numbers: the smallest value allowed (inclusive unless ``above``)."""
    above: bool = False
    """Numbers: the value must be strictly greater than ``minimum``."""
    pattern: str = ""
    """Strings: a regular expression the whole value must match."""


@dataclass(frozen=True)
class KindSpec:
    target: Target
    params: Mapping[str, Param] = field(default_factory=lambda: MappingProxyType({}))
    doc: str = ""


_DIRECTIONS = tuple(d.value for d in Direction)
QR_PARTS = ("request", "answer")
"""Which half of a QR platform exchange ``drop_qr`` drops."""
STRIPE_MISREADS = ("lrc", "data")
"""How a stripe fault spoils a swipe (``stripe_unreadable``'s ``how``)."""
_ONE_WAY = (Direction.TO_HOST.value, Direction.TO_TERMINAL.value)
_MTI = r"[0-9]{4}"


def _mti(doc: str, *, required: bool = True) -> Param:
    return Param(str, None, required=required, pattern=_MTI, doc=doc)


def _times(doc: str) -> Param:
    return Param(int, 1, minimum=0, doc=doc)


#: An instruction: its EMV name (``GENERATE AC``) or its INS byte in hex (``AE``).
_INS = "|".join([re.escape(n) for n in INS_NAMES.values()] + ["[0-9A-Fa-f]{2}"])


def _ins(doc: str) -> Param:
    return Param(str, None, required=True, pattern=_INS,
                 doc=doc + f"; a name ({', '.join(INS_NAMES.values())}) or the INS byte in hex")


def ins_byte(ins: str) -> int:
    """The INS byte a validated ``ins`` parameter names (``GENERATE AC`` or ``AE`` → 0xAE)."""
    for byte, name in INS_NAMES.items():
        if name == ins:
            return byte
    return int(ins, 16)

FAULT_KINDS: Mapping[FaultKind, KindSpec] = MappingProxyType({
    FaultKind.CABLE_PULL: KindSpec(Target.NETWORK, MappingProxyType({
        "direction": Param(str, Direction.BOTH.value, choices=_DIRECTIONS,
                           doc="which way frames are dropped"),
    }), "the network cable is pulled: frames dropped"),
    FaultKind.PULL_ON_REQUEST: KindSpec(
        Target.NETWORK, MappingProxyType({}),
        "armed: the cable is pulled as the terminal's next request leaves (that segment "
        "dropped)"),
    FaultKind.DROP_MESSAGE: KindSpec(Target.NETWORK, MappingProxyType({
        "mti": _mti("the ISO 8583 message type to drop, 4 digits (e.g. 0210)"),
        "times": _times("how many such messages to drop (0: every one)"),
    }), "ISO 8583 messages of an MTI are dropped (either direction), with their "
        "retransmissions"),
    FaultKind.DELAY: KindSpec(Target.NETWORK, MappingProxyType({
        "ms": Param(float, required=True, minimum=0.0, above=True,
                    doc="the delay of every frame (ms)"),
        "jitter_ms": Param(float, 0.0, minimum=0.0,
                           doc="± uniform jitter added to each frame's delay (ms)"),
        "direction": Param(str, Direction.BOTH.value, choices=_DIRECTIONS,
                           doc="which way frames are delayed"),
        "seed": Param(int, 0, doc="seed of the jitter's random generator"),
    }), "frames are delayed"),
    FaultKind.CORRUPT_BYTE: KindSpec(Target.NETWORK, MappingProxyType({
        "mti": _mti("the ISO 8583 message type to corrupt, 4 digits"),
        "offset": Param(int, 20, minimum=0,
                        doc="index of the byte to flip, counted from the MTI's first byte"),
        "fix_checksums": Param(bool, True,
                               doc="recompute the IPv4 and TCP checksums (false: the "
                                   "receiver's kernel drops the segment)"),
        "times": _times("how many messages to corrupt (0: every one)"),
    }), "one byte of an ISO 8583 message is flipped"),
    FaultKind.FORGE_RST: KindSpec(Target.NETWORK, MappingProxyType({
        "direction": Param(str, Direction.TO_TERMINAL.value, choices=_ONE_WAY,
                           doc="which way the forged RST travels (host_to_terminal: the "
                               "terminal receives it, as if from the host)"),
        "on_mti": _mti("trigger: the next segment starting an ISO 8583 message of this MTI "
                       "(default: the next data segment travelling against direction)",
                       required=False),
    }), "a triggering segment is dropped and a forged TCP RST sent instead"),
    FaultKind.DROP_SEGMENT: KindSpec(Target.NETWORK, MappingProxyType({
        "n": Param(int, required=True, minimum=1,
                   doc="which TCP segment carrying data (after arming) to drop, from 1"),
        "direction": Param(str, Direction.TO_HOST.value, choices=_DIRECTIONS,
                           doc="which way the segments are counted"),
    }), "the nth TCP segment carrying data is dropped (one-shot)"),
    FaultKind.SYN_BLACKHOLE: KindSpec(
        Target.NETWORK, MappingProxyType({}),
        "TCP SYNs towards the host are dropped (the host is unreachable)"),
    FaultKind.DUPLICATE: KindSpec(Target.NETWORK, MappingProxyType({
        "direction": Param(str, Direction.TO_HOST.value, choices=_DIRECTIONS,
                           doc="which way segments are duplicated"),
        "times": _times("how many data segments to send twice (0: every one)"),
    }), "TCP segments carrying data are forwarded twice"),
    FaultKind.FLAP: KindSpec(Target.NETWORK, MappingProxyType({
        "down_ms": Param(float, required=True, minimum=0.0, above=True,
                         doc="how long the cable stays down each time (ms)"),
        "up_ms": Param(float, required=True, minimum=0.0, above=True,
                       doc="how long the cable stays up each time (ms)"),
        "seed": Param(int, 0, doc="0: a strict square wave; otherwise the seed of the random "
                                  "generator that draws each period in [0.5, 1.5] × nominal"),
    }), "the cable goes down and up in turn (both directions)"),
    FaultKind.WATCH_MESSAGE: KindSpec(Target.NETWORK, MappingProxyType({
        "mti": _mti("the ISO 8583 message type to note, 4 digits (e.g. 0200)"),
    }), "not a fault: each ISO 8583 message of an MTI is noted as it crosses, untouched"),
    FaultKind.BANDWIDTH: KindSpec(Target.NETWORK, MappingProxyType({
        "kbps": Param(float, required=True, minimum=0.0, above=True,
                      doc="the link's rate (kilobits per second)"),
        "direction": Param(str, Direction.BOTH.value, choices=_DIRECTIONS,
                           doc="which way the rate applies"),
    }), "the link is slow: frames leave at a limited bit rate"),
    FaultKind.REORDER: KindSpec(Target.NETWORK, MappingProxyType({
        "ms": Param(float, 50.0, minimum=0.0, above=True,
                    doc="how long each held segment waits (ms)"),
        "direction": Param(str, Direction.TO_HOST.value, choices=_DIRECTIONS,
                           doc="which way segments are held"),
        "times": _times("how many data segments to hold (0: every one)"),
    }), "data segments are held back so later ones overtake them"),
    FaultKind.CARRIER_LOSS: KindSpec(
        Target.NETWORK, MappingProxyType({}),
        "the terminal's network link goes down (no carrier), as when its cable is pulled"),
    FaultKind.CARD_MUTE: KindSpec(Target.CARDS, MappingProxyType({}),
                                  "the card gives no ATR and answers nothing"),
    FaultKind.CARD_PULLED: KindSpec(Target.CARDS, MappingProxyType({
        "ins": _ins("the instruction whose command the card leaves the slot on"),
        "nth": Param(int, 1, minimum=1, doc="which such command, counted from 1 after arming"),
    }), "the card leaves the slot as the terminal sends a command (answered 'card absent', "
        "card-detect opens)"),
    FaultKind.CARD_STATUS_WORD: KindSpec(Target.CARDS, MappingProxyType({
        "ins": _ins("the instruction whose answer is replaced"),
        "sw": Param(str, None, required=True, pattern=r"[0-9A-Fa-f]{4}",
                    doc="the status word the card answers, 4 hex digits (e.g. 6985)"),
        "times": _times("how many such answers to replace (0: every one)"),
    }), "the card answers a chosen status word (no data) to an instruction"),
    FaultKind.CARD_CORRUPT: KindSpec(Target.CARDS, MappingProxyType({
        "ins": _ins("the instruction whose answer is corrupted"),
        "offset": Param(int, 0, minimum=0,
                        doc="index of the response data byte to flip (past the end: the last)"),
        "times": _times("how many such answers to corrupt (0: every one)"),
    }), "one byte of the card's response data is flipped (status word kept)"),
    FaultKind.CARD_SLOW: KindSpec(Target.CARDS, MappingProxyType({
        "ms": Param(float, required=True, minimum=0.0, above=True,
                    doc="how much later every answer comes (ms)"),
    }), "the card answers every command late"),
    FaultKind.DROP_QR: KindSpec(Target.NETWORK, MappingProxyType({
        "operation": Param(str, required=True, choices=tuple(op.value for op in Operation),
                           doc="the QR platform operation whose traffic is dropped"),
        "part": Param(str, "answer", choices=QR_PARTS,
                      doc="request: the terminal's request never reaches the platform; "
                          "answer: the platform acts on it, its answer never reaches the "
                          "terminal"),
        "times": _times("how many such requests (0: every one)"),
    }), "the QR platform's requests of an operation, or its answers to them, are dropped"),
    FaultKind.STRIPE_UNREADABLE: KindSpec(Target.CARDS, MappingProxyType({
        "how": Param(str, "lrc", choices=STRIPE_MISREADS,
                     doc="lrc: each track's LRC is wrong (a dirty stripe); data: track 2 is "
                         "cut short after the PAN, with a right LRC (a swipe too fast)"),
        "times": _times("how many swipes read badly (0: every one)"),
    }), "the stripe reads badly: swipes reach the terminal spoiled"),
    FaultKind.PAPER_OUT: KindSpec(Target.SWITCH, MappingProxyType({}),
                                  "the printer's paper sensor reads 'no paper'"),
    FaultKind.PAPER_LOW: KindSpec(Target.SWITCH, MappingProxyType({}),
                                  "the printer's near-end sensor reads 'paper low'"),
    FaultKind.PRINTER_DISCONNECTED: KindSpec(
        Target.SWITCH, MappingProxyType({}),
        "the printer's presence line reads 'no printer'"),
    FaultKind.SUPPLY_SAG: KindSpec(Target.POWER, MappingProxyType({
        "volts": Param(float, required=True, doc="the sagged supply voltage (V)"),
    }), "the supply (battery) sags to a lower voltage"),
    FaultKind.POWER_CUT: KindSpec(Target.POWER, MappingProxyType({}),
                                  "the supply output is switched off"),
    FaultKind.BATTERY_DISCHARGE: KindSpec(Target.POWER, MappingProxyType({
        "to_volts": Param(float, required=True, minimum=0.0,
                          doc="where the ramp ends (V)"),
        "volts_per_s": Param(float, required=True, minimum=0.0, above=True,
                             doc="how fast the voltage falls (V/s)"),
        "step_ms": Param(float, 100.0, minimum=10.0,
                         doc="time between two setpoints of the ramp (ms)"),
    }), "the supply ramps down from its setpoint to a final voltage (a battery running flat)"),
    FaultKind.BROWNOUT_DIP: KindSpec(Target.POWER, MappingProxyType({
        "volts": Param(float, required=True, minimum=0.0, doc="the voltage of the dip (V)"),
        "ms": Param(float, required=True, minimum=0.0, above=True,
                    doc="how long the dip lasts (ms)"),
    }), "the supply dips to a voltage for a time, then returns to its setpoint"),
    FaultKind.CURRENT_LIMIT: KindSpec(Target.POWER, MappingProxyType({
        "amps": Param(float, required=True, minimum=0.0, above=True,
                      doc="the supply's current limit (A)"),
    }), "the supply's current limit is lowered"),
    FaultKind.POWER_CYCLE: KindSpec(Target.POWER, MappingProxyType({
        "off_ms": Param(float, required=True, minimum=0.0, above=True,
                        doc="how long the output stays off (ms)"),
    }), "the supply's output goes off and on again"),
})


@dataclass(frozen=True)
class FaultSpec:
    """One fault: a kind and its (validated, defaults filled) parameters."""

    kind: FaultKind
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def of(cls, kind: FaultKind | str, **params: Any) -> FaultSpec:
        """Build and validate (``FaultSpec.of("cable_pull", direction="both")``)."""
        return parse_spec({"kind": str(kind), "params": params})

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "params": dict(self.params)}

    @property
    def target(self) -> Target:
        return FAULT_KINDS[self.kind].target

    def describe(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.kind.value}({args})"


_TRUE = frozenset({"true", "yes", "1"})
_FALSE = frozenset({"false", "no", "0"})


def _convert(kind: type, value: object) -> Any:
    """One parameter value to its declared type (no silent bool/number mixing)."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise TypeError("expected true or false")
    if isinstance(value, bool):
        raise TypeError("a boolean is not a number or a text")
    if kind is int and isinstance(value, float) and not value.is_integer():
        raise ValueError("not a whole number")
    return kind(value)


def parse_spec(raw: object, where: str = "fault") -> FaultSpec:
    """``{"kind": ..., "params": {...}}`` → :class:`FaultSpec`; errors name *where*, the kind
    and the parameter."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: a fault is an object with 'kind' and 'params', got "
                          f"{type(raw).__name__}")
    unknown_keys = set(raw) - {"kind", "params"}
    if unknown_keys:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown_keys)}; a fault has 'kind' "
                          f"and 'params'")
    try:
        kind = FaultKind(str(raw.get("kind")))
    except ValueError:
        raise ConfigError(f"{where}: kind {raw.get('kind')!r} is unknown; expected one of "
                          f"{', '.join(k.value for k in FaultKind)}") from None
    given = raw.get("params") or {}
    if not isinstance(given, Mapping):
        raise ConfigError(f"{where}: {kind.value}.params must be an object, got "
                          f"{type(given).__name__}")
    spec = FAULT_KINDS[kind]
    extra = set(given) - set(spec.params)
    if extra:
        raise ConfigError(f"{where}: {kind.value} has no parameter(s) {sorted(extra)}; it takes "
                          f"{sorted(spec.params) or 'none'}")
    params: dict[str, Any] = {}
    for name, p in spec.params.items():
        if name not in given:
            if p.required:
                raise ConfigError(f"{where}: {kind.value}.{name} is required ({p.doc})")
            params[name] = p.default
            continue
        value = given[name]
        if value is None and not p.required and p.default is None:
            params[name] = None  # an optional parameter left out (as to_json writes it)
            continue
        try:
            value = _convert(p.type, value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: {kind.value}.{name} must be a {p.type.__name__}, got "
                              f"{given[name]!r} ({exc})") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{where}: {kind.value}.{name} must be a finite number, got "
                              f"{given[name]!r} ({p.doc})")
        if p.choices and value not in p.choices:
            raise ConfigError(f"{where}: {kind.value}.{name} is {value!r}; expected one of "
                              f"{', '.join(p.choices)}")
        if p.minimum is not None and (value <= p.minimum if p.above else value < p.minimum):
            raise ConfigError(f"{where}: {kind.value}.{name} is {value!r}; it must be "
                              f"{'>' if p.above else '>='} {p.minimum:g} ({p.doc})")
        if p.pattern and not re.fullmatch(p.pattern, value):
            raise ConfigError(f"{where}: {kind.value}.{name} is {value!r}; expected "
                              f"{p.doc}")
        params[name] = value
    return FaultSpec(kind, MappingProxyType(params))

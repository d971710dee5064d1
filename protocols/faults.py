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
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from protocols.errors import ConfigError


class FaultKind(enum.StrEnum):
    # network (in-line injector)
    CABLE_PULL = "cable_pull"
    """Drop every frame in the given direction(s) from now on."""
    PULL_ON_REQUEST = "pull_on_request"
    """Armed: forward until the terminal sends a TCP segment with data towards the host; drop it
    and pull the cable (both directions) from then on."""
    # printer paper (relay unit across the paper sensor)
    PAPER_OUT = "paper_out"
    # supply standing in for the battery
    SUPPLY_SAG = "supply_sag"
    POWER_CUT = "power_cut"


class Direction(enum.StrEnum):
    """Which way a network fault acts."""

    TO_HOST = "terminal_to_host"
    TO_TERMINAL = "host_to_terminal"
    BOTH = "both"


class Target(enum.StrEnum):
    """The instrument that carries out a fault kind."""

    NETWORK = "network"
    SWITCH = "switch"
    POWER = "power"


@dataclass(frozen=True)
class Param:
    type: type
    default: object = None
    required: bool = False
    choices: tuple[str, ...] = ()
    doc: str = ""


@dataclass(frozen=True)
class KindSpec:
    target: Target
    params: Mapping[str, Param] = field(default_factory=lambda: MappingProxyType({}))
    doc: str = ""


_DIRECTIONS = tuple(d.value for d in Direction)

FAULT_KINDS: Mapping[FaultKind, KindSpec] = MappingProxyType({
    FaultKind.CABLE_PULL: KindSpec(Target.NETWORK, MappingProxyType({
        "direction": Param(str, Direction.BOTH.value, choices=_DIRECTIONS,
                           doc="which way frames are dropped"),
    }), "the network cable is pulled: frames dropped"),
    FaultKind.PULL_ON_REQUEST: KindSpec(
        Target.NETWORK, MappingProxyType({}),
        "armed: the cable is pulled as the terminal's next request leaves (that segment "
        "dropped)"),
    FaultKind.PAPER_OUT: KindSpec(Target.SWITCH, MappingProxyType({}),
                                  "the printer's paper sensor reads 'no paper'"),
    FaultKind.SUPPLY_SAG: KindSpec(Target.POWER, MappingProxyType({
        "volts": Param(float, required=True, doc="the sagged supply voltage (V)"),
    }), "the supply (battery) sags to a lower voltage"),
    FaultKind.POWER_CUT: KindSpec(Target.POWER, MappingProxyType({}),
                                  "the supply output is switched off"),
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
        try:
            if p.type is float and isinstance(value, bool):
                raise TypeError("a boolean is not a number")
            value = p.type(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: {kind.value}.{name} must be a {p.type.__name__}, got "
                              f"{given[name]!r} ({exc})") from None
        if p.choices and value not in p.choices:
            raise ConfigError(f"{where}: {kind.value}.{name} is {value!r}; expected one of "
                              f"{', '.join(p.choices)}")
        params[name] = value
    return FaultSpec(kind, MappingProxyType(params))

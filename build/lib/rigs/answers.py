"""Reading a JSON answer from another process into typed values, once, at the boundary.

The injector's bridge and the acquirer host's control socket answer in JSON objects; their
drivers parse them into frozen records (:mod:`rigs.network.records`, :mod:`rigs.hostctl`).
These helpers are the type checks both use: a wrong value is a :class:`TransportError` naming
the field path (``rules[2].fired[0].tcp.sport``), what was expected and what came (shortened).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from protocols.errors import TransportError


def bad(where: str, expected: str, value: object) -> TransportError:
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return TransportError(f"{where} must be {expected}, got {shown}")


def required(raw: Mapping[str, Any], key: str, where: str, expected: str) -> Any:
    """``raw[key]``; a missing key is named as missing (not as a wrong value)."""
    if key not in raw:
        raise TransportError(f"{where}.{key} is missing; expected {expected}")
    return raw[key]


def as_object(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise bad(where, "an object", value)
    return value


def as_int(value: object, where: str, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise bad(where, f"an integer >= {minimum}", value)
    return value


def as_number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad(where, "a number", value)
    return float(value)


def as_str(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise bad(where, "a string", value)
    return value


def as_bool(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise bad(where, "true or false", value)
    return value


def as_list(value: object, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise bad(where, "a list", value)
    return value

"""Read a YAML file a person edits into a pydantic model: the one way the project reads YAML.

``load_model(Model, path, what="terminal profile")`` reads and validates a file;
``validate_model(Model, data, source, what=…)`` validates a document already loaded.  Whatever is
wrong — the file cannot be read, it is not YAML, keys are missing, unknown or of the wrong type —
comes out as one :class:`~protocols.errors.ConfigError` that names the file and *every* bad key
path with what was expected::

    fixtures/terminal/profile.yaml: terminal profile is not valid:
      operators.01.password: required key is missing
      timeouts.boot: expected a number

Never a pydantic or yaml traceback, and never the value of a sensitive key (PIN, PAN, keys,
passwords): a field declared with ``Field(repr=False)``, or named in :data:`SENSITIVE_KEYS`, has
its value cut out of the message.  Key paths are dotted; a list item is ``terminals[1]``.

Callers whose messages are pinned to an older one-line form pass ``render``; it gets the same
:class:`Problem` list.  Field grammars used by several files live here too (:data:`HostPort`,
:data:`HexKey`, :data:`TerminalId`, :data:`MerchantId`); :func:`check_value` applies one outside
a file (a command-line option), so a value means the same wherever it is written.
"""

from __future__ import annotations

import os
import re
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, BeforeValidator, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from protocols.errors import ConfigError
from protocols.masking import scrub

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

#: Key names whose values never appear in a message, whatever the model says.
SENSITIVE_KEYS: frozenset[str] = frozenset({
    "pan", "pin", "password", "master_key", "ac_key", "keys", "track2", "cvv",
})
TOP_LEVEL = "(top level)"
HIDDEN = "<hidden>"

ProblemKind = Literal["missing", "unknown", "invalid"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a file: where (dotted key path), which kind, what was expected."""

    path: str
    kind: ProblemKind
    message: str


def render_problems(source: str, what: str, problems: Sequence[Problem]) -> str:
    """The standard message: a header naming the file, then one line per bad key."""
    lines = "\n".join(f"  {p.path}: {p.message}" for p in problems)
    return f"{source}: {what} is not valid:\n{lines}"


def key_path(loc: Iterable[int | str]) -> str:
    """``('operators', '01', 'password')`` → ``operators.01.password``; list items as ``[i]``."""
    parts = list(loc)
    out = ""
    for i, part in enumerate(parts):
        if part == "[key]":
            out += " (the key itself)"
        elif isinstance(part, int) and parts[i + 1:i + 2] != ["[key]"]:
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or TOP_LEVEL


# -- messages ----------------------------------------------------------------------------------

_TYPE_WORDS: dict[str, str] = {
    "string_type": "a string",
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "float_type": "a number", "float_parsing": "a number",
    "bool_type": "true or false", "bool_parsing": "true or false",
    "dict_type": "a mapping of keys", "model_type": "a mapping of keys",
    "model_attributes_type": "a mapping of keys", "dataclass_type": "a mapping of keys",
    "list_type": "a list", "bytes_type": "a string",
}
_BOUNDS: dict[str, str] = {
    "greater_than": "must be > {gt}", "greater_than_equal": "must be >= {ge}",
    "less_than": "must be < {lt}", "less_than_equal": "must be <= {le}",
}


def _kind_of(value: object) -> str:
    if value is None:
        return "nothing (empty)"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "text"
    return f"a {type(value).__name__}"


def _message(err: ErrorDetails) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        return "unknown key (misspelt?)"
    if kind in _TYPE_WORDS:
        text = f"expected {_TYPE_WORDS[kind]}, got {_kind_of(err.get('input'))}"
        if kind == "string_type" and isinstance(err.get("input"), int | float):
            text += " (quote it: YAML reads unquoted digits as a number)"
        return text
    if kind in _BOUNDS:
        return _BOUNDS[kind].format(**ctx)
    if kind == "literal_error":
        return f"expected one of {ctx.get('expected', '?')}"
    msg = str(err["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    return msg.replace("Input should be", "expected", 1)


def _hide(message: str, value: object) -> str:
    """Cut a sensitive value out of a message (as text, and as the digits YAML read)."""
    if isinstance(value, bool) or not isinstance(value, str | int | bytes):
        return message
    text = value.hex() if isinstance(value, bytes) else str(value)
    if not text:
        return message
    message = message.replace(repr(value), HIDDEN).replace(repr(text), HIDDEN)
    if len(text) >= 4:  # shorter bare text is no PIN, PAN or key, and would hit "4..12"
        for shown in (text, text.upper(), text.lower()):
            message = message.replace(shown, HIDDEN)
    return message


def sensitive_names(model: type[Any]) -> frozenset[str]:
    """Field names declared ``Field(repr=False)`` anywhere in *model*'s tree, plus
    :data:`SENSITIVE_KEYS`."""
    found: set[str] = set(SENSITIVE_KEYS)
    seen: set[int] = set()

    def walk(tp: Any) -> None:
        if id(tp) in seen:
            return
        seen.add(id(tp))
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            for name, info in tp.model_fields.items():
                if info.repr is False:
                    found.add(name)
                    if isinstance(info.alias, str):
                        found.add(info.alias)
                walk(info.annotation)
            return
        for arg in typing.get_args(tp):
            walk(arg)

    walk(model)
    return frozenset(found)


def problems_of(exc: ValidationError, sensitive: Iterable[str] = SENSITIVE_KEYS) -> list[Problem]:
    """The problems a pydantic :class:`ValidationError` lists, as :class:`Problem` s."""
    hidden = frozenset(sensitive)
    out: list[Problem] = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        kind: ProblemKind = ("missing" if err["type"] == "missing" else
                             "unknown" if err["type"] == "extra_forbidden" else "invalid")
        message = _message(err)
        if any(isinstance(part, str) and part in hidden for part in loc):
            message = _hide(message, err.get("input"))
        problem = Problem(scrub(key_path(loc)), kind, message)
        if problem not in out:
            out.append(problem)
    return out


# -- reading -----------------------------------------------------------------------------------

def read_yaml(path: str | os.PathLike[str], *, what: str) -> Any:
    """Parse a YAML file; unreadable or malformed is a ConfigError naming the file and line."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read {what} ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: cannot read {what}: not UTF-8 text (byte {exc.start})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(f"{p}: {what} is not valid YAML{where}: {problem}") from None


def validate_model(model: type[M], data: Any, source: str, *, what: str,
                   sensitive: Iterable[str] = ()) -> M:
    """Validate a loaded document against *model*; errors name *source* and every bad key.

    The validation context is ``{"source": source}`` (a model may keep where it came from).
    """
    if not isinstance(data, dict):
        got = "the file is empty" if data is None else f"got {_kind_of(data)}"
        raise ConfigError(render_problems(source, what, [Problem(
            TOP_LEVEL, "invalid", f"expected a mapping of keys at the top level; {got}")]))
    try:
        return model.model_validate(data, context={"source": source})
    except ValidationError as exc:
        hidden = sensitive_names(model) | frozenset(sensitive)
        raise ConfigError(render_problems(source, what, problems_of(exc, hidden))) from None


def load_model(model: type[M], path: str | os.PathLike[str], *, what: str,
               sensitive: Iterable[str] = ()) -> M:
    """Read the YAML file at *path* and validate it against *model* (see :func:`validate_model`)."""
    data = read_yaml(path, what=what)
    return validate_model(model, data, str(path), what=what, sensitive=sensitive)


def check_value(annotation: Any, value: object, where: str) -> Any:
    """Validate one value against a field type (an ``Annotated`` grammar) outside a file, e.g.
    a command-line override; a ConfigError names *where*.  Not for sensitive values."""
    try:
        return TypeAdapter(annotation).validate_python(value)
    except ValidationError as exc:
        raise ConfigError(f"{where}: " + "; ".join(_message(e) for e in exc.errors())) from None


def unique_by(items: list[T], key: str, list_name: str) -> list[T]:
    """A list validator's check that no two items have the same *key* (both places named:
    ``terminal_id 10000001 is listed twice (terminals[0] and terminals[2])``)."""
    seen: dict[object, int] = {}
    for i, item in enumerate(items):
        value = getattr(item, key)
        if value in seen:
            raise ValueError(f"{key} {value} is listed twice ({list_name}[{seen[value]}] and "
                             f"{list_name}[{i}])")
        seen[value] = i
    return items


# -- field grammars shared by several files -----------------------------------------------------

_HOST_RE = re.compile(r"^[\w.-]+$")
_HEX_RE = re.compile(r"^(?:[0-9A-Fa-f]{2})+$")


def _host_port(value: object) -> str:
    parse_hostport(value)
    return str(value)


def parse_hostport(value: object) -> tuple[str, int]:
    """``'198.18.0.20:8583'`` → ``('198.18.0.20', 8583)``; anything else is a ValueError."""
    if isinstance(value, str):
        host, sep, port = value.rpartition(":")
        if (sep and _HOST_RE.match(host) and port.isdigit() and len(port) <= 5
                and 0 < int(port) < 65536):
            return host, int(port)
    raise ValueError(f"{value!r} is not host:port (e.g. 198.18.0.20:8583)")


def hex_bytes(value: object, expected: str) -> bytes:
    """Bytes written as hex digits (bytes pass as they are); anything else is a ValueError
    saying ``expected`` *expected*."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str) and _HEX_RE.match(value):
        return bytes.fromhex(value)
    raise ValueError(f"expected {expected}")


def _hex_key(value: object) -> bytes:
    raw = hex_bytes(value, "hex digits (32 for a double-length, 48 for a triple-length 3DES "
                           "key)")
    if len(raw) not in (16, 24):
        raise ValueError(f"expected a 16 or 24 byte 3DES key (32 or 48 hex digits), got "
                         f"{len(raw)} bytes")
    return raw


def _fixed_text(length: int, what: str) -> Callable[[object], str]:
    def check(value: object) -> str:
        if isinstance(value, int) and not isinstance(value, bool):
            raise ValueError(f"expected {what} as a quoted string of {length} characters "
                             f"(YAML reads unquoted digits as a number)")
        if not isinstance(value, str) or len(value) != length or not value.isprintable():
            raise ValueError(f"expected {what}: {length} characters, got {value!r}")
        return value

    return check


HostPort = Annotated[str, BeforeValidator(_host_port)]
"""``host:port`` of a TCP endpoint (an acquirer host): name or IPv4 address, port 1..65535."""
HexKey = Annotated[bytes, BeforeValidator(_hex_key)]
"""A double- or triple-length 3DES key written as hex (a TMK); declare it ``repr=False``."""
TerminalId = Annotated[str, BeforeValidator(_fixed_text(8, "a terminal ID (ISO 8583 field 41)"))]
"""Terminal ID, 8 characters (ISO 8583 field 41)."""
MerchantId = Annotated[str, BeforeValidator(_fixed_text(15, "a merchant ID (ISO 8583 field 42)"))]
"""Merchant ID, 15 characters (ISO 8583 field 42)."""


__all__ = [
    "HIDDEN",
    "HexKey",
    "HostPort",
    "MerchantId",
    "TerminalId",
    "Problem",
    "SENSITIVE_KEYS",
    "TOP_LEVEL",
    "check_value",
    "key_path",
    "load_model",
    "parse_hostport",
    "problems_of",
    "read_yaml",
    "render_problems",
    "sensitive_names",
    "validate_model",
]

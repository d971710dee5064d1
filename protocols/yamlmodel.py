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

import codecs
import math
import os
import re
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    TypeAdapter,
    ValidationError,
)
from pydantic_core import ErrorDetails

from protocols.digits import ascii_digits
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


class ProblemAt(ValueError):
    """Raised by a check across keys to name the key that is wrong, relative to the model the
    check sits on: ``raise ProblemAt(("terminal", "nominal_volts"), "9.00 V is above …")`` in
    the bench's model reads ``terminal.nominal_volts: 9.00 V is above …``."""

    def __init__(self, keys: str | tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.keys: tuple[str | int, ...] = (keys,) if isinstance(keys, str) else keys


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
        got = err.get("input")
        shown = f", got {got}" if isinstance(got, int | float) and not isinstance(got, bool) else ""
        return _BOUNDS[kind].format(**ctx) + shown
    if kind == "finite_number":
        got = err.get("input")
        return f"expected a finite number, got {got if isinstance(got, float) else repr(got)}"
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
        at = (err.get("ctx") or {}).get("error")
        if isinstance(at, ProblemAt):
            loc += at.keys
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

#: Bounds of a file a person edits (a bench file, a profile, a rules file are a few KiB): its size,
#: how deep its mappings and lists nest, and how many values it holds once its aliases (``*name``)
#: are expanded, so a "billion laughs" file is refused instead of eating the memory.
MAX_FILE_BYTES = 1 << 20
MAX_DEPTH = 32
MAX_NODES = 100_000

_OTHER_ENCODINGS = ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
                    (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"))
_TAB_HINT = "a tab: YAML indents and separates with spaces only; replace it with spaces"
_TAG_WORDS = {"int": "an integer", "float": "a number", "timestamp": "a date", "bool": "true or "
              "false", "binary": "base64 bytes"}


class _Refused(yaml.MarkedYAMLError):
    """Valid YAML the project refuses (a key given twice, too deep, too many values)."""

    def __init__(self, problem: str, mark: yaml.Mark | None, header: str = "is not valid") -> None:
        super().__init__(problem=problem, problem_mark=mark)
        self.header = header


def _line_column(text: str | bytes, index: int) -> str:
    before = text[:index]
    if isinstance(before, bytes):
        line, start = before.count(b"\n") + 1, before.rfind(b"\n") + 1
    else:
        line, start = before.count("\n") + 1, before.rfind("\n") + 1
    return f"line {line}, column {index - start + 1}"


def _at(mark: yaml.Mark | None) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


def _children(node: yaml.Node, path: str) -> list[tuple[yaml.Node, str]]:
    """A node's children with their key paths (a merged mapping's keys belong to its parent)."""
    if isinstance(node, yaml.SequenceNode):
        return [(child, f"{path}[{i}]") for i, child in enumerate(node.value)]
    if isinstance(node, yaml.MappingNode):
        out: list[tuple[yaml.Node, str]] = []
        for key, value in node.value:
            if key.tag == "tag:yaml.org,2002:merge":
                out += [(key, path), (value, path)]
            else:
                name = key.value if isinstance(key, yaml.ScalarNode) else "?"
                out += [(key, path), (value, f"{path}.{name}" if path else str(name))]
        return out
    return []


def _check_tree(root: yaml.Node) -> dict[int, str]:
    """Walk a composed document (without recursion): no alias contains itself, and with its
    aliases expanded it nests at most :data:`MAX_DEPTH` deep and holds at most
    :data:`MAX_NODES` values.  Returns the key path of every node, by ``id``."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    paths: dict[int, str] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, str, bool]] = [(root, "", False)]
    while stack:
        node, path, finished = stack.pop()
        nid = id(node)
        if finished:
            kids = [id(child) for child, _ in _children(node, path)]
            size[nid] = 1 + sum(size[k] for k in kids)
            depth[nid] = 1 + max((depth[k] for k in kids), default=0)
            open_nodes.discard(nid)
            if size[nid] > MAX_NODES:
                raise _Refused(f"more than {MAX_NODES} values once its aliases (*name) are "
                               f"expanded (at {paths[nid] or TOP_LEVEL})", node.start_mark,
                               "is too large")
            if depth[nid] > MAX_DEPTH:
                raise _Refused(f"mappings and lists nest deeper than {MAX_DEPTH} levels once "
                               f"its aliases (*name) are expanded (at {paths[nid] or TOP_LEVEL})",
                               node.start_mark)
            continue
        if nid in size:
            continue
        if nid in open_nodes:
            raise _Refused(f"an alias (*name) refers to a node that contains it "
                           f"({path or TOP_LEVEL} repeats itself without end)", node.start_mark)
        open_nodes.add(nid)
        paths.setdefault(nid, path)
        stack.append((node, path, True))
        stack.extend((child, child_path, False) for child, child_path in _children(node, path))
    return paths


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, bounded (nesting depth, values) and strict (a key given twice in
    one mapping is refused: PyYAML would keep the last silently)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self.paths: dict[int, str] = {}

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(f"mappings and lists nest deeper than {MAX_DEPTH} levels",
                               self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except yaml.YAMLError:
            raise
        except (ValueError, TypeError, LookupError, AttributeError, ArithmeticError) as exc:
            # a scalar PyYAML resolves (a date, !!int …) but cannot build: 2024-13-45
            tag = node.tag.rsplit(":", 1)[-1]
            shown = repr(node.value) if len(str(node.value)) <= 40 else f"{str(node.value)[:37]!r}…"
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {shown} as {_TAG_WORDS.get(tag, tag)} "
                f"({str(exc).split(';')[0]})", node.start_mark) from None

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _value in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.get(key)
            except TypeError:  # unhashable: the constructor says so with its line
                break
            if first is not None:
                parent = self.paths.get(id(node), "")
                where = f"{parent}.{key}" if parent else str(key)
                raise _Refused(f"{where} is given twice (first at line {first.start_mark.line + 1}"
                               f"); YAML would silently keep the last one, so delete one",
                               key_node.start_mark)
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


def _decode(raw: bytes, source: str, what: str) -> str:
    for bom, name in _OTHER_ENCODINGS:
        if raw.startswith(bom):
            raise ConfigError(f"{source}: cannot read {what}: it is {name} text (byte order mark "
                              f"{bom.hex(' ').upper()}); save it as UTF-8")
    try:
        return raw.decode("utf-8-sig")  # a UTF-8 byte order mark (some editors write one) is fine
    except UnicodeDecodeError as exc:
        bad = raw[exc.start:exc.start + 1].hex().upper()
        raise ConfigError(f"{source}: cannot read {what}: not UTF-8 text at "
                          f"{_line_column(raw, exc.start)} (byte {exc.start}: {bad}); save it as "
                          f"UTF-8") from None


def parse_yaml(text: str, source: str, *, what: str) -> Any:
    """Parse one YAML document a person wrote (see :func:`read_yaml`); whatever is wrong is a
    ConfigError naming *source* and the line."""
    loader: _Loader | None = None
    try:
        loader = _Loader(text)  # the reader refuses control characters here
        node = loader.get_single_node()
        if node is None:
            return None
        loader.paths = _check_tree(node)
        return loader.construct_document(node)
    except yaml.reader.ReaderError as exc:
        char = f"U+{exc.character:04X}" if isinstance(exc.character, int) else repr(exc.character)
        raise ConfigError(f"{source}: {what} is not valid YAML at "
                          f"{_line_column(text, exc.position)}: character {char} is not allowed "
                          f"(control characters cannot appear in YAML)") from None
    except _Refused as exc:
        raise ConfigError(f"{source}: {what} {exc.header} at {_at(exc.problem_mark)}: "
                          f"{exc.problem}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at {_at(mark)}" if mark else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        if "'\\t'" in problem or "tab character" in problem:
            problem = f"{problem} ({_TAB_HINT})"
        raise ConfigError(f"{source}: {what} is not valid YAML{where}: {problem}") from None
    finally:
        if loader is not None:
            loader.dispose()


def read_yaml(path: str | os.PathLike[str], *, what: str) -> Any:
    """Parse a YAML file a person edits; anything wrong with it is a ConfigError naming the file
    (and the line, where there is one): unreadable, larger than :data:`MAX_FILE_BYTES`, not UTF-8
    (a UTF-8 byte order mark is fine), not YAML, a tab where YAML wants spaces, a key given twice
    in one mapping, nesting deeper than :data:`MAX_DEPTH`, more than :data:`MAX_NODES` values
    with aliases expanded, an alias that contains itself."""
    p = Path(path)
    try:
        with p.open("rb") as file:
            raw = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read {what} ({exc.strerror or exc})") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(f"{p}: {what} is too large: more than {MAX_FILE_BYTES // 1024} KiB "
                          f"(is it the right file?)")
    return parse_yaml(_decode(raw, str(p), what), str(p), what=what)


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
        if sep and _HOST_RE.match(host) and ascii_digits(port):
            why = port_problem(int(port))
            if why is None:
                return host, int(port)
            raise ValueError(f"{value!r} is not host:port: {why}")
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


def _number(value: object) -> object:
    """YAML reads ``yes``/``true`` as a boolean, which pydantic would take as 1."""
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {str(value).lower()}")
    return value


def _finite(value: object) -> object:
    """``.inf`` and ``.nan`` are YAML numbers; no duration, voltage or current is one."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {value}")
    return _number(value)


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError(f"must not be empty, got {value!r}")
    return value


#: TCP ports a file may name (host:port, a socket:// URL, a VISA TCPIP resource).
PORT_MIN, PORT_MAX = 1, 65535

#: The longest duration a file may give (s): a day.  Every wait has a bound, and a bound of
#: ``1e300`` is none.
MAX_SECONDS = 86_400.0

Seconds = Annotated[float, BeforeValidator(_finite),
                    Field(gt=0, le=MAX_SECONDS, allow_inf_nan=False)]
"""A duration in seconds (a time-out, a debounce, a window): a finite number above 0, at most
:data:`MAX_SECONDS`; a field may add a tighter bound (``Field(5.0, le=60)``)."""
Volts = Annotated[float, BeforeValidator(_finite), Field(gt=0, allow_inf_nan=False)]
"""A voltage (a threshold, a supply limit): a finite number above 0."""
Amps = Annotated[float, BeforeValidator(_finite), Field(gt=0, allow_inf_nan=False)]
"""A current (a supply limit, a setpoint): a finite number above 0."""
BaudRate = Annotated[int, BeforeValidator(_number), Field(ge=50, le=4_000_000)]
"""A serial line speed, within what pyserial's standard rates span (50 .. 4000000)."""
TcpPort = Annotated[int, BeforeValidator(_number), Field(ge=PORT_MIN, le=PORT_MAX)]
"""A TCP port, 1..65535."""
Integer = Annotated[int, BeforeValidator(_number)]
"""A whole number (never true/false); a field gives its bounds (``Field(1, ge=1)``)."""
Count = Annotated[Integer, Field(ge=0)]
"""A number of things (tries, items): 0 or more (where none makes no sense: ``Integer`` with
``ge=1``, so the message says the bound that matters)."""
Text = Annotated[str, AfterValidator(_not_blank)]
"""A name, a path or a resource a file gives as text: not empty (nor only blanks)."""

_TCP_PORT: TypeAdapter[int] = TypeAdapter(TcpPort)


def port_problem(port: object) -> str | None:
    """Why *port* is not a TCP port (the rule of :data:`TcpPort`), or None: for ports written
    inside a string (``host:port``, ``socket://host:port``)."""
    try:
        _TCP_PORT.validate_python(port)
    except ValidationError:
        return f"port {port} outside {PORT_MIN}..{PORT_MAX}"
    return None


HostPort = Annotated[str, BeforeValidator(_host_port)]
"""``host:port`` of a TCP endpoint (an acquirer host): name or IPv4 address, port
:data:`PORT_MIN`..:data:`PORT_MAX`."""
HexKey = Annotated[bytes, BeforeValidator(_hex_key)]
"""A double- or triple-length 3DES key written as hex (a TMK); declare it ``repr=False``."""
TerminalId = Annotated[str, BeforeValidator(_fixed_text(8, "a terminal ID (ISO 8583 field 41)"))]
"""Terminal ID, 8 characters (ISO 8583 field 41)."""
MerchantId = Annotated[str, BeforeValidator(_fixed_text(15, "a merchant ID (ISO 8583 field 42)"))]
"""Merchant ID, 15 characters (ISO 8583 field 42)."""


__all__ = [
    "Amps",
    "BaudRate",
    "check_value",
    "Count",
    "HexKey",
    "HIDDEN",
    "HostPort",
    "Integer",
    "key_path",
    "load_model",
    "MAX_DEPTH",
    "MAX_FILE_BYTES",
    "MAX_NODES",
    "MAX_SECONDS",
    "MerchantId",
    "parse_hostport",
    "parse_yaml",
    "port_problem",
    "PORT_MAX",
    "PORT_MIN",
    "Problem",
    "ProblemAt",
    "problems_of",
    "read_yaml",
    "render_problems",
    "Seconds",
    "SENSITIVE_KEYS",
    "sensitive_names",
    "TcpPort",
    "TerminalId",
    "Text",
    "TOP_LEVEL",
    "validate_model",
    "Volts",
]

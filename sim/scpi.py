"""SCPI for the virtual bench: the parser/dispatcher the simulated instruments share, and the TCP
server that puts one of them on a port.

The simulated instruments (:class:`sim.psu.SimPowerSupply`, :class:`sim.relay.SimRelayUnit`) are
pure state machines: ``handle(line, now) -> response | None``.  What they share lives here:

* :func:`expand_header` turns a header pattern from an instrument manual
  (``MEASure[:SCALar]:VOLTage[:DC]?``) into every spelling a client may send (long/short forms,
  optional nodes, case-insensitive), so a device declares its command set as a dispatch table;
* :class:`SimScpiDevice` holds that table, the IEEE 488.2 common commands and the error queue.
  Handlers raise :class:`ScpiError`; ``handle()`` is the one place that turns it into an entry of
  the error queue (read back with ``SYSTem:ERRor?``).  A failed query answers nothing, like a real
  instrument (the client's read times out and its next ``SYST:ERR?`` says why);
* :class:`ScpiTcpServer` hosts a device on 127.0.0.1: newline-terminated lines in, response lines
  out, ``after(device)`` called after each line so the bench supervisor can react.  No logic.
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
import re
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import ClassVar, Protocol

from protocols.errors import ProtocolError, SimError
from protocols.scpi import NumberError, split_number

logger = logging.getLogger(__name__)

ERROR_QUEUE_DEPTH = 20
MAX_LINE = 64 * 1024  # characters of one program line (the server drops a longer one)


class ScpiError(ProtocolError):
    """An error the simulated instrument puts in its error queue (SCPI-99 code and text)."""

    def __init__(self, code: int, text: str, detail: str = "") -> None:
        self.code = code
        self.text = text
        self.detail = detail
        super().__init__(f"SCPI error {code:+d} {text!r}" + (f": {detail}" if detail else ""))

    def queue_entry(self) -> str:
        """The ``SYSTem:ERRor?`` response for this error: ``-113,"Undefined header"``."""
        return f'{self.code:+d},"{self.text}"' if self.code else '+0,"No error"'


# The standard errors the simulators use (SCPI-99 vol. 2, chapter 21).
def syntax_error(detail: str = "") -> ScpiError:
    return ScpiError(-102, "Syntax error", detail)


def parameter_not_allowed(detail: str = "") -> ScpiError:
    return ScpiError(-108, "Parameter not allowed", detail)


def missing_parameter(detail: str = "") -> ScpiError:
    return ScpiError(-109, "Missing parameter", detail)


def undefined_header(detail: str = "") -> ScpiError:
    return ScpiError(-113, "Undefined header", detail)


def data_out_of_range(detail: str = "") -> ScpiError:
    return ScpiError(-222, "Data out of range", detail)


def illegal_parameter(detail: str = "") -> ScpiError:
    return ScpiError(-224, "Illegal parameter value", detail)


def invalid_character(detail: str = "") -> ScpiError:
    return ScpiError(-101, "Invalid character", detail)


def invalid_suffix(detail: str = "") -> ScpiError:
    return ScpiError(-131, "Invalid suffix", detail)


def suffix_not_allowed(detail: str = "") -> ScpiError:
    return ScpiError(-138, "Suffix not allowed", detail)


def input_overrun(detail: str = "") -> ScpiError:
    return ScpiError(-363, "Input buffer overrun", detail)


QUEUE_OVERFLOW = ScpiError(-350, "Queue overflow")
NO_ERROR = '+0,"No error"'


# ----------------------------------------------------------------------------------------------
# Headers, program lines, parameters
# ----------------------------------------------------------------------------------------------

_NODE_RE = re.compile(r"(\[)?:?(\*?[A-Za-z]+)\]?")


def _forms(mnemonic: str) -> tuple[str, ...]:
    """``'VOLTage'`` → ``('VOLT', 'VOLTAGE')``; ``'*IDN'`` → ``('*IDN',)``."""
    short = re.match(r"\*?[A-Z]*", mnemonic)
    assert short is not None
    forms = {short.group(0) or mnemonic.upper(), mnemonic.upper()}
    return tuple(sorted(forms))


def expand_header(pattern: str) -> frozenset[str]:
    """Every normalized spelling of a header pattern.

    ``'OUTPut[:STATe]?'`` → ``{'OUTP?', 'OUTPUT?', 'OUTP:STAT?', 'OUTP:STATE?', ...}``.  Uppercase
    letters of a mnemonic are its short form, ``[...]`` marks an optional node, a trailing ``?``
    a query.  Normalized means: uppercase, no leading colon, no numeric suffix ``1``.
    """
    query = pattern.endswith("?")
    body = pattern[:-1] if query else pattern
    nodes: list[tuple[bool, tuple[str, ...]]] = []
    pos = 0
    while pos < len(body):
        m = _NODE_RE.match(body, pos)
        if m is None or m.end() == pos:
            raise SimError(f"expand_header({pattern!r}): cannot parse at position {pos}")
        nodes.append((m.group(1) is not None, _forms(m.group(2))))
        pos = m.end()
    choices = [((None,) + forms) if optional else forms for optional, forms in nodes]
    spellings = {":".join(n for n in combo if n) for combo in itertools.product(*choices)}
    return frozenset(s + ("?" if query else "") for s in spellings if s)


_SUFFIX_ONE_RE = re.compile(r"(?<=[A-Z])1$")


def normalize_header(header: str) -> str:
    """``':sour1:Volt?'`` → ``'SOUR:VOLT?'`` (the key of a dispatch table)."""
    query = header.endswith("?")
    body = header[:-1] if query else header
    nodes = [_SUFFIX_ONE_RE.sub("", node) for node in body.upper().lstrip(":").split(":")]
    return ":".join(nodes) + ("?" if query else "")


def _split_outside(text: str, sep: str) -> list[str]:
    """Split on *sep* outside quotes and parentheses (channel lists contain commas)."""
    parts: list[str] = []
    depth = 0
    quote = ""
    current: list[str] = []
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            if not depth:
                raise syntax_error(f"')' without '(' in {_shown(text)}")
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    if quote or depth:
        raise syntax_error(f"unbalanced quotes or parentheses in {_shown(text)}")
    parts.append("".join(current))
    return parts


def split_program_line(line: str) -> list[str]:
    """``'VOLT 5;OUTP ON'`` → ``['VOLT 5', 'OUTP ON']`` (each unit starts at the root).

    One ``;`` may end the line; an empty unit anywhere else (``';VOLT 5'``, ``'VOLT 5;;OUTP
    ON'``) is a syntax error (-102)."""
    units = [unit.strip(" \t") for unit in _split_outside(line, ";")]
    if len(units) > 1 and not units[-1]:
        units.pop()  # 'VOLT 5;' : a terminating semicolon
    for index, unit in enumerate(units):
        if not unit:
            raise syntax_error(f"empty program unit #{index + 1} in {_shown(line)}")
    return units


_HEADER_RE = re.compile(r"^:?(\*?[A-Za-z][A-Za-z0-9]*)(:[A-Za-z][A-Za-z0-9]*)*\??$")
_UNIT_RE = re.compile(r"^(\S+)(?:[ \t]+(.*))?$", re.DOTALL)


def split_unit(unit: str) -> tuple[str, list[str]]:
    """``'ROUT:CLOS (@1,3)'`` → ``('ROUT:CLOS', ['(@1,3)'])``.  The header must be program
    mnemonics (letters, then letters or digits) joined by ``:`` (-102 otherwise); a space or a
    tab separates it from the parameters."""
    m = _UNIT_RE.match(unit.strip(" \t"))
    if m is None:
        raise syntax_error(f"no header in {_shown(unit)}")
    header, rest = m.group(1), (m.group(2) or "").strip(" \t")
    if not _HEADER_RE.match(header):
        raise syntax_error(f"header {_shown(header)} is not mnemonics joined by ':'")
    params = [p.strip(" \t") for p in _split_outside(rest, ",")] if rest else []
    if any(not p for p in params):
        raise syntax_error(f"empty parameter in {_shown(unit)}")
    return header, params


def _shown(text: str, limit: int = 60) -> str:
    """*text* for an error detail: quoted, at most *limit* characters."""
    return repr(text[:limit] + ("…" if len(text) > limit else ""))


def expect_params(params: list[str], minimum: int, maximum: int, what: str) -> None:
    if len(params) < minimum:
        raise missing_parameter(f"{what} needs {minimum} parameter(s), got {len(params)}")
    if len(params) > maximum:
        raise parameter_not_allowed(f"{what} takes at most {maximum}, got {len(params)}")


def format_number(value: float) -> str:
    """SCPI NR3 the way a Keysight answers: ``7.4`` → ``'+7.40000000E+00'``."""
    return f"{value:+.8E}"


_NUMERIC_KEYWORDS = {"MIN": "min", "MINIMUM": "min", "MAX": "max", "MAXIMUM": "max",
                     "DEF": "def", "DEFAULT": "def"}


def parse_number(param: str, *, minimum: float, maximum: float, default: float,
                 what: str, units: Mapping[str, float] | None = None) -> float:
    """A numeric parameter (``7.4``, ``740E-2``, ``MIN``, ``MAX``, ``DEF``; with *units*, a
    suffix such as ``500 mV`` → 0.5) checked against the instrument's range.

    The number is read by the one grammar of :mod:`protocols.scpi` (not ``float()``: no
    ``1_0``, ``nan``, ``inf``).  Errors: -104 not a number, -121/-123/-124 a malformed one,
    -131 an unknown unit, -138 a unit where none is taken, -222 outside the range."""
    keyword = _NUMERIC_KEYWORDS.get(param.upper()) if param.isascii() else None
    if keyword is not None:
        return {"min": minimum, "max": maximum, "def": default}[keyword]
    try:
        value, suffix = split_number(param, what)
    except NumberError as exc:
        raise ScpiError(exc.code, exc.scpi_text, str(exc)) from None
    if suffix:
        if not units:
            raise suffix_not_allowed(f"{what}: {_shown(param)} has unit {suffix!r}; "
                                     f"{what} takes a plain number")
        scale = units.get(suffix.upper())
        if scale is None:
            raise invalid_suffix(f"{what}: unit {suffix!r} in {_shown(param)}; expected one of "
                                 f"{', '.join(units)}")
        value *= scale
    if not math.isfinite(value) or not minimum <= value <= maximum:
        raise data_out_of_range(f"{what}: {_shown(param)} outside {minimum}..{maximum}")
    return value


def parse_bool(param: str, what: str) -> bool:
    """``ON``/``OFF``/``1``/``0`` (-224 otherwise)."""
    value = {"ON": True, "1": True, "OFF": False, "0": False}.get(
        param.upper() if param.isascii() else "")
    if value is None:
        raise illegal_parameter(f"{what}: {param!r} is not ON|OFF|1|0")
    return value


def check_line(line: str) -> None:
    """A program line the parser may read: at most :data:`MAX_LINE` characters (-363), only
    printable ASCII and tab (-101 names the first other character and its position)."""
    if len(line) > MAX_LINE:
        raise input_overrun(f"line of {len(line)} characters; at most {MAX_LINE}")
    bad = _BAD_CHAR_RE.search(line)
    if bad is not None:
        raise invalid_character(f"character {bad.group(0)!r} (U+{ord(bad.group(0)):04X}) at "
                                f"position {bad.start()}; SCPI is printable ASCII")


_BAD_CHAR_RE = re.compile(r"[^\t\x20-\x7e]")


# ----------------------------------------------------------------------------------------------
# The device base: dispatch table + common commands + error queue
# ----------------------------------------------------------------------------------------------

class ScpiDevice(Protocol):
    """What :class:`ScpiTcpServer` hosts."""

    def handle(self, line: str, now: float) -> str | None: ...


@dataclass(frozen=True)
class Command:
    """One row of a device's SCPI surface: header pattern → handler method name."""

    pattern: str
    method: str


class SimScpiDevice:
    """Base of the simulated SCPI instruments.

    Subclasses declare ``COMMANDS`` (a tuple of :class:`Command`); handler methods take
    ``(params, now)`` and return the response string of a query or ``None``.  The table is
    compiled once per class (:meth:`__init_subclass__`) into an immutable mapping.
    ``STATE`` names the attributes that make up the instrument's state: a line that fails
    leaves them as they were before the line (:meth:`handle`), and :meth:`state` shows them.
    """

    COMMON: ClassVar[tuple[Command, ...]] = (
        Command("*IDN?", "_idn"),
        Command("*RST", "_rst"),
        Command("*CLS", "_cls"),
        Command("*OPC", "_opc"),
        Command("*OPC?", "_opc_query"),
        Command("SYSTem:ERRor[:NEXT]?", "_next_error"),
    )
    COMMANDS: ClassVar[tuple[Command, ...]] = ()
    STATE: ClassVar[tuple[str, ...]] = ()
    _table: ClassVar[Mapping[str, str]] = MappingProxyType({})

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        table: dict[str, str] = {}
        for command in cls.COMMON + cls.COMMANDS:
            if not callable(getattr(cls, command.method, None)):
                raise SimError(f"{cls.__name__}: {command.pattern} → missing {command.method}()")
            for spelling in expand_header(command.pattern):
                if spelling in table:
                    raise SimError(f"{cls.__name__}: {spelling} declared twice")
                table[spelling] = command.method
        cls._table = MappingProxyType(table)

    def __init__(self, idn: str) -> None:
        self.idn = idn
        self.errors: deque[ScpiError] = deque()

    def state(self) -> tuple[tuple[str, object], ...]:
        """The instrument's state (the ``STATE`` attributes, copied), to compare or restore."""
        return tuple((name, copy.copy(getattr(self, name))) for name in self.STATE)

    def _restore(self, state: tuple[tuple[str, object], ...]) -> None:
        for name, value in state:
            setattr(self, name, value)

    # -- the one place where errors become queue entries ------------------------------------
    def handle(self, line: str, now: float) -> str | None:
        """Execute one program line; return the response line (queries) or ``None``.

        Units separated by ``;`` run in order; the first error stops the line, lands in the
        error queue and puts the instrument's state back to what it was before the line (a
        line is all or nothing, so a refused line never leaves half a setting behind).  An
        empty line is no message (IEEE 488.2) and does nothing.  A line longer than
        :data:`MAX_LINE` is -363; a byte outside printable ASCII (tab allowed) -101.
        """
        responses: list[str] = []
        before = self.state()
        try:
            check_line(line)
            if not line.strip(" \t"):
                return None
            for unit in split_program_line(line):
                header, params = split_unit(unit)
                method = self._table.get(normalize_header(header))
                if method is None:
                    raise undefined_header(_shown(header))
                response = getattr(self, method)(params, now)
                if response is not None:
                    responses.append(response)
        except ScpiError as err:
            logger.debug("%s: %s → %s", type(self).__name__, _shown(line), err)
            self._restore(before)
            self.push_error(err)
            return None
        return ";".join(responses) if responses else None

    def push_error(self, err: ScpiError) -> None:
        if len(self.errors) >= ERROR_QUEUE_DEPTH:
            self.errors[-1] = QUEUE_OVERFLOW
        else:
            self.errors.append(err)

    def reset(self) -> None:
        """``*RST``: subclasses put their outputs in the safe state."""

    # -- common commands ----------------------------------------------------------------------
    def _idn(self, params: list[str], now: float) -> str:
        expect_params(params, 0, 0, "*IDN?")
        return self.idn

    def _rst(self, params: list[str], now: float) -> None:
        expect_params(params, 0, 0, "*RST")
        self.reset()

    def _cls(self, params: list[str], now: float) -> None:
        expect_params(params, 0, 0, "*CLS")
        self.errors.clear()

    def _opc(self, params: list[str], now: float) -> None:
        expect_params(params, 0, 0, "*OPC")

    def _opc_query(self, params: list[str], now: float) -> str:
        expect_params(params, 0, 0, "*OPC?")
        return "1"

    def _next_error(self, params: list[str], now: float) -> str:
        expect_params(params, 0, 0, "SYST:ERR?")
        return self.errors.popleft().queue_entry() if self.errors else NO_ERROR


# ----------------------------------------------------------------------------------------------
# The TCP server (no logic: lines in, device.handle(), lines out)
# ----------------------------------------------------------------------------------------------

class ScpiTcpServer:
    """Hosts a :class:`ScpiDevice` on ``127.0.0.1:port`` (port 0 = ephemeral; read ``.port``).

    One background thread multiplexes the listening socket and every client with a selector;
    each complete line is passed to ``device.handle(line, time.monotonic())`` under
    :attr:`lock`, then ``after(device)`` is called (still under the lock) so the bench
    supervisor can compare the device state and react.  Anyone else touching the device (the
    supervisor setting ``load_state``) takes the same :attr:`lock`.

    An exception from the device or from ``after`` is a bug of the bench, not an instrument
    error: it is logged, kept in :attr:`failure`, the server stops serving, and :meth:`stop`
    (or :meth:`check`) raises it as :class:`SimError`.
    """

    def __init__(self, device: ScpiDevice, host: str = "127.0.0.1", port: int = 0,
                 after: Callable[[ScpiDevice], None] | None = None,
                 name: str = "scpi", send_timeout: float = 2.0) -> None:
        if host not in ("127.0.0.1", "localhost"):
            raise SimError(f"ScpiTcpServer({name}): host {host!r} refused; binds only 127.0.0.1")
        self.device = device
        self.host = "127.0.0.1"
        self._requested_port = port
        self.after = after
        self.name = name
        self.send_timeout = send_timeout
        self.lock = threading.RLock()
        self.failure: BaseException | None = None
        self._listener: socket.socket | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.port = 0

    def __repr__(self) -> str:
        return f"ScpiTcpServer({self.name}, {self.host}:{self.port})"

    @property
    def resource(self) -> str:
        """The VISA resource string a rig uses to reach this server."""
        return f"TCPIP0::{self.host}::{self.port}::SOCKET"

    def start(self) -> None:
        if self._thread is not None:
            raise SimError(f"{self!r}: start() called twice")
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self._requested_port))
        listener.listen(8)
        listener.setblocking(False)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._thread = threading.Thread(target=self._serve, name=f"scpi-{self.name}",
                                        daemon=True)
        self._thread.start()
        logger.info("%r: serving %s", self, type(self.device).__name__)

    def stop(self, timeout: float = 2.0) -> None:
        """Stop serving and close every socket; raises :class:`SimError` if the thread does not
        end within *timeout* seconds or if the device failed while serving."""
        thread = self._thread
        if thread is not None:
            self._stopping.set()
            if self._wake_w is not None:
                self._wake_w.send(b"x")
            thread.join(timeout)
            if thread.is_alive():
                raise SimError(f"{self!r}: serving thread still alive {timeout} s after stop()")
            self._thread = None
        for sock in (self._listener, self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        self._listener = self._wake_r = self._wake_w = None
        self.check()

    def check(self) -> None:
        """Raise :class:`SimError` if the device or the ``after`` hook failed while serving."""
        if self.failure is not None:
            raise SimError(f"{self!r}: device failed while serving: {self.failure!r}") \
                from self.failure

    def __enter__(self) -> ScpiTcpServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the serving thread ---------------------------------------------------------------
    def _serve(self) -> None:
        assert self._listener is not None and self._wake_r is not None
        buffers: dict[socket.socket, bytearray] = {}
        with selectors.DefaultSelector() as sel:
            sel.register(self._listener, selectors.EVENT_READ, "accept")
            sel.register(self._wake_r, selectors.EVENT_READ, "wake")
            try:
                while not self._stopping.is_set():
                    for key, _ in sel.select():
                        if key.data == "wake":
                            break
                        if key.data == "accept":
                            self._accept(sel, buffers)
                        else:
                            self._read(key.fileobj, sel, buffers)  # type: ignore[arg-type]
            except Exception as exc:  # a bench bug: keep it for stop()/check(), fail loudly
                logger.exception("%r: serving failed", self)
                self.failure = exc
            finally:
                for client in buffers:
                    client.close()

    def _accept(self, sel: selectors.BaseSelector,
                buffers: dict[socket.socket, bytearray]) -> None:
        assert self._listener is not None
        try:
            client, peer = self._listener.accept()
        except BlockingIOError:
            return
        client.settimeout(self.send_timeout)  # bounds sendall(); recv only runs when readable
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sel.register(client, selectors.EVENT_READ, "client")
        buffers[client] = bytearray()
        logger.debug("%r: client %s connected", self, peer)

    def _drop(self, client: socket.socket, sel: selectors.BaseSelector,
              buffers: dict[socket.socket, bytearray], why: str) -> None:
        logger.debug("%r: dropping client (%s)", self, why)
        sel.unregister(client)
        buffers.pop(client, None)
        client.close()

    def _read(self, client: socket.socket, sel: selectors.BaseSelector,
              buffers: dict[socket.socket, bytearray]) -> None:
        try:
            data = client.recv(4096)
        except OSError as exc:
            self._drop(client, sel, buffers, f"recv failed: {exc}")
            return
        if not data:
            self._drop(client, sel, buffers, "closed by peer")
            return
        buf = buffers[client]
        buf += data
        while (end := buf.find(b"\n")) >= 0:
            raw = bytes(buf[:end])
            del buf[:end + 1]
            response = self._execute(raw.decode("ascii", "replace").strip())
            if response is not None:
                try:
                    client.sendall(response.encode("ascii", "replace") + b"\n")
                except OSError as exc:
                    self._drop(client, sel, buffers, f"send failed: {exc}")
                    return
        if len(buf) > MAX_LINE:
            self._drop(client, sel, buffers, f"no newline in {MAX_LINE} bytes")

    def _execute(self, line: str) -> str | None:
        if not line:
            return None
        with self.lock:
            response = self.device.handle(line, time.monotonic())
            if self.after is not None:
                self.after(self.device)
        logger.debug("%r: %r → %r", self, line, response)
        return response


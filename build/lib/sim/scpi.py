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

logger = logging.getLogger(__name__)

ERROR_QUEUE_DEPTH = 20


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
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    if quote or depth:
        raise syntax_error(f"unbalanced quotes or parentheses in {text!r}")
    parts.append("".join(current))
    return parts


def split_program_line(line: str) -> list[str]:
    """``'VOLT 5;OUTP ON'`` → ``['VOLT 5', 'OUTP ON']`` (each unit starts at the root)."""
    return [unit.strip() for unit in _split_outside(line, ";") if unit.strip()]


def split_unit(unit: str) -> tuple[str, list[str]]:
    """``'ROUT:CLOS (@1,3)'`` → ``('ROUT:CLOS', ['(@1,3)'])``."""
    header, _, rest = unit.strip().partition(" ")
    rest = rest.strip()
    params = [p.strip() for p in _split_outside(rest, ",")] if rest else []
    if any(not p for p in params):
        raise syntax_error(f"empty parameter in {unit!r}")
    return header, params


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
                 what: str) -> float:
    """A numeric parameter (``7.4``, ``740E-2``, ``MIN``, ``MAX``, ``DEF``) checked against the
    instrument's range (-222 outside it, -102 if not a number)."""
    keyword = _NUMERIC_KEYWORDS.get(param.upper())
    if keyword is not None:
        return {"min": minimum, "max": maximum, "def": default}[keyword]
    try:
        value = float(param)
    except ValueError:
        raise syntax_error(f"{what}: {param!r} is not a number") from None
    if not math.isfinite(value):
        raise syntax_error(f"{what}: {param!r} is not a finite number")
    if not minimum <= value <= maximum:
        raise data_out_of_range(f"{what}: {value} outside {minimum}..{maximum}")
    return value


def parse_bool(param: str, what: str) -> bool:
    """``ON``/``OFF``/``1``/``0`` (-224 otherwise)."""
    value = {"ON": True, "1": True, "OFF": False, "0": False}.get(param.upper())
    if value is None:
        raise illegal_parameter(f"{what}: {param!r} is not ON|OFF|1|0")
    return value


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

    # -- the one place where errors become queue entries ------------------------------------
    def handle(self, line: str, now: float) -> str | None:
        """Execute one program line; return the response line (queries) or ``None``.

        Units separated by ``;`` run in order; the first error stops the line (the rest is
        discarded, as IEEE 488.2 does after a parser error) and lands in the error queue.
        """
        responses: list[str] = []
        try:
            for unit in split_program_line(line):
                header, params = split_unit(unit)
                method = self._table.get(normalize_header(header))
                if method is None:
                    raise undefined_header(f"{header!r}")
                response = getattr(self, method)(params, now)
                if response is not None:
                    responses.append(response)
        except ScpiError as err:
            logger.debug("%s: %r → %s", type(self).__name__, line, err)
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

MAX_LINE = 64 * 1024


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


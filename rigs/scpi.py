"""SCPI transports for the rig's instruments, their test double, and the ``scpi_property``
descriptor that declares a plain SCPI setting as data.

* :class:`ScpiTransport` — the seam: ``open()``, ``close()``, ``write(cmd)``, ``query(cmd)``.
* :class:`VisaScpiTransport` — pyvisa (pyvisa-py, ``'@py'``) on a VISA resource string
  (``TCPIP0::host::5025::SOCKET``, ``ASRL/dev/ttyUSB0::INSTR``, ``USB0::…::INSTR``).  It never
  calls ``list_resources()`` (with ``@py`` that broadcasts discovery packets on the network).
* :class:`FakeScpiTransport` — test double: the exact exchange, in order, then ``assert_done()``.
* :func:`scpi_property` — ``voltage = scpi_property("VOLT?", "VOLT {:.3f}", limits=(0, 30))``.
* :func:`read_error_queue` — drain ``SYSTem:ERRor?`` (bounded) for a driver's ``check_errors()``.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, Protocol, TypeVar, cast, overload, runtime_checkable

import pyvisa
import pyvisa.constants
import pyvisa.errors
import pyvisa.rname

from protocols.digits import ascii_digits
from protocols.scpi import parse_number
from protocols.yamlmodel import port_problem
from rigs.driver import Driver, SessionState
from rigs.errors import (
    ConfigError,
    DecodeError,
    InstrumentError,
    LimitError,
    NoResponse,
    TransportError,
)

logger = logging.getLogger(__name__)


@runtime_checkable
class ScpiTransport(Protocol):
    """A line-oriented SCPI session (terminations are the transport's business)."""

    def open(self) -> None: ...

    def close(self) -> None: ...

    def write(self, cmd: str) -> None: ...

    def query(self, cmd: str) -> str: ...


# ----------------------------------------------------------------------------------------------
# pyvisa
# ----------------------------------------------------------------------------------------------

RESOURCE_FORMS = (
    "TCPIP0::host::5025::SOCKET, TCPIP0::host::INSTR, TCPIP0::host::inst0::INSTR, "
    "ASRL/dev/ttyUSB0::INSTR, USB0::0x2A8D::0x1002::SERIAL::INSTR, GPIB0::5::INSTR"
)

# The forms the rig supports, resource class always written out, each with the class pyvisa's
# parser must make of it.  The interface name is case-insensitive, the class is not (pyvisa reads
# "::instr" as a LAN device name).  TCPIP INSTR with or without the LAN device name (inst0,
# hislip0, gpib0,5): pyvisa-py defaults it to inst0.
_RESOURCE_RES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), parsed) for pattern, parsed in (
        (r"^(?i:TCPIP)\d*::[^:\s]+::\d{1,5}::SOCKET$", "TCPIPSocket"),
        (r"^(?i:TCPIP)\d*::[^:\s]+(::[^:\s]+)?::INSTR$", "TCPIPInstr"),
        (r"^(?i:ASRL)(\d+|/[^:\s]+)::INSTR$", "ASRLInstr"),
        (r"^(?i:USB)\d*::[^:\s]+::[^:\s]+::[^:\s]+(::\d+)?::INSTR$", "USBInstr"),
        (r"^(?i:USB)\d*::[^:\s]+::[^:\s]+::[^:\s]+(::\d+)?::RAW$", "USBRaw"),
        (r"^(?i:GPIB)\d*::\d+(::\d+)?::INSTR$", "GPIBInstr"),
    ))


def resource_error(resource: object) -> str | None:
    """Why *resource* is not a VISA resource string the rig supports, or ``None`` when it is.

    The one grammar of VISA resources (bench YAML ``power.resource``, ``switch.resource`` and
    :class:`VisaScpiTransport`): one of :data:`RESOURCE_FORMS`, read by pyvisa's own resource
    name parser as the same kind of resource (so nothing passes here that pyvisa-py would refuse
    or read differently at open).
    """
    bad = f"{resource!r} is not a VISA resource string; expected one of {RESOURCE_FORMS}"
    if not isinstance(resource, str):
        return bad
    kind = next((parsed for rx, parsed in _RESOURCE_RES if rx.match(resource)), None)
    if kind is None:
        return bad
    try:
        parsed = pyvisa.rname.parse_resource_name(resource)
    except pyvisa.rname.InvalidResourceName:
        return bad
    if type(parsed).__name__ != kind:
        return bad
    if isinstance(parsed, pyvisa.rname.TCPIPSocket):
        why = port_problem(int(parsed.port)) if ascii_digits(parsed.port) else bad
        if why is not None:
            return f"{resource!r}: {why}; expected one of {RESOURCE_FORMS}"
    return None


def check_resource(resource: str, where: str = "resource") -> str:
    """Return *resource* if it is a VISA resource string the rig supports, else ConfigError."""
    why = resource_error(resource)
    if why is not None:
        raise ConfigError(f"{where}: {why}")
    return resource


class VisaScpiTransport:
    """SCPI over pyvisa.  Built from config (nothing opened in ``__init__``)."""

    def __init__(self, resource: str, timeout_ms: int = 2000, rm_backend: str = "@py",
                 where: str = "resource") -> None:
        self.resource = check_resource(resource, where)
        if timeout_ms <= 0:
            raise ConfigError(f"{where}: timeout_ms must be > 0, got {timeout_ms}")
        self.timeout_ms = timeout_ms
        self.rm_backend = rm_backend
        self._rm: pyvisa.ResourceManager | None = None
        self._inst: Any = None
        self._lock = threading.Lock()  # one exchange at a time (the trace sampler shares it)

    def __repr__(self) -> str:
        return f"VisaScpiTransport({self.resource})"

    @property
    def is_open(self) -> bool:
        return self._inst is not None

    def open(self) -> None:
        if self._inst is not None:
            return
        try:
            self._rm = pyvisa.ResourceManager(self.rm_backend)
        except (ValueError, OSError, pyvisa.errors.Error) as exc:
            raise ConfigError(f"{self!r}: VISA backend {self.rm_backend!r} unusable ({exc}); "
                              f"expected '@py' (pyvisa-py) or a VISA library path") from exc
        try:
            self._inst = self._rm.open_resource(
                self.resource, read_termination="\n", write_termination="\n",
                timeout=self.timeout_ms)
        except (pyvisa.errors.Error, OSError, ValueError) as exc:
            self._close_rm()
            raise TransportError(f"{self!r}: open() failed: {exc}") from exc
        logger.debug("%r: open", self)

    def close(self) -> None:
        inst, self._inst = self._inst, None
        try:
            if inst is not None:
                inst.close()
        except (pyvisa.errors.Error, OSError) as exc:
            logger.warning("%r: close() failed: %s", self, exc)
        finally:
            self._close_rm()

    def _close_rm(self) -> None:
        rm, self._rm = self._rm, None
        if rm is not None:
            try:
                rm.close()
            except (pyvisa.errors.Error, OSError) as exc:
                logger.warning("%r: closing the resource manager failed: %s", self, exc)

    def _session(self, operation: str) -> Any:
        if self._inst is None:
            raise TransportError(f"{self!r}: {operation} needs an open session; state is CLOSED")
        return self._inst

    def _fail(self, operation: str, exc: Exception) -> Exception:
        if (isinstance(exc, pyvisa.errors.VisaIOError)
                and exc.error_code == pyvisa.constants.StatusCode.error_timeout):
            return NoResponse(f"{self!r}: {operation} got no answer within {self.timeout_ms} ms")
        return TransportError(f"{self!r}: {operation} failed: {exc}")

    def write(self, cmd: str) -> None:
        inst = self._session(f"write({cmd!r})")
        try:
            with self._lock:
                inst.write(cmd)
        except (pyvisa.errors.Error, OSError) as exc:
            raise self._fail(f"write({cmd!r})", exc) from exc
        logger.debug("%r: > %s", self, cmd)

    def query(self, cmd: str) -> str:
        inst = self._session(f"query({cmd!r})")
        try:
            with self._lock:
                answer = cast(str, inst.query(cmd)).strip()
        except (pyvisa.errors.Error, OSError) as exc:
            raise self._fail(f"query({cmd!r})", exc) from exc
        logger.debug("%r: > %s < %s", self, cmd, answer)
        return answer


# ----------------------------------------------------------------------------------------------
# Test double
# ----------------------------------------------------------------------------------------------

Step = tuple[str, "str | None | BaseException"]


class FakeScpiTransport:
    """Plays an instrument from a script of ``(command, response)`` steps.

    ``response`` is ``None`` for a command sent with :meth:`write`, a string for a
    :meth:`query`, or an exception instance the query raises (e.g. ``NoResponse``) to play a
    silent instrument.  The first difference (text, order, write vs query) fails with
    ``AssertionError``; :meth:`assert_done` fails if steps are left.
    """

    def __init__(self, script: Sequence[Step], name: str = "fake") -> None:
        self.name = name
        self._script: deque[Step] = deque(script)
        self.sent: list[str] = []
        self.is_open = False
        self.opened = 0

    def __repr__(self) -> str:
        return f"FakeScpiTransport({self.name})"

    def open(self) -> None:
        self.is_open = True
        self.opened += 1

    def close(self) -> None:
        self.is_open = False

    def _next(self, cmd: str, kind: str) -> str | None | BaseException:
        if not self.is_open:
            raise TransportError(f"{self!r}: {kind}({cmd!r}) needs an open session; "
                                 f"state is CLOSED")
        if not self._script:
            raise AssertionError(f"{self!r}: unexpected {kind}({cmd!r}); script is finished "
                                 f"(sent so far: {self.sent})")
        expected, response = self._script.popleft()
        expected_kind = "write" if response is None else "query"
        if cmd != expected or kind != expected_kind:
            raise AssertionError(f"{self!r}: step {len(self.sent) + 1}: expected "
                                 f"{expected_kind}({expected!r}), got {kind}({cmd!r})")
        self.sent.append(cmd)
        return response

    def write(self, cmd: str) -> None:
        self._next(cmd, "write")

    def query(self, cmd: str) -> str:
        response = self._next(cmd, "query")
        if isinstance(response, BaseException):
            raise response
        assert response is not None
        return response

    @property
    def remaining(self) -> list[Step]:
        return list(self._script)

    def assert_done(self) -> None:
        if self._script:
            raise AssertionError(f"{self!r}: {len(self._script)} step(s) never happened: "
                                 f"{list(self._script)}")


# ----------------------------------------------------------------------------------------------
# scpi_property
# ----------------------------------------------------------------------------------------------

def scpi_float(answer: str) -> float:
    """A response number by the one grammar (:func:`protocols.scpi.parse_number`); the
    default parser of :func:`scpi_property`."""
    return parse_number(answer, "answer")


class ScpiOwner(Protocol):
    """What a class using :func:`scpi_property` provides (a :class:`rigs.driver.Driver` with a
    ``transport``).  Optional: ``scpi_fields`` (a mapping of template fields such as
    ``{"ch": 1}``) and ``scpi_observe(name, kind, value)`` (called after every get and set, for
    evidence traces)."""

    transport: ScpiTransport

    def require_open(self, operation: str) -> None: ...


T = TypeVar("T")
Template = str | Callable[[Any], str]
Limits = tuple[float, float] | Callable[[Any], tuple[float, float]]


class ScpiProperty(Generic[T]):
    """The descriptor built by :func:`scpi_property`."""

    def __init__(self, get: Template | None, set: Template | None,
                 limits: Limits | None, parse: Callable[[str], T], doc: str,
                 limit_key: str | None) -> None:
        self.get_template = get
        self.set_template = set
        self.limits = limits
        self.parse = parse
        self.limit_key = limit_key
        self.__doc__ = doc
        self.name = "?"

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @staticmethod
    def _render(template: Template, instance: Any, *args: object) -> str:
        text = template(instance) if callable(template) else template
        fields: Mapping[str, object] = getattr(instance, "scpi_fields", {})
        return text.format(*args, **fields)

    @overload
    def __get__(self, instance: None, owner: type) -> ScpiProperty[T]: ...

    @overload
    def __get__(self, instance: object, owner: type) -> T: ...

    def __get__(self, instance: object | None, owner: type) -> ScpiProperty[T] | T:
        if instance is None:
            return self
        if self.get_template is None:
            raise AttributeError(f"{instance!r}: {self.name} is write-only")
        owner_ = cast(ScpiOwner, instance)
        owner_.require_open(self.name)
        cmd = self._render(self.get_template, instance)
        answer = owner_.transport.query(cmd)
        try:
            value = self.parse(answer)
        except (ValueError, DecodeError) as exc:
            raise TransportError(f"{instance!r}: {self.name}: {cmd!r} answered {answer!r}, "
                                 f"not a {getattr(self.parse, '__name__', 'value')}") from exc
        observe = getattr(instance, "scpi_observe", None)
        if observe is not None:
            observe(self.name, "get", value)
        return value

    def __set__(self, instance: object, value: T) -> None:
        if self.set_template is None:
            raise AttributeError(f"{instance!r}: {self.name} is read-only")
        owner_ = cast(ScpiOwner, instance)
        owner_.require_open(self.name)
        if self.limits is not None:
            lo, hi = self.limits(instance) if callable(self.limits) else self.limits
            number = cast(float, value)
            if not lo <= number <= hi:
                side = f"above the limit {hi:g}" if number > hi else f"below the limit {lo:g}"
                key = f" (bench YAML {self.limit_key})" if self.limit_key else ""
                raise LimitError(f"{instance!r}: {self.name} = {number:g} refused: {side}{key};"
                                 f" allowed {lo:g}..{hi:g}; nothing was sent")
        owner_.transport.write(self._render(self.set_template, instance, value))
        observe = getattr(instance, "scpi_observe", None)
        if observe is not None:
            observe(self.name, "set", value)


def scpi_property(get: Template | None, set: Template | None = None, *,
                  limits: Limits | None = None, parse: Callable[[str], Any] = scpi_float,
                  doc: str = "", limit_key: str | None = None) -> Any:
    """Declare a plain SCPI setting: ``get`` is the query, ``set`` the command template
    (``str.format``: the value is the positional field, ``{ch}`` etc. come from the owner's
    ``scpi_fields``).  A template may also be a callable of the owner (dialect tables).  Reads
    and writes check ``require_open``; writes check ``limits`` (a pair or a callable of the
    owner) before anything is sent, naming ``limit_key`` (the bench YAML key) when refused."""
    return ScpiProperty(get, set, limits, parse, doc, limit_key)


# ----------------------------------------------------------------------------------------------
# Error queue
# ----------------------------------------------------------------------------------------------

_ERROR_RE = re.compile(r'^[ \t]*([+-]?[0-9]+)[ \t]*[, ][ \t]*"?(.*?)"?[ \t]*$', re.DOTALL)
MAX_ERROR_CODE_DIGITS = 5  # SCPI-99 error codes are -32768..32767; device-specific ones too


def parse_error_entry(answer: str, owner: str, command: str = "SYST:ERR?") -> tuple[int, str]:
    """One ``SYSTem:ERRor?`` answer → ``(code, text)``: ``'-113,"Undefined header"'`` →
    ``(-113, 'Undefined header')``.  Anything else is a :class:`TransportError` naming the
    answer and the byte position (a code is at most :data:`MAX_ERROR_CODE_DIGITS` ASCII
    digits, so a reply of 4301 digits is refused, not read)."""
    shown = repr(answer[:80] + ("…" if len(answer) > 80 else ""))
    m = _ERROR_RE.match(answer)
    if m is None:
        raise TransportError(f"{owner}: {command} answered {shown}; expected "
                             f"'<code>,\"<text>\"' (an integer code at byte 0)")
    digits = m.group(1).lstrip("+-")
    if len(digits.lstrip("0")) > MAX_ERROR_CODE_DIGITS:
        raise TransportError(f"{owner}: {command} answered {shown}: the code at byte "
                             f"{m.start(1)} has {len(digits)} digits, at most "
                             f"{MAX_ERROR_CODE_DIGITS}")
    return int(m.group(1)), m.group(2)


def read_error_queue(transport: ScpiTransport, owner: str, max_entries: int = 32,
                     command: str = "SYST:ERR?") -> list[str]:
    """Read ``SYST:ERR?`` until the instrument says ``0``; return the errors read (raw text).

    Bounded: an instrument still reporting errors after *max_entries* reads is a TransportError
    (a queue that never empties means the session is confused, not that there are 33 errors).
    """
    errors: list[str] = []
    for _ in range(max_entries):
        code, text = parse_error_entry(transport.query(command), owner, command)
        if code == 0:
            return errors
        errors.append(f"{code:+d} {text}")
    raise TransportError(f"{owner}: {command} still reporting errors after {max_entries} reads: "
                         f"{errors[:5]}…")


class ScpiInstrument(Driver):
    """What every SCPI instrument driver shares: the injected transport, ``*IDN?`` and ``*CLS``
    on open, and draining the error queue into one :class:`InstrumentError`."""

    def __init__(self, name: str, transport: ScpiTransport) -> None:
        super().__init__(name)
        self.transport = transport
        self.idn = ""

    def open(self) -> None:
        """Open the transport, identify the instrument (``*IDN?``) and clear its error queue."""
        if self.state is SessionState.OPEN:
            return
        self.transport.open()
        try:
            self.idn = self.transport.query("*IDN?")
            self.transport.write("*CLS")
        except Exception:
            self.transport.close()
            raise
        super().open()
        logger.info("%r: open, %s", self, self.idn)

    def close(self) -> None:
        self.transport.close()
        super().close()

    def wait_complete(self, operation: str) -> None:
        """Ask ``*OPC?`` and wait for its ``1``: the instrument has executed every command sent
        before it, so the action *operation* (a fault, a setpoint) is in place when this returns.
        The wait is bounded by the transport's timeout."""
        answer = self.transport.query("*OPC?")
        if answer.strip().lstrip("+") != "1":
            raise TransportError(f"{self!r}: {operation}: '*OPC?' answered {answer!r}; expected 1")

    def check_errors(self) -> None:
        """Drain the instrument's error queue; raise :class:`InstrumentError` listing them."""
        self.require_open("check_errors")
        errors = read_error_queue(self.transport, repr(self))
        if errors:
            raise InstrumentError(f"{self!r}: instrument reported {len(errors)} error(s): "
                                  + "; ".join(errors))

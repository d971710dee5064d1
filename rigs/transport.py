"""Byte transports the drivers get injected, and recording/replay by composition.

A driver never opens a port in ``__init__``: it is handed a :class:`ByteTransport` (a pyserial
object from :func:`serial_transport` fits) and opens it in ``open()``.  :class:`RecordingTransport`
wraps *any* transport and keeps a timestamped transcript; :class:`ScriptedTransport` is the test
double that replays a transcript and fails on the first byte that differs or on bytes left unread.
"""

from __future__ import annotations

import importlib.util
import json
import pkgutil
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable
from urllib.parse import urlsplit

import serial
import serial.urlhandler

from protocols.yamlmodel import PORT_MAX, PORT_MIN, port_problem
from rigs.errors import ConfigError, NoResponse, TransportError, hexdump

Direction = Literal["tx", "rx"]

_HANDLER_PREFIX = "protocol_"
_SCHEME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
#: Schemes whose URL is ``host:port`` (a TCP port, checked like every port of a file).
_NETWORK_SCHEMES = frozenset({"rfc2217", "socket"})


def url_schemes() -> tuple[str, ...]:
    """The URL schemes pyserial has a handler module for (``serial/urlhandler/protocol_*``)."""
    names = (m.name for m in pkgutil.iter_modules(serial.urlhandler.__path__))
    return tuple(sorted(n[len(_HANDLER_PREFIX):] for n in names if n.startswith(_HANDLER_PREFIX)))


_URL_EXAMPLES = {"rfc2217": "rfc2217://host:port", "socket": "socket://host:port", "loop": "loop://"}
URL_FORMS = (
    "a device path (/dev/ttyUSB0, /dev/serial/by-id/…, /dev/pts/N) or a URL pyserial handles: "
    + ", ".join(_URL_EXAMPLES.get(s, f"{s}://…") for s in url_schemes())
)


def serial_url_error(url: object) -> str | None:
    """Why *url* is not a serial port the rig can open, or ``None`` when it is one.

    The one grammar of serial ports (bench YAML ``terminal.port``, ``cards.probe``, and
    :func:`serial_transport`): an absolute device path, or ``scheme://…`` where pyserial itself
    has a handler for the scheme (``serial.urlhandler.protocol_<scheme>``, as
    ``serial.serial_for_url`` looks it up; the scheme is case-insensitive there too).
    """
    if not isinstance(url, str) or not url.strip():
        return f"{url!r} is not a serial port URL; expected {URL_FORMS}"
    if url.startswith("/"):
        return None
    scheme, sep, _ = url.partition("://")
    if not sep:
        return f"{url!r} is not a serial port URL; expected {URL_FORMS}"
    name = scheme.lower()
    if not _SCHEME_RE.match(name) or importlib.util.find_spec(
            f"serial.urlhandler.{_HANDLER_PREFIX}{name}") is None:
        return f"{url!r}: pyserial has no handler for {scheme}://; expected {URL_FORMS}"
    if name in _NETWORK_SCHEMES:
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:  # not a number, or outside 0..65535
            port = None
        if not parts.hostname or port is None or port_problem(port) is not None:
            return (f"{url!r}: {scheme}:// needs host:port with a port {PORT_MIN}..{PORT_MAX}; "
                    f"expected {URL_FORMS}")
    return None


@runtime_checkable
class ByteTransport(Protocol):
    """The subset of pyserial's ``Serial`` the drivers rely on."""

    timeout: float | None

    @property
    def is_open(self) -> bool: ...

    def open(self) -> None: ...

    def close(self) -> None: ...

    def write(self, data: bytes) -> int | None: ...

    def read(self, size: int = 1) -> bytes: ...

    def reset_input_buffer(self) -> None: ...


def serial_transport(url: str, *, baudrate: int = 115200, timeout: float = 0.05,
                     where: str = "port") -> ByteTransport:
    """Build (not open) a pyserial transport for *url* (grammar: :func:`serial_url_error`); a
    malformed URL names *where* and the expected forms."""
    why = serial_url_error(url)
    if why is not None:
        raise ConfigError(f"{where}: {why}")
    try:
        port = serial.serial_for_url(url, baudrate=baudrate, timeout=timeout, do_not_open=True)
    except (ValueError, serial.SerialException) as exc:
        raise ConfigError(f"{where}: cannot use {url!r} ({exc}); expected {URL_FORMS}") from exc
    return port  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Record:
    t: float  # seconds since the recorder started (time.monotonic based)
    direction: Direction
    data: bytes


@dataclass
class Transcript:
    """Ordered, thread-safe list of :class:`Record`; drivers render it (masked) for evidence."""

    records: list[Record] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _t0: float = field(default_factory=time.monotonic, repr=False)

    def add(self, direction: Direction, data: bytes) -> None:
        if data:
            with self._lock:
                self.records.append(Record(time.monotonic() - self._t0, direction, bytes(data)))

    def snapshot(self) -> list[Record]:
        with self._lock:
            return list(self.records)

    def clear(self) -> None:
        with self._lock:
            self.records.clear()
            self._t0 = time.monotonic()


def save_transcript(transcript: Transcript, path: Path) -> None:
    """Write a transcript as JSON lines (``{"t":…, "dir":"tx"|"rx", "hex":…}``), e.g. to keep an
    exchange recorded on a real bench as a unit-test fixture (record only non-sensitive traffic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for rec in transcript.snapshot():
            out.write(json.dumps({"t": round(rec.t, 6), "dir": rec.direction,
                                  "hex": rec.data.hex()}) + "\n")


def load_script(path: Path) -> list[tuple[Direction, bytes | Callable[[bytes], bytes]]]:
    """Read a saved transcript back as a :class:`ScriptedTransport` script; consecutive records
    of one direction are merged (chunking is the OS's, not the protocol's)."""
    script: list[tuple[Direction, bytes | Callable[[bytes], bytes]]] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            direction, data = item["dir"], bytes.fromhex(item["hex"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path}:{n}: not a transcript record ({exc})") from None
        if direction not in ("tx", "rx"):
            raise ConfigError(f"{path}:{n}: dir must be tx or rx, got {direction!r}")
        if script and script[-1][0] == direction:
            prev = script[-1][1]
            assert isinstance(prev, bytes)
            script[-1] = (direction, prev + data)
        else:
            script.append((direction, data))
    return script


class RecordingTransport:
    """Wraps a transport; every byte written or read lands in :attr:`transcript`."""

    def __init__(self, inner: ByteTransport, transcript: Transcript | None = None) -> None:
        self.inner = inner
        self.transcript = transcript if transcript is not None else Transcript()

    @property
    def timeout(self) -> float | None:
        return self.inner.timeout

    @timeout.setter
    def timeout(self, value: float | None) -> None:
        self.inner.timeout = value

    @property
    def is_open(self) -> bool:
        return bool(self.inner.is_open)

    def open(self) -> None:
        self.inner.open()

    def close(self) -> None:
        self.inner.close()

    def write(self, data: bytes) -> int | None:
        n = self.inner.write(data)
        self.transcript.add("tx", data)
        return n

    def read(self, size: int = 1) -> bytes:
        data = self.inner.read(size)
        self.transcript.add("rx", data)
        return data

    def reset_input_buffer(self) -> None:
        self.inner.reset_input_buffer()


class ScriptedTransport:
    """Test double: plays a device from a script of ``("tx", bytes)`` / ``("rx", bytes)`` steps.

    ``tx`` steps are what the driver must write, in order and exactly; ``rx`` steps are what the
    device answers, made readable once every earlier ``tx`` step has been written.  A callable
    ``rx`` step is called with the bytes of the previous tx step (for echoing sequence numbers).
    :meth:`assert_done` fails if the driver did not write everything expected.
    """

    def __init__(self, script: list[tuple[Direction, bytes | Callable[[bytes], bytes]]],
                 name: str = "scripted") -> None:
        self.name = name
        self._script = deque(script)
        self._rx = bytearray()
        self._pending_tx = bytearray()
        self._last_tx = b""
        self._cond = threading.Condition()
        self.timeout: float | None = 0.05
        self._open = False
        self.written = bytearray()
        self._release_rx()

    @property
    def is_open(self) -> bool:
        return self._open

    def open(self) -> None:
        self._open = True

    def close(self) -> None:
        self._open = False

    def _release_rx(self) -> None:
        while self._script and self._script[0][0] == "rx":
            _, data = self._script.popleft()
            self._rx += data(self._last_tx) if callable(data) else data

    def write(self, data: bytes) -> int:
        if not self._open:
            raise TransportError(f"{self.name}: write() needs an open transport; state is CLOSED")
        with self._cond:
            self.written += data
            self._pending_tx += data
            while self._pending_tx:
                if not self._script or self._script[0][0] != "tx":
                    raise AssertionError(
                        f"{self.name}: unexpected write {hexdump(bytes(self._pending_tx))}; "
                        f"script expects {'nothing more' if not self._script else 'a read first'}")
                expected = self._script[0][1]
                assert isinstance(expected, bytes)
                n = min(len(expected), len(self._pending_tx))
                if bytes(self._pending_tx[:n]) != expected[:n]:
                    raise AssertionError(
                        f"{self.name}: wrote {hexdump(bytes(self._pending_tx))}, "
                        f"expected {hexdump(expected)}")
                if n < len(expected):
                    return len(data)  # partial write of the expected step; wait for the rest
                del self._pending_tx[:n]
                self._script.popleft()
                self._last_tx = expected
                self._release_rx()
            self._cond.notify_all()
        return len(data)

    def read(self, size: int = 1) -> bytes:
        if not self._open:
            raise TransportError(f"{self.name}: read() needs an open transport; state is CLOSED")
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        with self._cond:
            while not self._rx:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return b""
                if not self._cond.wait(timeout=left if left is not None else 1.0) and deadline is None:
                    raise NoResponse(f"{self.name}: read() with no timeout and nothing scripted")
            out = bytes(self._rx[:size])
            del self._rx[:size]
            return out

    def reset_input_buffer(self) -> None:
        with self._cond:
            self._rx.clear()

    def assert_done(self) -> None:
        """Everything scripted was written and everything the device sent was read."""
        with self._cond:
            left = [(d, hexdump(x) if isinstance(x, bytes) else "<callable>") for d, x in self._script]
            if left or self._pending_tx:
                raise AssertionError(f"{self.name}: script not finished; still expected {left}")
            if self._rx:
                raise AssertionError(f"{self.name}: driver left unread {hexdump(bytes(self._rx))}")


def read_chunk(rec: RecordingTransport) -> bytes:
    """What a reader thread takes from *rec* in one go: one byte (waiting at most the port's
    read timeout), then whatever else has already arrived."""
    data = rec.read(1)
    if data:
        waiting = int(getattr(rec.inner, "in_waiting", 0) or 0)
        if waiting:
            data += rec.read(waiting)
    return data


class ReaderLink:
    """The session plumbing of a serial link driver whose reader thread runs ``_read_loop``
    (the test-port link, the Concert link): open the port (a port that cannot be opened is a
    TransportError naming it), start the reader, and stop it again.  The driver keeps its own
    state (``_pending``) under ``_cond``."""

    _rec: RecordingTransport
    _cond: threading.Condition
    _pending: object | None
    _running: bool
    _reader: threading.Thread | None
    _reader_error: BaseException | None

    def _read_loop(self) -> None:
        raise NotImplementedError

    def _open_port(self, read_timeout: float) -> None:
        if not self._rec.is_open:
            try:
                self._rec.open()
            except OSError as exc:  # pyserial's SerialException is one: the port is not there
                raise TransportError(f"{self!r}: open(): cannot open the port: {exc}") from exc
        if self._rec.timeout is None or self._rec.timeout > read_timeout:
            self._rec.timeout = read_timeout  # the reader must notice close() and its timers
        self._rec.reset_input_buffer()

    def _start_reader(self) -> None:
        self._reader_error = None
        self._running = True
        self._reader = threading.Thread(target=self._read_loop, name=f"{self!r}-reader",
                                        daemon=True)
        self._reader.start()

    def _stop_reader(self) -> None:
        self._running = False
        if self._reader is not None:
            self._reader.join(timeout=1.0)
            self._reader = None
        if self._rec.is_open:
            self._rec.close()
        with self._cond:
            self._pending = None
            self._cond.notify_all()

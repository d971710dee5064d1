"""What the simulators' servers share: the acquirer host (ISO 8583 over TCP) and the QR payment
platform (HTTP/JSON) each put a pure engine on a port, with a control socket beside it.

* :class:`TrackedConnections`, :class:`TrackedHandler` — a ``socketserver`` keeps the
  connections its handler threads serve, so stopping can shut every one of them down.
* :class:`EngineServer` — the ``socketserver`` half: the engine, the lock it is answered under,
  its clock, the idle bound of a read, and a rule's delay waited out (bounded by
  ``--max-delay``) outside the lock.
* :class:`SimServer` — the owner: listen on host:port (0 = ephemeral), start and stop the serve
  thread and any worker (the QR platform's ticker), every join bounded; the control socket
  with it.
* :class:`UnixControlServer` — a control socket (:mod:`protocols.controlserver`) served by a
  thread per client, every read and send bounded.
* :func:`add_server_options`, :func:`run_server` — the options and the life of a
  ``python -m sim.…`` entry point (which alone configures logging).
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import socketserver
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Generic, Protocol, Self, TypeVar

from protocols.controlserver import (
    SEND_TIMEOUT_S,
    ControlSession,
    check_unix_path,
    listen_unix,
)
from protocols.digits import ascii_digits
from protocols.errors import NoResponse, RigError, SimError, TransportError
from protocols.jsonlines import encode_line
from protocols.yamlmodel import PORT_MAX, PORT_MIN, port_problem

logger = logging.getLogger(__name__)

#: How often a control connection's read wakes to see whether the server is stopping (s).
POLL_S = 0.5
#: How often the serve threads look at their stop request (s).
SERVE_POLL_S = 0.1

E = TypeVar("E")


class _Served(Protocol):
    """What :class:`SimServer` needs of its ``socketserver``."""

    server_address: Any
    stopping: threading.Event

    def serve_forever(self, poll_interval: float = ...) -> None: ...

    def shutdown(self) -> None: ...

    def server_close(self) -> None: ...

    def drop_all(self) -> None: ...


S = TypeVar("S", bound=_Served)


class TrackedConnections:
    """Mixin for a ``socketserver`` server: handlers call :meth:`track` on setup and finish;
    :meth:`drop_all` shuts down every connection still open (their threads then end)."""

    def init_tracking(self) -> None:
        self._conns_lock = threading.Lock()
        self.connections: set[socket.socket] = set()
        self.stopping = threading.Event()

    def track(self, sock: socket.socket, add: bool) -> None:
        with self._conns_lock:
            if add:
                self.connections.add(sock)
            else:
                self.connections.discard(sock)

    def drop_all(self) -> None:
        with self._conns_lock:
            conns = list(self.connections)
        for sock in conns:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class TrackedHandler(socketserver.BaseRequestHandler):
    """A ``socketserver`` handler whose connection its :class:`TrackedConnections` server keeps
    while it is served."""

    server: Any

    def setup(self) -> None:
        self.server.track(self.request, True)

    def finish(self) -> None:
        self.server.track(self.request, False)


class EngineServer(TrackedConnections, Generic[E]):
    """Mixin for the ``socketserver`` serving a simulator's engine *engine*: each request is
    answered under *lock* at *clock*'s time; a read waits at most *idle_timeout*; a rule's delay
    at most *max_delay*."""

    allow_reuse_address = True
    daemon_threads = True

    def init_engine(self, engine: E, clock: Callable[[], Any], idle_timeout: float,
                    lock: threading.Lock, max_delay: float) -> None:
        self.engine = engine
        self.clock = clock
        self.idle_timeout = idle_timeout
        self.max_delay = max_delay
        self.engine_lock = lock
        self.init_tracking()

    def wait_rule_delay(self, peer: str, rule_id: int | None, delay_s: float) -> bool:
        """Wait out a rule's delay, bounded by *max_delay*, in the connection's own thread
        (outside the engine's lock, so other connections go on); False when the server stops
        meanwhile."""
        delay = min(delay_s, self.max_delay)
        logger.info("%s: rule #%s: answering %.1f s late%s", peer, rule_id, delay,
                    "" if delay == delay_s else
                    f" (asked {delay_s:.1f} s, bounded by --max-delay)")
        return not self.stopping.wait(delay)


class SimServer(Generic[S]):
    """Listen on *host*:*port* (0 = ephemeral) and serve (:meth:`start`, :meth:`stop`); with a
    *control* server, its control socket too.  A subclass builds its ``socketserver``
    (:meth:`_listen`) and may add worker threads (:meth:`_workers`)."""

    #: The serve thread's name.
    thread_name = "sim-server"
    #: What the log calls it.
    label = "simulator"

    def __init__(self, host: str, port: int, *, control: UnixControlServer | None) -> None:
        self._bind = (host, port)
        self.control = control
        self._server: S | None = None
        self._threads: list[threading.Thread] = []

    def _listen(self) -> S:
        raise NotImplementedError

    def _workers(self, server: S) -> list[threading.Thread]:
        """Threads that run beside the serve thread (each ends when ``server.stopping`` is
        set)."""
        return []

    @property
    def address(self) -> tuple[str, int]:
        if self._server is None:
            raise SimError(f"{type(self).__name__}{self._bind}: address needs a started server; "
                           f"state is STOPPED")
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> tuple[str, int]:
        try:
            server = self._listen()
        except OSError as exc:
            raise TransportError(f"{type(self).__name__}: cannot listen on "
                                 f"{self._bind[0]}:{self._bind[1]} ({exc})") from exc
        if self.control is not None:
            try:
                self.control.start()
            except RigError:
                server.server_close()
                raise
        self._server = server
        self._threads = [threading.Thread(target=server.serve_forever,
                                          kwargs={"poll_interval": SERVE_POLL_S},
                                          name=self.thread_name, daemon=True),
                         *self._workers(server)]
        for thread in self._threads:
            thread.start()
        logger.info("%s listening on %s:%d", self.label, *self.address)
        return self.address

    def stop(self, timeout: float = 5.0) -> None:
        server, threads = self._server, self._threads
        if server is None:
            return
        if self.control is not None:
            self.control.stop(timeout)
        server.stopping.set()
        server.shutdown()
        server.drop_all()
        server.server_close()
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._server, self._threads = None, []
        alive = [t.name for t in threads if t.is_alive()]
        if alive:
            raise NoResponse(f"{type(self).__name__}.stop(): {', '.join(alive)} still running "
                             f"after {timeout} s")

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- the control socket, a thread per client ----------------------------------------------------


class _ControlHandler(TrackedHandler):
    server: _UnixServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        session = self.server.new_session()
        sock.settimeout(POLL_S)
        while not self.server.stopping.is_set():
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError as exc:
                logger.info("control client: connection error %s", exc)
                return
            if not data:
                return
            try:
                sock.settimeout(SEND_TIMEOUT_S)
                for answer in session.feed(data):
                    sock.sendall(encode_line(answer))
                sock.settimeout(POLL_S)
            except OSError as exc:
                logger.info("control client: send failed within %.1f s: %s", SEND_TIMEOUT_S, exc)
                return
            if session.broken:
                logger.warning("control client sent an over-long line; connection dropped")
                return


class _UnixServer(TrackedConnections, socketserver.ThreadingUnixStreamServer):
    daemon_threads = True

    def __init__(self, listener: socket.socket, path: Path,
                 new_session: Callable[[], ControlSession]) -> None:
        self.new_session = new_session
        self.init_tracking()
        super().__init__(str(path), _ControlHandler, bind_and_activate=False)
        self.socket.close()
        self.socket = listener


class UnixControlServer:
    """Serve control sessions on the unix socket *path* (:func:`protocols.controlserver.
    listen_unix`: a stale socket file is replaced, mode 0600), a thread per client.  Each client
    gets a session from *session*; its owner holds its engine's lock in it.  *thread_name* and
    *label* name the serve thread and the socket in the log."""

    def __init__(self, path: str | Path, session: Callable[[], ControlSession], *,
                 thread_name: str, label: str) -> None:
        self.path = Path(path)
        self.owner = type(self).__name__
        check_unix_path(self.path, self.owner, SimError)
        self.new_session = session
        self.thread_name = thread_name
        self.label = label
        self._server: _UnixServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Path:
        listener = listen_unix(self.path, self.owner)
        self._server = _UnixServer(listener, self.path, self.new_session)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": SERVE_POLL_S},
                                        name=self.thread_name, daemon=True)
        self._thread.start()
        logger.info("%s %s", self.label, self.path)
        return self.path

    def stop(self, timeout: float = 5.0) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.stopping.set()
        server.shutdown()
        server.drop_all()
        server.server_close()
        thread.join(timeout)
        self._server = self._thread = None
        self.path.unlink(missing_ok=True)
        if thread.is_alive():
            raise SimError(f"{self.owner}.stop(): serve thread still running after {timeout} s")


def locked_answers(lock: threading.Lock, answer: Callable[[object], dict[str, Any]]
                   ) -> Callable[[object], dict[str, Any]]:
    """*answer* run under *lock* (the engine's, shared with the server answering requests)."""
    def run(request: object) -> dict[str, Any]:
        with lock:
            return answer(request)
    return run


# -- entry points ----------------------------------------------------------------------------------


def listen_address(example: str) -> Callable[[str], tuple[str, int]]:
    """An argparse type: ``HOST:PORT`` to listen on, a TCP port (:func:`port_problem`) or 0
    for an ephemeral one, which only a listener can ask for (*example* shows one in the
    error)."""
    def parse(text: str) -> tuple[str, int]:
        host, sep, port = text.rpartition(":")
        number = int(port) if ascii_digits(port) else None
        if (not sep or not host or number is None
                or (number != 0 and port_problem(number) is not None)):
            raise argparse.ArgumentTypeError(
                f"{text!r}: expected HOST:PORT, e.g. {example} (port 0 or "
                f"{PORT_MIN}..{PORT_MAX})")
        return host, number
    return parse


def seconds(text: str) -> float:
    """An argparse type: a number of seconds above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected seconds (a number)") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be above 0 seconds")
    return value


def add_server_options(ap: argparse.ArgumentParser, listen_example: str, *, rules: str) -> None:
    """The options of every simulator server: ``--listen``, ``--control``, ``--rules`` (*rules*
    says which file), ``--idle-timeout``, ``--max-delay``, ``--log-level``."""
    ap.add_argument("--listen", type=listen_address(listen_example), required=True,
                    help="HOST:PORT")
    ap.add_argument("--control", default=None,
                    help="unix socket path of the control ops (default: no control socket)")
    ap.add_argument("--rules", default=None, help=f"{rules} (default: no rules)")
    ap.add_argument("--idle-timeout", type=seconds, default=30.0,
                    help="close a connection idle this many seconds (default 30)")
    ap.add_argument("--max-delay", type=seconds, default=60.0,
                    help="bound of a rule's delay_s, seconds (default 60)")
    ap.add_argument("--log-level", default="INFO")


@dataclass(frozen=True)
class Started:
    """What an entry point started: the server, what to close after it stops (its ledger),
    and a line for the log."""

    server: SimServer[Any]
    close: Callable[[], None]
    summary: str


def run_server(log: logging.Logger, start: Callable[[], Started], poll_s: float = 1.0) -> int:
    """An entry point's life: *start* (a RigError: logged, exit status 2), say ``READY
    host:port`` on stdout (the bench supervisor waits for it), serve until SIGTERM or SIGINT,
    stop the server, close what it used; exit status 0."""
    try:
        started = start()
    except RigError as exc:
        log.error("cannot start: %s", exc)
        return 2
    log.info("%s", started.summary)
    stop = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    host, port = started.server.address
    print(f"READY {host}:{port}", flush=True)
    while not stop.wait(poll_s):
        pass
    started.server.stop()
    started.close()
    log.info("stopped")
    return 0


__all__ = [
    "EngineServer",
    "SimServer",
    "Started",
    "TrackedConnections",
    "TrackedHandler",
    "UnixControlServer",
    "add_server_options",
    "listen_address",
    "locked_answers",
    "run_server",
    "seconds",
]

"""The host simulator's control socket (virtual bench): JSON lines over a unix socket.

One request per line, ``{"op": ..., "seq": n, ...}``; one answer per request, ``{"ok": true,
"seq": n, ...}`` or ``{"ok": false, "seq": n, "error": "..."}`` (``seq``, an integer, is echoed
when given).  Ops (:data:`CONTROL_OPS`):

==================  ============================  ===========================================
op                  request keys                  answer keys
==================  ============================  ===========================================
``ping``            —                             ``pid``, ``added_rules`` (added over this
                                                  socket and not spent), ``disagreements``
                                                  ({terminal id: pending})
``add_rule``        ``rule`` {match, answer,      ``id``
                    times} (sim.host.rules)
``clear_rules``     —                             ``cleared`` (ids of the rules added here)
``disagree_next``   ``terminal_id``               ``terminal_id``, ``pending``
``totals``          ``terminal_id``, ``batch_no`` ``terminal_id``, ``batch_no``, ``totals``
                                                  {debit_count, debit_amount, credit_count,
                                                  credit_amount}, ``source`` (booked /
                                                  uploaded), ``settled``
``reset``           —                             ``cleared`` (rule ids), ``disagreements``
                                                  (terminal ids that had one)
``rules``           —                             ``rules`` (every rule in force, with id,
                                                  source, used, spent)
==================  ============================  ===========================================

Every op runs under the engine's lock (the one the TCP server holds while answering), so a
rule added here applies from the next request on.  :class:`ControlServer` hosts the ops; every
read is bounded, a client that sends an over-long line is dropped.
"""

from __future__ import annotations

import logging
import os
import socket
import socketserver
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from protocols.errors import DecodeError, RigError, SimError, TransportError
from protocols.jsonlines import JsonLineBuffer, LineTooLong, encode_line
from protocols.masking import scrub
from sim.host.connections import TrackedConnections
from sim.host.engine import AcquirerEngine
from sim.host.rules import parse_rule

logger = logging.getLogger(__name__)

Request = Mapping[str, Any]
ControlOp = Callable[[AcquirerEngine, Request], dict[str, Any]]
#: Longest path of a unix socket (sun_path less its terminating NUL).
UNIX_PATH_MAX = 107
#: How often a connection's read wakes to see whether the server is stopping (s).
POLL_S = 0.5
#: Bound of sending one answer to a client that does not read (s).
SEND_TIMEOUT_S = 2.0


class ControlRefused(SimError):
    """A control request the host refuses (answered ``{"ok": false, "error": ...}``)."""


def _text(request: Request, key: str, op: str) -> str:
    value = request.get(key)
    if not isinstance(value, str) or not value:
        raise ControlRefused(f"{op}: {key!r} must be a non-empty string, got {value!r}")
    return value


def _terminal_id(request: Request, op: str) -> str:
    tid = _text(request, "terminal_id", op)
    if len(tid) != 8:
        raise ControlRefused(f"{op}: 'terminal_id' must be 8 characters (field 41), got {tid!r}")
    return tid


def _batch_no(request: Request, op: str) -> str:
    value = request.get("batch_no")
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1_000_000:
        return f"{value:06d}"
    if isinstance(value, str) and value.isdigit() and len(value) <= 6:
        return value.zfill(6)
    raise ControlRefused(f"{op}: 'batch_no' must be a batch number (up to 6 digits), got "
                         f"{value!r}")


def _op_ping(engine: AcquirerEngine, request: Request) -> dict[str, Any]:
    return {"pid": os.getpid(), "added_rules": engine.rules.added_in_force(),
            "disagreements": {t: n for t, n in sorted(engine.disagreements.items()) if n > 0}}


def _op_add_rule(engine: AcquirerEngine, request: Request) -> dict[str, Any]:
    if "rule" not in request:
        raise ControlRefused('add_rule: a request needs "rule": {"match": {...}, "answer": '
                             '{...}, "times": n}')
    rule = parse_rule(request["rule"], "add_rule: rule")
    return {"id": engine.add_rule(rule)}


def _op_clear_rules(engine: AcquirerEngine, request: Request) -> dict[str, Any]:
    return {"cleared": engine.clear_rules()}


def _op_disagree_next(engine: AcquirerEngine, request: Request) -> dict[str, Any]:
    tid = _terminal_id(request, "disagree_next")
    return {"terminal_id": tid, "pending": engine.disagree_next(tid)}


def _op_totals(engine: AcquirerEngine, request: Request) -> dict[str, Any]:
    tid = _terminal_id(request, "totals")
    batch = _batch_no(request, "totals")
    view = engine.batch_view(tid, batch)
    t = view.totals
    return {"terminal_id": tid, "batch_no": batch, "source": view.source,
            "settled": view.settled,
            "totals": {"debit_count": t.debit_count, "debit_amount": t.debit_amount,
                       "credit_count": t.credit_count, "credit_amount": t.credit_amount}}


def _op_reset(engine: AcquirerEngine, request: Request) -> dict[str, Any]:
    return {"cleared": engine.clear_rules(), "disagreements": engine.clear_disagreements(),
            "pin_tries_reset": engine.reset_pin_tries()}


def _op_rules(engine: AcquirerEngine, request: Request) -> dict[str, Any]:
    return {"rules": engine.rules.to_json()}


CONTROL_OPS: Mapping[str, ControlOp] = MappingProxyType({
    "ping": _op_ping,
    "add_rule": _op_add_rule,
    "clear_rules": _op_clear_rules,
    "disagree_next": _op_disagree_next,
    "totals": _op_totals,
    "reset": _op_reset,
    "rules": _op_rules,
})


def handle_control(engine: AcquirerEngine, request: object) -> dict[str, Any]:
    """One decoded request in, one answer out (never raises for a bad request)."""
    seq = request.get("seq") if isinstance(request, Mapping) else None
    try:
        if not isinstance(request, Mapping):
            raise ControlRefused(f"a request is a JSON object, got {type(request).__name__}")
        op = request.get("op")
        handler = CONTROL_OPS.get(op) if isinstance(op, str) else None
        if handler is None:
            raise ControlRefused(f"unknown op {op!r}; expected one of {', '.join(CONTROL_OPS)}")
        answer: dict[str, Any] = {"ok": True, **handler(engine, request)}
    except RigError as exc:  # ControlRefused, a rule's ConfigError (key paths named)
        answer = {"ok": False, "error": scrub(str(exc))}
    if isinstance(seq, int) and not isinstance(seq, bool):
        answer["seq"] = seq
    return answer


class ControlSession:
    """One client: bytes in (any chunking), answers out.  A line that is not a JSON object gets
    an error answer and the session goes on; an over-long line ends it (:attr:`broken`)."""

    def __init__(self, engine: AcquirerEngine, lock: threading.Lock,
                 where: str = "host control socket") -> None:
        self.engine = engine
        self.lock = lock
        self.buffer = JsonLineBuffer(where)
        self.broken = False

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        answers: list[dict[str, Any]] = []
        for item in self.buffer.feed_each(data):
            if isinstance(item, DecodeError):
                answers.append({"ok": False, "error": f"request refused: {item}"})
                self.broken = self.broken or isinstance(item, LineTooLong)
                continue
            with self.lock:
                answers.append(handle_control(self.engine, item))
        return answers


class _Handler(socketserver.BaseRequestHandler):
    server: _UnixServer

    def setup(self) -> None:
        self.server.track(self.request, True)

    def finish(self) -> None:
        self.server.track(self.request, False)

    def handle(self) -> None:
        sock: socket.socket = self.request
        session = ControlSession(self.server.engine, self.server.lock)
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
                logger.info("control client: send failed: %s", exc)
                return
            if session.broken:
                logger.warning("control client sent an over-long line; connection dropped")
                return


class _UnixServer(TrackedConnections, socketserver.ThreadingUnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, engine: AcquirerEngine, lock: threading.Lock) -> None:
        self.engine = engine
        self.lock = lock
        self.stopping = threading.Event()
        self.init_tracking()
        super().__init__(path, _Handler)



class ControlServer:
    """Serve :data:`CONTROL_OPS` on the unix socket *path* (a stale socket file is replaced),
    each op under *lock* (shared with the TCP server)."""

    def __init__(self, engine: AcquirerEngine, path: str | Path, lock: threading.Lock) -> None:
        self.engine = engine
        self.path = Path(path)
        self.lock = lock
        if len(str(self.path)) > UNIX_PATH_MAX:
            raise SimError(f"ControlServer: socket path {self.path} has {len(str(self.path))} "
                           f"characters; a unix socket path has at most {UNIX_PATH_MAX}")
        self._server: _UnixServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Path:
        if self.path.exists() or self.path.is_symlink():
            if not self.path.is_socket():
                raise TransportError(f"ControlServer: {self.path} exists and is not a socket; "
                                     f"refusing to replace it")
            self.path.unlink()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._server = _UnixServer(str(self.path), self.engine, self.lock)
        except OSError as exc:
            raise TransportError(f"ControlServer: cannot listen on {self.path} ({exc})") from exc
        os.chmod(self.path, 0o600)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.1},
                                        name="acquirer-control", daemon=True)
        self._thread.start()
        logger.info("acquirer host control socket %s", self.path)
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
            raise SimError(f"ControlServer.stop(): serve thread still running after {timeout} s")


__all__ = [
    "CONTROL_OPS",
    "ControlRefused",
    "ControlServer",
    "ControlSession",
    "handle_control",
]

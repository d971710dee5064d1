"""The server side of a JSON-lines control socket: the one way every simulator and the rig's
network bridge take control requests (the client is :class:`rigs.jsonctl.ControlChannel`).

One request per line on a unix stream socket, ``{"op": ..., "seq": n, ...}``; one answer per
request, ``{"ok": true, "seq": n, ...}`` or ``{"ok": false, "seq": n, "error": "..."}``
(``seq``, an integer, is echoed when given, so a client can tell a late answer from the one it
waits for).  Layers, each usable on its own:

* :func:`answer_request` — one decoded request through a dispatch table ``op → handler``; a
  request that is not an object, an unknown op or a refusal the handler raises becomes an error
  answer, never an exception.  Which exceptions are refusals, and how an answer is finished (the
  bridge stamps its state on every one), the owner says.
* :class:`ControlSession` — one client: bytes in (any chunking, :mod:`protocols.jsonlines`),
  answers out.  A line that is not a JSON object is answered and the session goes on; a line
  longer than the bound ends it (:attr:`ControlSession.broken`).
* :func:`listen_unix` — the listening socket: the path's length bounded, a stale socket file
  replaced, any other file refused, mode 0600.
* :class:`ControlClients` — the clients of a listening socket served from the owner's own
  ``select`` loop (the bridge, the vpcd host): accept, read, answer, every send bounded.

A threaded host of the same sessions (the acquirer and QR platform simulators) is
:class:`sim.serving.UnixControlServer`.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from protocols.errors import DecodeError, RigError, TransportError
from protocols.jsonlines import MAX_LINE, JsonLineBuffer, LineTooLong, encode_line
from protocols.masking import scrub

log = logging.getLogger(__name__)

Request = Mapping[str, Any]
Answer = dict[str, Any]
#: A dispatch table: op → handler(target, request, *context) → the answer's keys.
OpTable = Mapping[str, Callable[..., Answer]]

#: Longest path of a unix socket (sun_path less its terminating NUL).
UNIX_PATH_MAX = 107
#: Bound of sending one answer to a client that does not read (s).
SEND_TIMEOUT_S = 2.0


class RequestRefused(RigError):
    """A control request that is wrong in itself (not an object, an unknown op)."""


def error_answer(error: str) -> Answer:
    """A refusal: ``ok`` false and the reason."""
    return {"ok": False, "error": error}


def refusal_answer(exc: BaseException) -> Answer:
    """A refusal raised by a handler, as an answer (its message as the reason)."""
    return error_answer(str(exc))


def masked_refusal(exc: BaseException) -> Answer:
    """A refusal whose message may quote card data (a profile's or a rule's key): any PAN in it
    masked (:func:`protocols.masking.scrub`)."""
    return error_answer(scrub(str(exc)))


def answer_request(ops: OpTable, target: object, request: object, *context: Any,
                   refused: tuple[type[BaseException], ...] = (RigError,),
                   refusal: Callable[[BaseException], Answer] = refusal_answer,
                   finish: Callable[[Answer], Answer] | None = None) -> Answer:
    """One decoded request in, one answer out (never raises for a bad request).

    The handler of the request's op is called as ``handler(target, request, *context)``; an
    exception of *refused* (or :class:`RequestRefused`) it raises is turned into an answer by
    *refusal*.  *finish* sees every answer, ok or not, before ``seq`` is echoed."""
    seq = request.get("seq") if isinstance(request, Mapping) else None
    caught: tuple[type[BaseException], ...] = (RequestRefused, *refused)
    try:
        if not isinstance(request, Mapping):
            raise RequestRefused(f"a request is a JSON object, got {type(request).__name__}")
        op = request.get("op")
        handler = ops.get(op) if isinstance(op, str) else None
        if handler is None:
            raise RequestRefused(f"unknown op {op!r}; expected one of {', '.join(ops)}")
        answer: Answer = {"ok": True, **handler(target, request, *context)}
    except caught as exc:
        answer = refusal(exc)
    if finish is not None:
        answer = finish(answer)
    if isinstance(seq, int) and not isinstance(seq, bool):
        answer["seq"] = seq
    return answer


class ControlSession:
    """One control client: bytes in (any chunking), answers out, one per request line.

    *answer* answers one decoded request (``answer(request, *context)``, with the context given
    to :meth:`feed`); *refusal* answers a line that is not a request.  A line longer than
    *max_line* ends the session (:attr:`broken`) once it is answered."""

    def __init__(self, answer: Callable[..., Answer], where: str, *, max_line: int = MAX_LINE,
                 refusal: Callable[[str], Answer] = error_answer) -> None:
        self.answer = answer
        self.refusal = refusal
        self.buffer = JsonLineBuffer(where, max_line=max_line)
        self.broken = False

    def feed(self, data: bytes, *context: Any) -> list[Answer]:
        answers: list[Answer] = []
        for item in self.buffer.feed_each(data):
            if isinstance(item, DecodeError):
                answers.append(self.refusal(f"request refused: {item}"))
                self.broken = self.broken or isinstance(item, LineTooLong)
            else:
                answers.append(self.answer(item, *context))
        return answers


def check_unix_path(path: Path, owner: str,
                    error: type[RigError] = TransportError) -> None:
    """Refuse (with *error*) a socket path longer than a unix socket takes."""
    if len(str(path)) > UNIX_PATH_MAX:
        raise error(f"{owner}: socket path {path} has {len(str(path))} characters; a unix "
                    f"socket path has at most {UNIX_PATH_MAX}")


def listen_unix(path: Path, owner: str, *, backlog: int = 8) -> socket.socket:
    """A unix stream socket listening on *path*, mode 0600.  A stale socket file (of a process
    that died) is replaced; any other file at *path* is refused.  *owner* names the server in
    errors (:class:`TransportError`)."""
    check_unix_path(path, owner)
    if path.exists() or path.is_symlink():
        if not path.is_socket():
            raise TransportError(f"{owner}: {path} exists and is not a socket; refusing to "
                                 f"replace it")
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        sock.bind(str(path))
        os.chmod(path, 0o600)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise TransportError(f"{owner}: cannot listen on {path} ({exc})") from exc
    return sock


class ControlClients:
    """The clients of the listening socket *listener*, served from the owner's ``select``
    loop: :meth:`accept` when the listener is readable, :meth:`serve` when a client is.

    Each client gets a session from *session*; its answers are sent at once, each send bounded
    by *send_timeout_s*.  A client that closes, fails, does not read within the bound or sends
    an over-long line is dropped (*on_drop* sees it first, e.g. to unregister it from a
    selector).  *where* names the socket in the log."""

    def __init__(self, listener: socket.socket, session: Callable[[], ControlSession], *,
                 where: str, send_timeout_s: float = SEND_TIMEOUT_S, recv_size: int = 65536,
                 on_drop: Callable[[socket.socket], object] | None = None) -> None:
        listener.setblocking(False)
        self.listener = listener
        self.where = where
        self.send_timeout_s = send_timeout_s
        self.recv_size = recv_size
        self._session = session
        self._on_drop = on_drop
        self._sessions: dict[socket.socket, ControlSession] = {}

    def __iter__(self) -> Iterator[socket.socket]:
        return iter(list(self._sessions))

    def __contains__(self, conn: object) -> bool:
        return conn in self._sessions

    def __len__(self) -> int:
        return len(self._sessions)

    def accept(self) -> socket.socket | None:
        """Take a waiting client (None when there was none after all)."""
        try:
            conn, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return None
        conn.setblocking(False)
        self._sessions[conn] = self._session()
        return conn

    def serve(self, conn: socket.socket, *context: Any) -> bool:
        """Read what *conn* sent and answer it (*context* goes to the session); False when the
        client was dropped."""
        try:
            chunk = conn.recv(self.recv_size)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            chunk = b""
        if not chunk:
            self.drop(conn)
            return False
        session = self._sessions[conn]
        for answer in session.feed(chunk, *context):
            try:
                conn.settimeout(self.send_timeout_s)
                conn.sendall(encode_line(answer))
                conn.setblocking(False)
            except OSError as exc:
                log.warning("%s: answer not sent within %.1f s (%s); client dropped",
                            self.where, self.send_timeout_s, exc)
                self.drop(conn)
                return False
        if session.broken:
            log.warning("%s: a client sent an over-long line; connection dropped", self.where)
            self.drop(conn)
            return False
        return True

    def drop(self, conn: socket.socket) -> None:
        if self._sessions.pop(conn, None) is None:
            return
        if self._on_drop is not None:
            self._on_drop(conn)
        conn.close()

    def close(self) -> None:
        """Drop every client (the listener stays the owner's)."""
        for conn in list(self._sessions):
            self.drop(conn)


__all__ = [
    "Answer",
    "ControlClients",
    "ControlSession",
    "OpTable",
    "RequestRefused",
    "SEND_TIMEOUT_S",
    "UNIX_PATH_MAX",
    "answer_request",
    "check_unix_path",
    "error_answer",
    "listen_unix",
    "masked_refusal",
    "refusal_answer",
]

"""The rig's side of a JSON-lines control socket: one request, one answer, matched by ``seq``.

The in-line network injector's bridge process and the acquirer host simulator both take
requests as JSON lines on a unix stream socket and echo the request's ``seq`` in the answer.
:class:`ControlChannel` is the one client of that pattern: it numbers requests, skips late
answers to earlier requests that timed out, bounds every wait by ``reply_timeout_s`` (named in
the error), and turns a closed socket or a malformed line into :class:`TransportError`.  What an
answer means (refusals, a FAILED bridge) stays with the driver.
"""

from __future__ import annotations

import logging
import select
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from protocols.errors import DecodeError, NoResponse, TransportError
from protocols.jsonlines import JsonLineBuffer, encode_line

log = logging.getLogger(__name__)

R = TypeVar("R")


class ControlChannel:
    """Requests and answers on a connected socket.  *owner* names the driver in errors, *peer*
    the process on the other end ("the bridge", "the host"); *closed_text* adds why the peer
    went away (its exit status, its log) when it closes the socket."""

    def __init__(self, owner: str, peer: str, where: str, *, reply_timeout_s: float,
                 max_line: int, closed_text: Callable[[], str] = lambda: "") -> None:
        self.owner = owner
        self.peer = peer
        self.reply_timeout_s = reply_timeout_s
        self.closed_text = closed_text
        self._conn: socket.socket | None = None
        self._buf = JsonLineBuffer(where, max_line=max_line)
        self._pending: list[dict[str, Any]] = []
        self._seq = 0
        self._lock = threading.Lock()
        """One exchange at a time: a driver's steps and its pollers (the bench's wire watch)
        share the socket, and answers are matched by seq in order."""

    @property
    def connected(self) -> bool:
        return self._conn is not None

    def attach(self, conn: socket.socket) -> None:
        """Use *conn* (connected) from now on, with nothing buffered."""
        self.detach()
        self._conn = conn
        self._buf.clear()
        self._pending.clear()

    def detach(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def exchange(self, operation: str, request: dict[str, Any]) -> dict[str, Any]:
        """Send *request* (an ``op`` and its fields) and return the answer carrying its ``seq``
        (or carrying none).  OSError from the socket is the caller's to name.  Thread-safe:
        callers from several threads take turns (each turn bounded by ``reply_timeout_s``)."""
        bound = 2 * self.reply_timeout_s
        if not self._lock.acquire(timeout=bound):
            raise NoResponse(f"{self.owner}: {operation}(): another request to {self.peer} "
                             f"held the control socket for more than {bound:.1f} s")
        try:
            return self._exchange(operation, request)
        finally:
            self._lock.release()

    def _exchange(self, operation: str, request: dict[str, Any]) -> dict[str, Any]:
        conn = self._conn
        if conn is None:
            raise TransportError(f"{self.owner}: {operation}() needs a connection to "
                                 f"{self.peer}")
        self._seq += 1
        seq = self._seq
        conn.settimeout(self.reply_timeout_s)
        conn.sendall(encode_line({**request, "seq": seq}))
        op = request.get("op")
        deadline = time.monotonic() + self.reply_timeout_s
        while True:
            while self._pending:
                answer = self._pending.pop(0)
                if answer.get("seq", seq) == seq:
                    return answer
                log.debug("%s: skipped a late answer (seq %r) while waiting for %d", self.owner,
                          answer.get("seq"), seq)
            left = deadline - time.monotonic()
            readable, _, _ = select.select([conn], [], [], max(0.0, left))
            if not readable:
                raise NoResponse(f"{self.owner}: {operation}(): no answer to {op!r} from "
                                 f"{self.peer} within {self.reply_timeout_s:.1f} s")
            chunk = conn.recv(65536)
            if not chunk:
                why = self.closed_text()
                raise TransportError(f"{self.owner}: {operation}(): {self.peer} closed its "
                                     f"control socket{'; ' + why if why else ''}")
            try:
                self._pending.extend(self._buf.feed(chunk))
            except DecodeError as exc:
                raise TransportError(f"{self.owner}: {operation}(): {self.peer} answered "
                                     f"{op!r} with a malformed line: {exc}") from exc

    def parsed(self, op: str, parse: Callable[[], R]) -> R:
        """Run *parse* on an answer to *op*; a malformed answer names the op and the field."""
        try:
            return parse()
        except TransportError as exc:
            raise TransportError(f"{self.owner}: malformed answer to {op!r} from {self.peer}: "
                                 f"{exc}") from None

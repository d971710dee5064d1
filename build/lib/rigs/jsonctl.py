"""The rig's side of a JSON-lines control socket: one request, one answer, matched by ``seq``.

The in-line network injector's bridge process, the acquirer host, the QR platform and the card
emulator all take requests as JSON lines on a unix stream socket and echo the request's ``seq``
in the answer (the server side is :mod:`protocols.controlserver`).  :class:`ControlChannel` is
the one client of that pattern: it numbers requests, skips late answers to earlier requests that
timed out, bounds every wait by ``reply_timeout_s`` (named in the error), and turns a closed
socket or a malformed line into :class:`TransportError`.  What an answer means (refusals, a
FAILED bridge) stays with the driver.

:class:`SocketControlDriver` is the driver of a simulator's control socket built on it (the
host's :class:`~rigs.hostctl.SocketAcquirerControl`, the QR platform's wallet and rules in
:mod:`rigs.qr`, the card emulator's :class:`~rigs.cards.SocketCardEmulator`): open connects
within a bound and checks the peer answers ``ping``; a refusal is an
:class:`~rigs.errors.InstrumentError` naming the op and the peer's reason; a broken connection
closes the session; answers are parsed into typed records at this boundary; restoring reconnects
first when the connection broke (the simulator was restarted), then asks the peer to go back to
nominal and checks it did.  :class:`SocketRuleControl` adds the answer rules the host and the
QR platform take (``add_rule``, ``clear_rules``), each published as an event.
"""

from __future__ import annotations

import logging
import select
import socket
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Generic, TypeVar

from protocols.errors import DecodeError, NoResponse, RigError, TransportError
from protocols.jsonlines import JsonLineBuffer, encode_line
from rigs.answers import as_int, as_list, required
from rigs.driver import Driver, SessionState
from rigs.errors import ConfigError, DeviceStateError, InstrumentError
from rigs.events import Source

log = logging.getLogger(__name__)

R = TypeVar("R")
St = TypeVar("St")
#: Longest control answer line accepted (the rules listing of a busy scenario fits easily).
ANSWER_MAX = 1024 * 1024


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


def int_list(raw: Mapping[str, Any], key: str, where: str) -> list[int]:
    """``raw[key]`` as a list of integers >= 0 (rule ids); a wrong item is named."""
    value = as_list(required(raw, key, where, "a list"), f"{where}.{key}")
    return [as_int(item, f"{where}.{key}[{i}]") for i, item in enumerate(value)]


class SocketControlDriver(Driver, Generic[St]):
    """A driver of the control socket at *path* of :attr:`started_as` (see the module doc).

    A subclass names its peer (:attr:`peer` in the channel's errors, :attr:`refuser` in
    refusals), parses ``ping`` (:meth:`status`) and says what nominal is: the request that
    restores it (:attr:`restore_op`), the test of a status (:meth:`_nominal_status`) and what
    the peer reports when it is not (:attr:`not_nominal`)."""

    peer = "the simulator"
    """The process on the other end, in the channel's errors ("the host")."""
    refuser = "the simulator"
    """Who refuses a request, in refusals ("the platform refused 'pay'")."""
    where = "control socket"
    """The socket, in decoding errors ("host control socket")."""
    started_as = "the simulator"
    """What serves the socket, for the error when it cannot be reached."""
    answer_max = ANSWER_MAX
    """Longest answer line accepted."""
    connect_timeout_s = 2.0
    """Bound of open() connecting to the socket."""
    reply_timeout_s = 2.0
    """Bound of one control request."""
    restore_op: str | None = None
    """The op that brings the peer back to nominal (None: answering is nominal)."""
    not_nominal = "not nominal"
    """What the peer still reports when restoring did not work."""

    def __init__(self, name: str, path: str | Path, *, connect_timeout: float | None = None,
                 reply_timeout: float | None = None) -> None:
        super().__init__(name)
        self.path = Path(path)
        if connect_timeout is not None:
            self.connect_timeout_s = connect_timeout
        if reply_timeout is not None:
            self.reply_timeout_s = reply_timeout
        self._control = ControlChannel(repr(self), self.peer, self.where,
                                       reply_timeout_s=self.reply_timeout_s,
                                       max_line=self.answer_max,
                                       closed_text=lambda: f"socket {self.path}")

    # --- lifecycle ------------------------------------------------------------------------------

    def open(self) -> None:
        if self._control.connected:
            self.close()
        hint = f"is {self.started_as} running with --control {self.path}?"
        if not self.path.exists():
            raise TransportError(f"{self!r}: open(): control socket {self.path} does not exist "
                                 f"({hint})")
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.settimeout(self.connect_timeout_s)
        try:
            conn.connect(str(self.path))
        except OSError as exc:
            conn.close()
            raise TransportError(f"{self!r}: open(): cannot connect to {self.path} within "
                                 f"{self.connect_timeout_s:.1f} s ({exc}); {hint}") from exc
        self._control.attach(conn)
        self.state = SessionState.OPEN
        try:
            self.status()
        except (TransportError, NoResponse, InstrumentError) as exc:
            self.close()
            raise TransportError(f"{self!r}: open(): {self.path} accepted the connection but "
                                 f"does not answer ping: {exc}") from exc
        log.info("%r: connected to %s", self, self.path)

    def close(self) -> None:
        self._control.detach()
        super().close()

    def is_nominal(self) -> bool:
        """The peer answers and reports nominal (False when closed or it does not answer)."""
        if self.state is not SessionState.OPEN:
            return False
        try:
            status = self.status()
        except (TransportError, NoResponse, InstrumentError, DeviceStateError) as exc:
            log.warning("%r: not nominal: %s", self, exc)
            return False
        if not self._nominal_status(status):
            log.info("%r: not nominal: %s (%s)", self, self.not_nominal, status)
            return False
        return True

    def restore_nominal(self) -> None:
        """Ask the peer to go back to nominal (:attr:`restore_op`; reconnecting first when the
        connection broke, e.g. the simulator was restarted) and check it did."""
        op = self.restore_op or "ping"
        self._restored(self._reconnect_and("restore_nominal", {"op": op}))
        if not self.is_nominal():
            raise DeviceStateError(f"{self!r}: restore_nominal(): {self.refuser} still reports "
                                   f"{self.not_nominal} after {op!r}")

    # --- what a subclass says -------------------------------------------------------------------

    def status(self) -> St:
        """Round trip (``ping``), parsed."""
        raise NotImplementedError

    def _nominal_status(self, status: St) -> bool:
        return True

    def _restored(self, answer: dict[str, Any]) -> None:
        """Read the answer to :attr:`restore_op` (publish what it cleared)."""

    def _refused(self, operation: str, request: Mapping[str, Any],
                 answer: Mapping[str, Any]) -> RigError:
        """The error for a refused request."""
        return InstrumentError(f"{self!r}: {operation}(): {self.refuser} refused "
                               f"{request['op']!r}: {answer.get('error')}")

    # --- requests -------------------------------------------------------------------------------

    def _request(self, operation: str, request: dict[str, Any]) -> dict[str, Any]:
        self.require_open(operation)
        if not self._control.connected:
            raise TransportError(f"{self!r}: {operation}() needs a connection to {self.path}")
        self._control.reply_timeout_s = self.reply_timeout_s
        try:
            answer = self._control.exchange(operation, request)
        except (TransportError, NoResponse):  # NoResponse is a TimeoutError, an OSError
            self._broken()
            raise
        except OSError as exc:
            self._broken()
            raise TransportError(f"{self!r}: {operation}(): control socket {self.path} "
                                 f"failed: {exc}") from exc
        if answer.get("ok") is not True:
            raise self._refused(operation, request, answer)
        return answer

    def _broken(self) -> None:
        """After a failed exchange the stream may hold half an answer: start afresh."""
        self._control.detach()
        self.state = SessionState.CLOSED

    def _parsed(self, op: str, parse: Callable[[], R]) -> R:
        return self._control.parsed(op, parse)

    def _reconnect_and(self, operation: str, request: dict[str, Any]) -> dict[str, Any]:
        """A restore's request, reconnecting first when the connection broke."""
        if self.state is not SessionState.OPEN:
            self.open()
        try:
            return self._request(operation, request)
        except (TransportError, NoResponse):
            self.open()
            return self._request(operation, request)


class SocketRuleControl(SocketControlDriver[St]):
    """A control socket that takes answer rules: :meth:`add_rule` after those in force,
    :meth:`clear_rules` of those added; each published on :attr:`event_source` as
    ``"{rule_label} #{id}"``."""

    rule_label = "rule"
    """How a rule is named in events and the log ("host rule")."""
    event_source = Source.RIG
    """The source of the rule events."""

    def _refused(self, operation: str, request: Mapping[str, Any],
                 answer: Mapping[str, Any]) -> RigError:
        if request["op"] == "add_rule":
            return ConfigError(f"{self!r}: add_rule(): {self.refuser} refused the rule: "
                               f"{answer.get('error')}")
        return super()._refused(operation, request, answer)

    def add_rule(self, match: dict[str, object], answer: dict[str, object],
                 times: int | None = None) -> int:
        """Add a rule after those in force; returns its id.  A rule the peer refuses is a
        ConfigError naming the key."""
        if not isinstance(match, Mapping) or not isinstance(answer, Mapping):
            raise ConfigError(f"{self!r}: add_rule() takes match and answer as mappings, got "
                              f"{type(match).__name__} and {type(answer).__name__}")
        if times is not None and (isinstance(times, bool) or not isinstance(times, int)
                                  or times < 1):
            raise ConfigError(f"{self!r}: add_rule(times=...) takes an integer >= 1 or None, "
                              f"got {times!r}")
        rule: dict[str, object] = {"match": dict(match), "answer": dict(answer)}
        if times is not None:
            rule["times"] = times
        reply = self._request("add_rule", {"op": "add_rule", "rule": rule})
        rule_id = self._parsed("add_rule", lambda: as_int(required(reply, "id", "answer",
                                                                   "an integer >= 0"),
                                                          "answer.id"))
        described = ", ".join(f"{k}={v}" for k, v in {**match, **answer}.items())
        log.info("%r: %s #%d armed: %s%s", self, self.rule_label, rule_id, described,
                 f" x{times}" if times else "")
        self.event_sink.publish(self.event_source, "rule", "armed",
                                f"{self.rule_label} #{rule_id}: {described}"
                                + (f" ({times} time(s))" if times else ""),
                                data={"rule": rule_id})
        return rule_id

    def clear_rules(self) -> None:
        """Remove every rule added over the control socket (the rules file's stay)."""
        reply = self._request("clear_rules", {"op": "clear_rules"})
        self._published_cleared("clear_rules", reply)

    def _published_cleared(self, op: str, reply: Mapping[str, Any]) -> None:
        cleared = self._parsed(op, lambda: int_list(reply, "cleared", "answer"))
        for rule_id in cleared:
            self.event_sink.publish(self.event_source, "rule", "cleared",
                                    f"{self.rule_label} #{rule_id}", data={"rule": rule_id})

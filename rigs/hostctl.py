"""Driver of the acquirer host simulator's control socket (virtual bench): set the host's answers.

The host (``python -m sim.host --control PATH``) listens on a unix socket speaking JSON lines
(:mod:`protocols.jsonlines`; the ops are documented in :mod:`sim.host.control`, the bench YAML
publishes the path as ``host.control``).  :class:`SocketAcquirerControl` connects to it and:

- adds response rules (:meth:`~SocketAcquirerControl.add_rule`: a response code, a late answer,
  no answer) and clears them;
- makes the next settlement of a terminal disagree (:meth:`~SocketAcquirerControl.disagree_next`);
- reads the host's totals of a terminal's batch (:meth:`~SocketAcquirerControl.totals`).

Nominal: no rule added by a step still in force and no pending disagreement;
:meth:`~SocketAcquirerControl.restore_nominal` clears both (the rules file's rules stay: they are
the bench's baseline).  Every answer is parsed at this boundary into typed records
(:class:`HostTotals`, :class:`ControlStatus`); a malformed answer is a
:class:`~protocols.errors.TransportError` naming the field.  Every wait is bounded.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from protocols.ledger import Totals
from rigs.answers import as_bool, as_int, as_list, as_object, as_str, bad, required
from rigs.driver import Driver, SessionState
from rigs.errors import ConfigError, DeviceStateError, InstrumentError, NoResponse, TransportError
from rigs.events import Source
from rigs.jsonctl import ControlChannel

log = logging.getLogger(__name__)
R = TypeVar("R")

#: Longest answer line accepted (the rules listing of a busy scenario fits easily).
ANSWER_MAX = 1024 * 1024


# --- records --------------------------------------------------------------------------------------

_bad = bad
_object = as_object
_field = required


def _int(raw: Mapping[str, Any], key: str, where: str) -> int:
    return as_int(required(raw, key, where, "an integer >= 0"), f"{where}.{key}")


def _str(raw: Mapping[str, Any], key: str, where: str) -> str:
    return as_str(required(raw, key, where, "a string"), f"{where}.{key}")


def _bool(raw: Mapping[str, Any], key: str, where: str) -> bool:
    return as_bool(required(raw, key, where, "true or false"), f"{where}.{key}")


@dataclass(frozen=True)
class HostTotals(Totals):
    """The host's totals of one terminal's batch: debits are sales, credits are refunds (voided
    and reversed transactions count in neither).  ``source``: ``booked`` (what the host booked)
    or ``uploaded`` (the terminal's batch upload, adopted); ``settled``: a settlement of the
    batch was answered balanced."""

    terminal_id: str = ""
    batch_no: str = ""
    source: str = ""
    settled: bool = False

    @classmethod
    def from_json(cls, raw: object, where: str = "answer") -> HostTotals:
        """The answer to ``totals``; a TransportError names the malformed field."""
        obj = _object(raw, where)
        totals = _object(_field(obj, "totals", where, "an object"), f"{where}.totals")
        source = _str(obj, "source", where)
        if source not in ("booked", "uploaded"):
            raise _bad(f"{where}.source", "one of booked, uploaded", source)
        return cls(debit_count=_int(totals, "debit_count", f"{where}.totals"),
                   debit_amount=_int(totals, "debit_amount", f"{where}.totals"),
                   credit_count=_int(totals, "credit_count", f"{where}.totals"),
                   credit_amount=_int(totals, "credit_amount", f"{where}.totals"),
                   terminal_id=_str(obj, "terminal_id", where),
                   batch_no=_str(obj, "batch_no", where), source=source,
                   settled=_bool(obj, "settled", where))


@dataclass(frozen=True)
class ControlStatus:
    """The host's answer to ``ping``: its pid, the rules added over the control socket still in
    force, and the settlements still to disagree per terminal."""

    pid: int
    added_rules: int
    disagreements: Mapping[str, int]

    @property
    def nominal(self) -> bool:
        return self.added_rules == 0 and not any(self.disagreements.values())

    @classmethod
    def from_json(cls, raw: object, where: str = "answer") -> ControlStatus:
        obj = _object(raw, where)
        pid, added = _int(obj, "pid", where), _int(obj, "added_rules", where)
        pending = _object(_field(obj, "disagreements", where, "an object"),
                          f"{where}.disagreements")
        return cls(pid=pid, added_rules=added,
                   disagreements={str(k): _int(pending, k, f"{where}.disagreements")
                                  for k in pending})


def _int_list(raw: Mapping[str, Any], key: str, where: str) -> list[int]:
    value = as_list(required(raw, key, where, "a list"), f"{where}.{key}")
    for i, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, int):
            raise _bad(f"{where}.{key}[{i}]", "an integer", item)
    return list(value)


# --- the driver -----------------------------------------------------------------------------------


class SocketAcquirerControl(Driver):
    """The host simulator's control socket at *path* (see the module doc)."""

    connect_timeout_s = 2.0
    """Bound of open() connecting to the socket."""
    reply_timeout_s = 2.0
    """Bound of one control request."""

    def __init__(self, name: str, path: str | Path, *, connect_timeout: float | None = None,
                 reply_timeout: float | None = None) -> None:
        super().__init__(name)
        self.path = Path(path)
        if connect_timeout is not None:
            self.connect_timeout_s = connect_timeout
        if reply_timeout is not None:
            self.reply_timeout_s = reply_timeout
        self._control = ControlChannel(repr(self), "the host", "host control socket",
                                       reply_timeout_s=self.reply_timeout_s,
                                       max_line=ANSWER_MAX,
                                       closed_text=lambda: f"socket {self.path}")

    # --- lifecycle ------------------------------------------------------------------------------

    def open(self) -> None:
        if self._control.connected:
            self.close()
        if not self.path.exists():
            raise TransportError(f"{self!r}: open(): control socket {self.path} does not exist "
                                 f"(is the host simulator running with --control "
                                 f"{self.path}?)")
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.settimeout(self.connect_timeout_s)
        try:
            conn.connect(str(self.path))
        except OSError as exc:
            conn.close()
            raise TransportError(f"{self!r}: open(): cannot connect to {self.path} within "
                                 f"{self.connect_timeout_s:.1f} s ({exc})") from exc
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
        """No rule added by a step still in force, no pending disagreement (False when closed or
        the host does not answer)."""
        if self.state is not SessionState.OPEN:
            return False
        try:
            status = self.status()
        except (TransportError, NoResponse, InstrumentError, DeviceStateError) as exc:
            log.warning("%r: not nominal: %s", self, exc)
            return False
        if not status.nominal:
            log.info("%r: not nominal: %d added rule(s) in force, disagreements %s", self,
                     status.added_rules, dict(status.disagreements))
        return status.nominal

    def restore_nominal(self) -> None:
        """Clear the rules added by steps and every pending disagreement (reconnecting first
        when the connection broke, e.g. the host was restarted)."""
        if self.state is not SessionState.OPEN:
            self.open()
        try:
            answer = self._request("restore_nominal", {"op": "reset"})
        except (TransportError, NoResponse):
            self.open()
            answer = self._request("restore_nominal", {"op": "reset"})
        cleared = self._parsed("reset", lambda: _int_list(answer, "cleared", "answer"))
        for rule_id in cleared:
            self.event_sink.publish(Source.ACQUIRER, "rule", "cleared", f"host rule #{rule_id}",
                                    data={"rule": rule_id})
        if not self.is_nominal():
            raise DeviceStateError(f"{self!r}: restore_nominal(): the host still reports rules "
                                   f"or disagreements after 'reset'")

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
            error = answer.get("error")
            if request["op"] == "add_rule":
                raise ConfigError(f"{self!r}: add_rule(): the host refused the rule: {error}")
            raise InstrumentError(f"{self!r}: {operation}(): the host refused "
                                  f"{request['op']!r}: {error}")
        return answer

    def _broken(self) -> None:
        """After a failed exchange the stream may hold half an answer: start afresh."""
        self._control.detach()
        self.state = SessionState.CLOSED

    def _parsed(self, op: str, parse: Callable[[], R]) -> R:
        return self._control.parsed(op, parse)

    # --- the ops --------------------------------------------------------------------------------

    def status(self) -> ControlStatus:
        """Round trip (``ping``): the host's pid, added rules in force, pending disagreements."""
        answer = self._request("status", {"op": "ping"})
        return self._parsed("ping", lambda: ControlStatus.from_json(answer))

    def add_rule(self, match: dict[str, object], answer: dict[str, object],
                 times: int | None = None) -> int:
        """Add a response rule after those in force (keys: :mod:`sim.host.rules`); returns its
        id.  A rule the host refuses is a ConfigError naming the key."""
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
        rule_id = self._parsed("add_rule", lambda: _int(reply, "id", "answer"))
        described = ", ".join(f"{k}={v}" for k, v in {**match, **answer}.items())
        log.info("%r: host rule #%d armed: %s%s", self, rule_id, described,
                 f" x{times}" if times else "")
        self.event_sink.publish(Source.ACQUIRER, "rule", "armed",
                                f"host rule #{rule_id}: {described}"
                                + (f" ({times} time(s))" if times else ""),
                                data={"rule": rule_id})
        return rule_id

    def clear_rules(self) -> None:
        """Remove every rule added over the control socket (the rules file's stay)."""
        reply = self._request("clear_rules", {"op": "clear_rules"})
        cleared = self._parsed("clear_rules", lambda: _int_list(reply, "cleared", "answer"))
        for rule_id in cleared:
            self.event_sink.publish(Source.ACQUIRER, "rule", "cleared", f"host rule #{rule_id}",
                                    data={"rule": rule_id})

    def disagree_next(self, terminal_id: str) -> None:
        """The next settlement of *terminal_id* is answered not balanced (2) whatever the
        totals."""
        if not isinstance(terminal_id, str) or len(terminal_id) != 8:
            raise ConfigError(f"{self!r}: disagree_next() takes a terminal id of 8 characters, "
                              f"got {terminal_id!r}")
        reply = self._request("disagree_next", {"op": "disagree_next",
                                                "terminal_id": terminal_id})
        pending = self._parsed("disagree_next", lambda: _int(reply, "pending", "answer"))
        self.event_sink.publish(Source.ACQUIRER, "settlement", "disagree_next",
                                f"terminal {terminal_id}: next settlement answered 2",
                                data={"terminal_id": terminal_id, "pending": pending})

    def totals(self, terminal_id: str, batch_no: str) -> HostTotals:
        """The host's totals of *terminal_id*'s batch *batch_no* (digits; zero-padded to 6)."""
        if not isinstance(terminal_id, str) or len(terminal_id) != 8:
            raise ConfigError(f"{self!r}: totals() takes a terminal id of 8 characters, got "
                              f"{terminal_id!r}")
        text = str(batch_no)
        if isinstance(batch_no, bool) or not text.isdigit() or len(text) > 6:
            raise ConfigError(f"{self!r}: totals() takes a batch number of up to 6 digits, got "
                              f"{batch_no!r}")
        reply = self._request("totals", {"op": "totals", "terminal_id": terminal_id,
                                         "batch_no": text.zfill(6)})
        return self._parsed("totals", lambda: HostTotals.from_json(reply))


__all__ = ["ControlStatus", "HostTotals", "SocketAcquirerControl"]

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

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from protocols.digits import ascii_digits
from protocols.ledger import Totals
from rigs.answers import as_bool, as_int, as_object, as_str, bad, required
from rigs.errors import ConfigError
from rigs.events import Source
from rigs.jsonctl import SocketRuleControl

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


# --- the driver -----------------------------------------------------------------------------------


class SocketAcquirerControl(SocketRuleControl[ControlStatus]):
    """The host simulator's control socket at *path* (see the module doc; the keys of
    :meth:`add_rule` are :mod:`sim.host.rules`'s)."""

    peer = refuser = "the host"
    where = "host control socket"
    started_as = "the host simulator"
    restore_op = "reset"
    not_nominal = "rules or disagreements"
    rule_label = "host rule"
    event_source = Source.ACQUIRER

    def _nominal_status(self, status: ControlStatus) -> bool:
        """No rule added by a step still in force, no pending disagreement."""
        return status.nominal

    def _restored(self, answer: dict[str, Any]) -> None:
        """``reset`` cleared the rules added by steps (published) and every pending
        disagreement (the rules file's rules stay: they are the bench's baseline)."""
        self._published_cleared("reset", answer)

    # --- the ops --------------------------------------------------------------------------------

    def status(self) -> ControlStatus:
        """Round trip (``ping``): the host's pid, added rules in force, pending disagreements."""
        answer = self._request("status", {"op": "ping"})
        return self._parsed("ping", lambda: ControlStatus.from_json(answer))

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
        if isinstance(batch_no, bool) or not ascii_digits(text) or len(text) > 6:
            raise ConfigError(f"{self!r}: totals() takes a batch number of up to 6 digits, got "
                              f"{batch_no!r}")
        reply = self._request("totals", {"op": "totals", "terminal_id": terminal_id,
                                         "batch_no": text.zfill(6)})
        return self._parsed("totals", lambda: HostTotals.from_json(reply))


__all__ = ["ControlStatus", "HostTotals", "SocketAcquirerControl"]

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

import os
import threading
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from types import MappingProxyType
from typing import Any

from protocols import controlserver
from protocols.controlserver import answer_request, masked_refusal
from protocols.errors import SimError
from sim.host.engine import AcquirerEngine
from sim.host.rules import parse_rule
from sim.serving import UnixControlServer, locked_answers

Request = Mapping[str, Any]
ControlOp = Callable[[AcquirerEngine, Request], dict[str, Any]]


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
    """One decoded request in, one answer out (never raises for a bad request; a refusal, a
    rule's ConfigError with its key paths, is answered with any PAN masked)."""
    return answer_request(CONTROL_OPS, engine, request, refusal=masked_refusal)


class ControlSession(controlserver.ControlSession):
    """One client: bytes in (any chunking), answers out, each op under *lock*.  A line that is
    not a JSON object gets an error answer and the session goes on; an over-long line ends it
    (:attr:`broken`)."""

    def __init__(self, engine: AcquirerEngine, lock: threading.Lock,
                 where: str = "host control socket") -> None:
        super().__init__(locked_answers(lock, partial(handle_control, engine)), where)


class ControlServer(UnixControlServer):
    """Serve :data:`CONTROL_OPS` on the unix socket *path* (a stale socket file is replaced),
    each op under *lock* (shared with the TCP server)."""

    def __init__(self, engine: AcquirerEngine, path: str | Path, lock: threading.Lock) -> None:
        self.engine = engine
        self.lock = lock
        super().__init__(path, lambda: ControlSession(engine, lock),
                         thread_name="acquirer-control", label="acquirer host control socket")


__all__ = [
    "CONTROL_OPS",
    "ControlRefused",
    "ControlServer",
    "ControlSession",
    "handle_control",
]

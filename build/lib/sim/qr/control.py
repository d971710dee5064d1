"""The QR platform simulator's control socket (virtual bench): JSON lines over a unix socket.

The rig plays the customer's wallet here, and sets the platform's answers.  One request per
line, ``{"op": ..., "seq": n, ...}``; one answer per request, ``{"ok": true, "seq": n, ...}``,
or ``{"ok": false, "seq": n, "error": "...", "code": CODE}`` (``code``: the platform's refusal,
:class:`protocols.qr.ErrorCode`, when the platform refused a wallet action; absent when the
request itself was wrong; ``order`` when the refusal concerns one).  Ops (:data:`CONTROL_OPS`):

================  =====================================  =========================================
op                request keys                           answer keys
================  =====================================  =========================================
``ping``          —                                      ``pid``, ``added_rules``, ``open_codes``,
                                                         ``user_paying``, ``pending_orders``
``add_rule``      ``rule`` {match, answer, times}        ``id``
                  (sim.qr.rules)
``clear_rules``   —                                      ``cleared`` (ids of the rules added here)
``rules``         —                                      ``rules`` (every rule in force)
``new_code``      ``wallet``, [``buyer_id``,             ``code`` {auth_code, wallet, buyer_id,
                  ``password``, ``balance_minor``]       issued_at, expires_at, password,
                                                         [balance_minor]}
``forget_codes``  —                                      ``forgotten`` (unused codes dropped)
``pay``           ``code_url``, ``wallet``,              ``order``
                  [``buyer_id``, ``password``,
                  ``balance_minor``]
``confirm``       [``order_id`` | ``out_trade_no``]      ``order`` (without a name: the only order
                                                         waiting for a wallet password)
``refuse``        [``order_id`` | ``out_trade_no``]      ``order``
``order``         ``order_id`` | ``out_trade_no``        ``order``
``reset``         —                                      ``cleared``, ``forgotten``
================  =====================================  =========================================

``order`` is :meth:`protocols.qr.QrOrder.to_json`.  Every op runs under the engine's lock (the
one the HTTP server holds while answering), with the server's clock, so a rule added here applies
from the next request on.  Every read is bounded; a client that sends an over-long line is
dropped.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from protocols import controlserver
from protocols.controlserver import answer_request, refusal_answer
from protocols.errors import RigError, SimError
from protocols.qr import MAX_AMOUNT, Wallet
from sim.qr.engine import QrPlatformEngine, Refusal
from sim.qr.rules import parse_rule
from sim.serving import UnixControlServer, locked_answers

Request = Mapping[str, Any]
Clock = Callable[[], float]
ControlOp = Callable[[QrPlatformEngine, Request, float], dict[str, Any]]


class ControlRefused(SimError):
    """A control request that is wrong in itself (answered ``{"ok": false, "error": ...}``)."""


def _opt_text(request: Request, key: str, op: str, *, limit: int = 64) -> str | None:
    value = request.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > limit:
        raise ControlRefused(f"{op}: {key!r} must be a non-empty string of at most {limit} "
                             f"characters, got {value!r}"[:200])
    return value


def _text(request: Request, key: str, op: str, *, limit: int = 256) -> str:
    value = _opt_text(request, key, op, limit=limit)
    if value is None:
        raise ControlRefused(f"{op}: {key!r} is required (a string)")
    return value


def _flag(request: Request, key: str, op: str) -> bool:
    value = request.get(key, False)
    if not isinstance(value, bool):
        raise ControlRefused(f"{op}: {key!r} must be true or false, got {value!r}")
    return value


def _balance(request: Request, op: str) -> int | None:
    value = request.get("balance_minor")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_AMOUNT:
        raise ControlRefused(f"{op}: 'balance_minor' must be an integer 0..{MAX_AMOUNT} "
                             f"(minor units), got {value!r}")
    return value


def _wallet(request: Request, op: str) -> Wallet:
    value = request.get("wallet")
    try:
        return Wallet(str(value))
    except ValueError:
        raise ControlRefused(f"{op}: 'wallet' must be one of {', '.join(w.value for w in Wallet)}"
                             f", got {value!r}") from None


def _ref(request: Request, op: str) -> dict[str, str | None]:
    return {"order_id": _opt_text(request, "order_id", op),
            "out_trade_no": _opt_text(request, "out_trade_no", op, limit=32)}


def _op_ping(engine: QrPlatformEngine, request: Request, now: float) -> dict[str, Any]:
    s = engine.status(now)
    return {"pid": os.getpid(), "added_rules": s.added_rules, "open_codes": s.open_codes,
            "user_paying": s.user_paying, "pending_orders": s.pending_orders}


def _op_add_rule(engine: QrPlatformEngine, request: Request, now: float) -> dict[str, Any]:
    if "rule" not in request:
        raise ControlRefused('add_rule: a request needs "rule": {"match": {...}, "answer": '
                             '{...}, "times": n}')
    return {"id": engine.add_rule(parse_rule(request["rule"], "add_rule: rule"))}


def _op_clear_rules(engine: QrPlatformEngine, request: Request, now: float) -> dict[str, Any]:
    return {"cleared": engine.clear_rules()}


def _op_rules(engine: QrPlatformEngine, request: Request, now: float) -> dict[str, Any]:
    return {"rules": engine.rules.to_json()}


def _op_new_code(engine: QrPlatformEngine, request: Request, now: float) -> dict[str, Any]:
    code = engine.issue_code(_wallet(request, "new_code"), now,
                             buyer_id=_opt_text(request, "buyer_id", "new_code"),
                             password=_flag(request, "password", "new_code"),
                             balance=_balance(request, "new_code"))
    return {"code": code.to_json()}


def _op_forget_codes(engine: QrPlatformEngine, request: Request, now: float) -> dict[str, Any]:
    return {"forgotten": engine.forget_codes()}


def _op_pay(engine: QrPlatformEngine, request: Request, now: float) -> dict[str, Any]:
    order = engine.scan(_text(request, "code_url", "pay"), now,
                        wallet=_wallet(request, "pay"),
                        buyer_id=_opt_text(request, "buyer_id", "pay"),
                        password=_flag(request, "password", "pay"),
                        balance=_balance(request, "pay"))
    return {"order": order.to_json()}


def _op_confirm(engine: QrPlatformEngine, request: Request, now: float) -> dict[str, Any]:
    return {"order": engine.confirm(now, **_ref(request, "confirm")).to_json()}


def _op_refuse(engine: QrPlatformEngine, request: Request, now: float) -> dict[str, Any]:
    return {"order": engine.refuse(now, **_ref(request, "refuse")).to_json()}


def _op_order(engine: QrPlatformEngine, request: Request, now: float) -> dict[str, Any]:
    ref = _ref(request, "order")
    if ref["order_id"] is None and ref["out_trade_no"] is None:
        raise ControlRefused("order: give 'order_id' or 'out_trade_no'")
    return {"order": engine.find(now, **ref).to_json()}


def _op_reset(engine: QrPlatformEngine, request: Request, now: float) -> dict[str, Any]:
    return {"cleared": engine.clear_rules(), "forgotten": engine.forget_codes()}


CONTROL_OPS: Mapping[str, ControlOp] = MappingProxyType({
    "ping": _op_ping,
    "add_rule": _op_add_rule,
    "clear_rules": _op_clear_rules,
    "rules": _op_rules,
    "new_code": _op_new_code,
    "forget_codes": _op_forget_codes,
    "pay": _op_pay,
    "confirm": _op_confirm,
    "refuse": _op_refuse,
    "order": _op_order,
    "reset": _op_reset,
})


def _refusal(exc: BaseException) -> dict[str, Any]:
    if not isinstance(exc, Refusal):  # ControlRefused, a rule's ConfigError (key paths named)
        return refusal_answer(exc)
    answer: dict[str, Any] = {"ok": False, "error": exc.message, "code": exc.code.value}
    if exc.order is not None:  # the platform refused the wallet's action on this order
        answer["order"] = exc.order.view().to_json()
    return answer


def handle_control(engine: QrPlatformEngine, request: object, now: float) -> dict[str, Any]:
    """One decoded request in, one answer out (never raises for a bad request)."""
    return answer_request(CONTROL_OPS, engine, request, now, refused=(Refusal, RigError),
                          refusal=_refusal)


class ControlSession(controlserver.ControlSession):
    """One client: bytes in (any chunking), answers out, each op under *lock* at *clock*'s
    time.  A line that is not a JSON object gets an error answer and the session goes on; an
    over-long line ends it (:attr:`broken`)."""

    def __init__(self, engine: QrPlatformEngine, lock: threading.Lock, clock: Clock,
                 where: str = "QR platform control socket") -> None:
        super().__init__(locked_answers(lock, lambda request: handle_control(engine, request,
                                                                             clock())), where)


class ControlServer(UnixControlServer):
    """Serve :data:`CONTROL_OPS` on the unix socket *path* (a stale socket file is replaced),
    each op under *lock* (shared with the HTTP server) at *clock*'s time."""

    def __init__(self, engine: QrPlatformEngine, path: str | Path, lock: threading.Lock, *,
                 clock: Clock = time.time) -> None:
        self.engine = engine
        self.lock = lock
        self.clock = clock
        super().__init__(path, lambda: ControlSession(engine, lock, clock),
                         thread_name="qr-platform-control", label="QR platform control socket")


__all__ = [
    "CONTROL_OPS",
    "ControlRefused",
    "ControlServer",
    "ControlSession",
    "handle_control",
]

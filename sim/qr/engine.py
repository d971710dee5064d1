"""The QR payment platform as a pure state machine: request in, answer out, time passed in.

Two sides, as on the real platforms:

- **the terminal's** (:meth:`QrPlatformEngine.answer`): a signed JSON request for a path in,
  a signed JSON answer out.  It decodes the body, checks the terminal, its merchant, the
  signature and the nonce, validates the operation's fields, lets a rule
  (:mod:`sim.qr.rules`) refuse the request, delay or drop its answer, then dispatches on the
  operation (:data:`HANDLERS`: create, query, close, cancel, refund, micropay).  Every refusal
  is a :class:`Refusal` raised where it is found and turned into the answer in one place
  (:meth:`QrPlatformEngine._finish`), which also writes the request to the ledger.
- **the customer's wallet** (the rig plays it over the control socket, :mod:`sim.qr.control`):
  :meth:`~QrPlatformEngine.issue_code` (a payment code the customer shows),
  :meth:`~QrPlatformEngine.scan` (the customer scans the terminal's code and pays, or is asked
  for the wallet password), :meth:`~QrPlatformEngine.confirm` (the password typed),
  :meth:`~QrPlatformEngine.refuse` (the customer declines).

Orders move only along :data:`protocols.qr.TRANSITIONS` (a move outside it is a bug:
:class:`~protocols.errors.SimError`).  Time is passed in (POSIX seconds): every call first
expires what is due — an unpaid merchant-presented order closes after *order_ttl_s*, a payment
waiting for the customer's password fails (PAYERROR) after *user_paying_timeout_s*, a payment
code is refused after *code_ttl_s* — and :meth:`~QrPlatformEngine.tick` does only that (the
server calls it twice a second, so the ledger shows an expiry without waiting for a request).

The platform keeps its orders in memory; the ledger (``ledger=``) gets every change.  No
sockets here.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Protocol

from protocols.errors import DecodeError, SimError
from protocols.qr import (
    CODE_URL_PREFIX,
    COMMON_FIELDS,
    CURRENCY,
    ERRORS,
    MAX_AMOUNT,
    MAX_DESCRIPTION,
    NONCE_MEMORY,
    NONCE_RE,
    OPERATIONS,
    PATHS,
    REF_FIELDS,
    SIGN_KEY,
    TRADE_NO_RE,
    TRANSITIONS,
    WALLETS,
    ErrorCode,
    Operation,
    OrderKind,
    OrderStatus,
    QrOrder,
    QrRefund,
    Wallet,
    decode_body,
    encode_body,
    error_body,
    mask_code,
    signed_body,
    verify,
    wallet_of,
)
from protocols.qrledger import RESULT_SUCCESS, PaymentStatus, QrPayment, QrRequestRecord
from sim.qr.config import QrTerminal
from sim.qr.rules import QrRule, RequestFacts, RuleBook
from sim.rules import ActiveRule

logger = logging.getLogger(__name__)

#: Defaults of the platform's clocks (s).
ORDER_TTL_S = 120.0
USER_PAYING_TIMEOUT_S = 60.0
CODE_TTL_S = 60.0
DEFAULT_BUYER = "buyer-0001"


class Refusal(Exception):
    """Raised inside the engine: refuse with *code*; *order* is shown in the answer when the
    refusal concerns one."""

    def __init__(self, code: ErrorCode, message: str, order: Order | None = None) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message
        self.order = order


class QrLedgerSink(Protocol):
    """Where the engine writes every change (sim.qr.ledger)."""

    def save_order(self, order: QrOrder, seq: int) -> None: ...

    def save_payment(self, payment: QrPayment, seq: int) -> None: ...

    def add_refund(self, refund: QrRefund) -> None: ...

    def add_request(self, rec: QrRequestRecord) -> int: ...

    def last_seq(self) -> int: ...


def iso(ts: float) -> str:
    """POSIX seconds → ISO 8601 local time, milliseconds."""
    return dt.datetime.fromtimestamp(ts).isoformat(timespec="milliseconds")


# -- state -------------------------------------------------------------------------------------

@dataclass
class PaymentCode:
    """A payment code a wallet issued (the customer shows it; one use, short-lived)."""

    code: str = field(repr=False)
    wallet: Wallet
    buyer_id: str
    issued_ts: float
    expires_ts: float
    password: bool = False
    balance: int | None = None
    used: bool = False

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"auth_code": self.code, "wallet": self.wallet.value,
                               "buyer_id": self.buyer_id, "issued_at": iso(self.issued_ts),
                               "expires_at": iso(self.expires_ts), "password": self.password}
        if self.balance is not None:
            out["balance_minor"] = self.balance
        return out


@dataclass
class Order:
    """One order and everything that happened to it (the engine's own, mutable)."""

    order_id: str
    terminal_id: str
    merchant_id: str
    out_trade_no: str
    kind: OrderKind
    amount: int
    created_ts: float
    status: OrderStatus = OrderStatus.NOTPAY
    description: str = ""
    token: str | None = None              # the code of a merchant-presented order
    expires_ts: float | None = None       # NOTPAY until then
    paying_deadline: float | None = None  # USERPAYING until then
    wallet: Wallet | None = None
    buyer_id: str | None = None
    auth_code: str | None = field(default=None, repr=False)  # a micropay's, in full
    paid_ts: float | None = None
    paid_amount: int = 0
    refunded_amount: int = 0
    reason: str | None = None
    error: ErrorCode | None = None        # why it is PAYERROR
    payment: QrPayment | None = None
    refunds: list[QrRefund] = field(default_factory=list)

    @property
    def code_url(self) -> str | None:
        return None if self.token is None else CODE_URL_PREFIX + self.token

    def view(self) -> QrOrder:
        return QrOrder(
            order_id=self.order_id, out_trade_no=self.out_trade_no,
            merchant_id=self.merchant_id, terminal_id=self.terminal_id, kind=self.kind,
            amount=self.amount, status=self.status, currency=CURRENCY,
            description=self.description, code_url=self.code_url, wallet=self.wallet,
            buyer_id=self.buyer_id,
            auth_code=None if self.auth_code is None else mask_code(self.auth_code),
            paid_amount=self.paid_amount, refunded_amount=self.refunded_amount,
            created_at=iso(self.created_ts),
            paid_at=None if self.paid_ts is None else iso(self.paid_ts),
            expires_at=None if self.expires_ts is None else iso(self.expires_ts),
            reason=self.reason)


@dataclass
class Request:
    """The fields of one request, validated (what each operation takes: protocols.qr)."""

    op: Operation
    terminal: QrTerminal
    nonce: str
    out_trade_no: str | None = None
    order_id: str | None = None
    amount: int | None = None
    auth_code: str | None = field(default=None, repr=False)
    out_refund_no: str | None = None
    description: str = ""
    reason: str = ""

    @property
    def wallet(self) -> Wallet | None:
        return None if self.auth_code is None else wallet_of(self.auth_code)


@dataclass
class _Context:
    """What one request accumulates for its answer and its ledger row."""

    now: float
    path: str
    op: Operation | None = None
    terminal: QrTerminal | None = None
    raw_ids: tuple[str | None, str | None] = (None, None)  # terminal_id, merchant_id as sent
    request: Request | None = None
    order: Order | None = None
    refund: QrRefund | None = None
    rule: ActiveRule[QrRule] | None = None


@dataclass(frozen=True)
class PlatformAnswer:
    """The engine's decision on one request: HTTP status and body, and what a rule asks of the
    server (answer *delay_s* late, or never: *drop*)."""

    http_status: int
    body: bytes
    delay_s: float = 0.0
    drop: bool = False
    rule_id: int | None = None
    result: str = RESULT_SUCCESS


@dataclass(frozen=True)
class PlatformStatus:
    """Counts for the control socket's ``ping``."""

    added_rules: int
    open_codes: int
    user_paying: int
    pending_orders: int


Handler = Callable[["QrPlatformEngine", "_Context", Request], None]


# -- the engine --------------------------------------------------------------------------------

class QrPlatformEngine:
    """The platform (see the module doc)."""

    def __init__(self, terminals: Mapping[str, QrTerminal], *,
                 ledger: QrLedgerSink | None = None, rules: RuleBook | None = None,
                 order_ttl_s: float = ORDER_TTL_S,
                 user_paying_timeout_s: float = USER_PAYING_TIMEOUT_S,
                 code_ttl_s: float = CODE_TTL_S,
                 random: Callable[[int], bytes] = os.urandom,
                 handlers: Mapping[Operation, Handler] | None = None) -> None:
        for name, value in (("order_ttl_s", order_ttl_s),
                            ("user_paying_timeout_s", user_paying_timeout_s),
                            ("code_ttl_s", code_ttl_s)):
            if not value > 0:
                raise SimError(f"QrPlatformEngine: {name} must be above 0 s, got {value}")
        self.terminals = dict(terminals)
        self.ledger = ledger
        self.rules = rules if rules is not None else RuleBook()
        self.order_ttl_s = order_ttl_s
        self.user_paying_timeout_s = user_paying_timeout_s
        self.code_ttl_s = code_ttl_s
        self.random = random
        self.handlers = HANDLERS if handlers is None else handlers
        missing = [op.value for op in Operation if op not in self.handlers]
        if missing:
            raise SimError(f"QrPlatformEngine: no handler for operation(s) {', '.join(missing)}")
        self.orders: dict[str, Order] = {}
        self._pending: dict[str, Order] = {}  # NOTPAY or USERPAYING: what tick() looks at
        self._by_trade_no: dict[tuple[str, str], Order] = {}
        self._by_token: dict[str, Order] = {}
        self._refunds: dict[tuple[str, str], QrRefund] = {}  # (merchant, out_refund_no)
        self.codes: dict[str, PaymentCode] = {}
        self._nonces: dict[str, tuple[deque[str], set[str]]] = {}
        self._serial = 0
        self.seq = ledger.last_seq() if ledger is not None else 0

    # -- the terminal's side ---------------------------------------------------------------------

    def answer(self, path: str, raw: bytes, now: float) -> PlatformAnswer:
        """One request: *path* and body bytes in, the answer out (never raises a Refusal)."""
        ctx = _Context(now=now, path=path)
        try:
            self.tick(now)
            op = PATHS.get(path)
            if op is None:
                raise Refusal(ErrorCode.NOT_FOUND, f"no operation at {path[:64]!r}; expected one of "
                                                   f"{', '.join(sorted(PATHS))}")
            ctx.op = op
            try:
                body = decode_body(raw, f"{op} request")
            except DecodeError as exc:
                raise Refusal(ErrorCode.BAD_REQUEST, str(exc)) from None
            req = self._authenticate(ctx, body)
            ctx.request = req
            ctx.rule = self.rules.take(RequestFacts(op, req.terminal.terminal_id, req.wallet,
                                                    req.amount))
            if ctx.rule is not None and ctx.rule.rule.answer.error is not None:
                raise Refusal(ctx.rule.rule.answer.error,
                              f"rule #{ctx.rule.id} answers {ctx.rule.rule.answer.error.value}")
            self.handlers[op](self, ctx, req)
        except Refusal as ref:
            return self._finish(ctx, ref)
        return self._finish(ctx, None)

    def refuse_request(self, path: str, code: ErrorCode, message: str, now: float
                       ) -> PlatformAnswer:
        """An answer the server gives before the engine can read the request (wrong method,
        body too large or unreadable), written and recorded like every other."""
        ctx = _Context(now=now, path=path, op=PATHS.get(path))
        return self._finish(ctx, Refusal(code, message))

    def _finish(self, ctx: _Context, ref: Refusal | None) -> PlatformAnswer:
        """The one place a request becomes its answer and its ledger row."""
        order = ref.order if ref is not None and ref.order is not None else ctx.order
        if ref is None:
            body: dict[str, Any] = {"ok": True}
            if order is not None:
                body["order"] = order.view().to_json()
            if ctx.refund is not None:
                body["refund"] = ctx.refund.to_json()
            status, result, message = 200, RESULT_SUCCESS, None
        else:
            body = error_body(ref.code, ref.message,
                              order=None if order is None else order.view())
            status, result, message = ERRORS[ref.code].http_status, ref.code.value, ref.message
            logger.info("%s from %s: %s", ctx.op or ctx.path, ctx.raw_ids[0] or "?", ref)
        if ctx.request is not None:  # authenticated: the answer is bound to the request, signed
            body["nonce"] = ctx.request.nonce
            body = signed_body(body, ctx.request.terminal.sign_key)
        rule = ctx.rule
        self._record(ctx, order, result, status, message)
        answer = rule.rule.answer if rule is not None else None
        return PlatformAnswer(
            status, encode_body(body),
            delay_s=(answer.delay_s or 0.0) if answer is not None else 0.0,
            drop=answer.drop if answer is not None else False,
            rule_id=rule.id if rule is not None else None, result=result)

    def _record(self, ctx: _Context, order: Order | None, result: str, status: int,
                message: str | None) -> None:
        if self.ledger is None:
            return
        req = ctx.request
        tid, mid = ctx.raw_ids
        self.ledger.add_request(QrRequestRecord(
            received_at=iso(ctx.now), received_ts=ctx.now,
            operation=ctx.op.value if ctx.op is not None else ctx.path[:64],
            result=result, http_status=status, terminal_id=tid, merchant_id=mid,
            out_trade_no=(order.out_trade_no if order is not None
                          else req.out_trade_no if req is not None else None),
            order_id=order.order_id if order is not None else None,
            amount=req.amount if req is not None else None,
            order_status=order.status.value if order is not None else None,
            message=message,
            rule_id=ctx.rule.id if ctx.rule is not None else None,
            rule_action=ctx.rule.rule.answer.describe() if ctx.rule is not None else None))

    # -- authentication and fields -------------------------------------------------------------

    def _authenticate(self, ctx: _Context, body: Mapping[str, Any]) -> Request:
        """Terminal known, merchant its own, signature right, nonce fresh; then the fields."""
        tid, mid = body.get("terminal_id"), body.get("merchant_id")
        ctx.raw_ids = (tid[:32] if isinstance(tid, str) else None,
                       mid[:32] if isinstance(mid, str) else None)
        if not isinstance(tid, str) or not isinstance(mid, str):
            raise Refusal(ErrorCode.PARAM_ERROR, "terminal_id and merchant_id must be strings")
        term = self.terminals.get(tid)
        if term is None:
            raise Refusal(ErrorCode.UNKNOWN_TERMINAL, f"terminal {tid[:32]!r} is not registered")
        if term.merchant_id != mid:
            raise Refusal(ErrorCode.MERCHANT_MISMATCH,
                          f"terminal {tid} belongs to merchant {term.merchant_id}, the request "
                          f"says {mid[:32]}")
        if SIGN_KEY not in body:
            raise Refusal(ErrorCode.SIGN_ERROR, "no 'sign' in the request")
        if not verify(body, term.sign_key):
            raise Refusal(ErrorCode.SIGN_ERROR, f"the signature does not verify under terminal "
                                                f"{tid}'s key")
        nonce = body.get("nonce")
        if not isinstance(nonce, str) or not NONCE_RE.match(nonce):
            raise Refusal(ErrorCode.PARAM_ERROR, f"nonce must be 8-32 letters or digits, got "
                                                 f"{nonce!r}"[:120])
        stamp = body.get("timestamp")
        if isinstance(stamp, bool) or not isinstance(stamp, int) or stamp < 0:
            raise Refusal(ErrorCode.PARAM_ERROR, f"timestamp must be POSIX seconds (an integer),"
                                                 f" got {stamp!r}"[:120])
        assert ctx.op is not None
        req = self._fields(ctx.op, term, nonce, body)
        self._remember_nonce(tid, nonce)
        return req

    def _remember_nonce(self, terminal_id: str, nonce: str) -> None:
        order, seen = self._nonces.setdefault(terminal_id, (deque(), set()))
        if nonce in seen:
            raise Refusal(ErrorCode.NONCE_REUSED, f"terminal {terminal_id} used nonce {nonce} "
                                                  f"before; sign every request with a new one")
        order.append(nonce)
        seen.add(nonce)
        while len(order) > NONCE_MEMORY:
            seen.discard(order.popleft())

    @staticmethod
    def _fields(op: Operation, term: QrTerminal, nonce: str, body: Mapping[str, Any]
                ) -> Request:
        spec = OPERATIONS[op]
        allowed = (spec.required | spec.optional | COMMON_FIELDS | {SIGN_KEY}
                   | (REF_FIELDS if spec.order_ref else frozenset()))
        unknown = sorted(set(body) - allowed)
        if unknown:
            raise Refusal(ErrorCode.PARAM_ERROR, f"{op}: unknown field(s) {', '.join(unknown)}")
        missing = sorted(spec.required - set(body))
        if spec.order_ref and not REF_FIELDS & set(body):
            missing.append("out_trade_no or order_id")
        if missing:
            raise Refusal(ErrorCode.PARAM_ERROR, f"{op}: missing {', '.join(missing)}")
        req = Request(op, term, nonce)
        for key in ("out_trade_no", "out_refund_no"):
            if key in body:
                value = body[key]
                if not isinstance(value, str) or not TRADE_NO_RE.match(value):
                    raise Refusal(ErrorCode.PARAM_ERROR, f"{op}: {key} must be 1-32 of letters, "
                                                         f"digits, _-|*; got {value!r}"[:160])
                setattr(req, key, value)
        if "order_id" in body:
            value = body["order_id"]
            if not isinstance(value, str) or not value or len(value) > 64:
                raise Refusal(ErrorCode.PARAM_ERROR, f"{op}: order_id must be a non-empty "
                                                     f"string, got {value!r}"[:160])
            req.order_id = value
        if "amount" in body:
            value = body["amount"]
            if isinstance(value, bool) or not isinstance(value, int) or not (
                    0 < value <= MAX_AMOUNT):
                raise Refusal(ErrorCode.PARAM_ERROR, f"{op}: amount must be an integer of minor "
                                                     f"units, 1..{MAX_AMOUNT}; got {value!r}")
            req.amount = value
        if "currency" in body and body["currency"] != CURRENCY:
            raise Refusal(ErrorCode.PARAM_ERROR, f"{op}: currency must be {CURRENCY}, got "
                                                 f"{body['currency']!r}"[:120])
        for key in ("description", "reason"):
            if key in body:
                value = body[key]
                if not isinstance(value, str) or len(value) > MAX_DESCRIPTION:
                    raise Refusal(ErrorCode.PARAM_ERROR, f"{op}: {key} must be text of at most "
                                                         f"{MAX_DESCRIPTION} characters")
                setattr(req, key, value)
        if "auth_code" in body:
            value = body["auth_code"]
            if not isinstance(value, str):
                raise Refusal(ErrorCode.PARAM_ERROR, f"{op}: auth_code must be a string of "
                                                     f"digits")
            req.auth_code = value
        return req

    # -- orders ------------------------------------------------------------------------------------

    def _new_id(self, now: float) -> str:
        self._serial += 1
        return f"{dt.datetime.fromtimestamp(now):%Y%m%d}{self._serial:06d}{self.random(3).hex()}"

    def _new_token(self) -> str:
        while True:
            token = self.random(12).hex()
            if token not in self._by_token:
                return token

    def _add(self, order: Order) -> Order:
        self.orders[order.order_id] = order
        if order.status.pending:
            self._pending[order.order_id] = order
        self._by_trade_no[(order.merchant_id, order.out_trade_no)] = order
        if order.token is not None:
            self._by_token[order.token] = order
        self._save(order)
        return order

    def _save(self, order: Order) -> None:
        self.seq += 1
        if self.ledger is not None:
            self.ledger.save_order(order.view(), self.seq)

    def _save_payment(self, payment: QrPayment) -> None:
        self.seq += 1
        if self.ledger is not None:
            self.ledger.save_payment(payment, self.seq)

    def _move(self, order: Order, status: OrderStatus, now: float, reason: str | None = None
              ) -> None:
        """Every status change goes through here: along TRANSITIONS, or it is a bug."""
        if status not in TRANSITIONS[order.status]:
            raise SimError(f"QrPlatformEngine: order {order.order_id} cannot go from "
                           f"{order.status} to {status} (protocols.qr.TRANSITIONS)")
        logger.info("order %s (%s %s, %d): %s → %s%s", order.order_id, order.kind,
                    order.out_trade_no, order.amount, order.status, status,
                    f" ({reason})" if reason else "")
        order.status = status
        if reason is not None:
            order.reason = reason
        if status is not OrderStatus.USERPAYING:
            order.paying_deadline = None
        if status.pending:
            self._pending[order.order_id] = order
        else:
            self._pending.pop(order.order_id, None)
        self._save(order)

    def _pay(self, order: Order, wallet: Wallet, buyer_id: str, now: float) -> None:
        order.wallet, order.buyer_id = wallet, buyer_id
        order.paid_ts = now
        order.paid_amount = order.amount
        order.payment = QrPayment(payment_id=f"P{order.order_id}", order_id=order.order_id,
                                  wallet=wallet, buyer_id=buyer_id, amount=order.amount,
                                  status=PaymentStatus.PAID, paid_at=iso(now))
        self._save_payment(order.payment)
        self._move(order, OrderStatus.SUCCESS, now, f"paid by {wallet} {buyer_id}")

    def _await_password(self, order: Order, wallet: Wallet, buyer_id: str, now: float,
                        why: str) -> None:
        order.wallet, order.buyer_id = wallet, buyer_id
        order.paying_deadline = now + self.user_paying_timeout_s
        self._move(order, OrderStatus.USERPAYING, now, why)

    def tick(self, now: float) -> list[str]:
        """Expire what is due at *now*; returns the order ids that changed."""
        changed = []
        for order in list(self._pending.values()):
            if (order.status is OrderStatus.NOTPAY and order.expires_ts is not None
                    and now >= order.expires_ts):
                self._move(order, OrderStatus.CLOSED, now,
                           f"not paid within {self.order_ttl_s:g} s")
                changed.append(order.order_id)
            elif (order.status is OrderStatus.USERPAYING and order.paying_deadline is not None
                  and now >= order.paying_deadline):
                order.error = ErrorCode.BUYER_REFUSED
                self._move(order, OrderStatus.PAYERROR, now,
                           f"the customer did not confirm within "
                           f"{self.user_paying_timeout_s:g} s")
                changed.append(order.order_id)
        return changed

    def _find(self, merchant_id: str | None, *, order_id: str | None = None,
              out_trade_no: str | None = None) -> Order:
        """The order named by *order_id* and/or *out_trade_no* (of *merchant_id* when given)."""
        by_id = self.orders.get(order_id) if order_id is not None else None
        if order_id is not None and (by_id is None or (merchant_id is not None
                                                       and by_id.merchant_id != merchant_id)):
            raise Refusal(ErrorCode.ORDER_NOT_EXIST, f"no order {order_id}"
                          + (f" of merchant {merchant_id}" if merchant_id else ""))
        if out_trade_no is None:
            if by_id is None:
                raise Refusal(ErrorCode.PARAM_ERROR, "name the order by out_trade_no or order_id")
            return by_id
        if merchant_id is None:
            found = [o for o in self.orders.values() if o.out_trade_no == out_trade_no]
            if len(found) > 1 and by_id is None:
                raise Refusal(ErrorCode.PARAM_ERROR, f"out_trade_no {out_trade_no} is used by "
                                                     f"{len(found)} merchants; give order_id")
            by_no = found[0] if len(found) == 1 else by_id
        else:
            by_no = self._by_trade_no.get((merchant_id, out_trade_no))
        if by_no is None:
            raise Refusal(ErrorCode.ORDER_NOT_EXIST, f"no order with out_trade_no "
                                                     f"{out_trade_no}")
        if by_id is not None and by_id is not by_no:
            raise Refusal(ErrorCode.PARAM_ERROR, f"order_id {order_id} and out_trade_no "
                                                 f"{out_trade_no} name different orders")
        return by_no

    def _order_of(self, ctx: _Context, req: Request) -> Order:
        order = self._find(req.terminal.merchant_id, order_id=req.order_id,
                           out_trade_no=req.out_trade_no)
        ctx.order = order
        return order

    @staticmethod
    def _state_refusal(order: Order, doing: str) -> Refusal:
        """The refusal for *doing* something an order's status does not allow."""
        code = {OrderStatus.NOTPAY: ErrorCode.ORDER_NOT_PAID,
                OrderStatus.USERPAYING: ErrorCode.ORDER_PAYING,
                OrderStatus.SUCCESS: ErrorCode.ORDER_PAID,
                OrderStatus.REFUND: ErrorCode.ORDER_PAID,
                OrderStatus.PAYERROR: ErrorCode.ORDER_CLOSED,
                OrderStatus.CLOSED: ErrorCode.ORDER_CLOSED,
                OrderStatus.REVOKED: ErrorCode.ORDER_REVOKED}[order.status]
        return Refusal(code, f"cannot {doing} order {order.order_id} ({order.out_trade_no}): it "
                             f"is {order.status}", order)

    # -- handlers (HANDLERS) --------------------------------------------------------------------

    def _create(self, ctx: _Context, req: Request) -> None:
        assert req.out_trade_no is not None and req.amount is not None
        term = req.terminal
        existing = self._by_trade_no.get((term.merchant_id, req.out_trade_no))
        if existing is not None:
            if existing.kind is OrderKind.NATIVE and existing.amount == req.amount:
                ctx.order = existing  # the terminal retried: the same order again
                return
            raise Refusal(ErrorCode.OUT_TRADE_NO_USED, f"out_trade_no {req.out_trade_no} is "
                                                       f"order {existing.order_id} "
                                                       f"({existing.kind}, {existing.amount})")
        ctx.order = self._add(Order(
            order_id=self._new_id(ctx.now), terminal_id=term.terminal_id,
            merchant_id=term.merchant_id, out_trade_no=req.out_trade_no,
            kind=OrderKind.NATIVE, amount=req.amount, created_ts=ctx.now,
            description=req.description, token=self._new_token(),
            expires_ts=ctx.now + self.order_ttl_s))

    def _query(self, ctx: _Context, req: Request) -> None:
        self._order_of(ctx, req)

    def _close(self, ctx: _Context, req: Request) -> None:
        order = self._order_of(ctx, req)
        if order.status is OrderStatus.CLOSED:
            return
        if order.status not in (OrderStatus.NOTPAY, OrderStatus.USERPAYING,
                                OrderStatus.PAYERROR):
            raise self._state_refusal(order, "close")
        self._move(order, OrderStatus.CLOSED, ctx.now,
                   f"closed by terminal {req.terminal.terminal_id}")

    def _cancel(self, ctx: _Context, req: Request) -> None:
        order = self._order_of(ctx, req)
        if order.status is OrderStatus.REVOKED:
            return
        if order.status is OrderStatus.REFUND:
            raise Refusal(ErrorCode.ORDER_REFUNDED, f"order {order.order_id} was refunded "
                                                    f"({order.refunded_amount} of "
                                                    f"{order.paid_amount}); refund the rest "
                                                    f"instead", order)
        why = f"revoked by terminal {req.terminal.terminal_id}"
        if order.status is OrderStatus.SUCCESS and order.payment is not None:
            order.payment = replace(order.payment, status=PaymentStatus.REVOKED,
                                    revoked_at=iso(ctx.now))
            self._save_payment(order.payment)
            why += f"; {order.paid_amount} given back to {order.wallet} {order.buyer_id}"
        self._move(order, OrderStatus.REVOKED, ctx.now, why)

    def _refund(self, ctx: _Context, req: Request) -> None:
        assert req.out_refund_no is not None and req.amount is not None
        order = self._order_of(ctx, req)
        key = (req.terminal.merchant_id, req.out_refund_no)
        done = self._refunds.get(key)
        if done is not None:
            if done.order_id == order.order_id and done.amount == req.amount:
                ctx.refund = done  # the terminal retried: the same refund again
                return
            raise Refusal(ErrorCode.OUT_REFUND_NO_USED, f"out_refund_no {req.out_refund_no} is "
                                                        f"refund {done.refund_id} of "
                                                        f"{done.amount} on order "
                                                        f"{done.order_id}", order)
        if not order.status.paid:
            if order.status is OrderStatus.REVOKED:
                raise self._state_refusal(order, "refund")
            raise Refusal(ErrorCode.ORDER_NOT_PAID, f"order {order.order_id} is "
                                                    f"{order.status}: nothing was paid", order)
        left = order.paid_amount - order.refunded_amount
        if req.amount > left:
            raise Refusal(ErrorCode.REFUND_EXCEEDED, f"refund of {req.amount}: {left} left of "
                                                     f"order {order.order_id} "
                                                     f"({order.paid_amount} paid, "
                                                     f"{order.refunded_amount} refunded)", order)
        refund = QrRefund(refund_id=f"R{order.order_id}{len(order.refunds) + 1:02d}",
                          out_refund_no=req.out_refund_no, order_id=order.order_id,
                          out_trade_no=order.out_trade_no, amount=req.amount,
                          created_at=iso(ctx.now), reason=req.reason)
        self._refunds[key] = refund
        order.refunds.append(refund)
        order.refunded_amount += req.amount
        if self.ledger is not None:
            self.ledger.add_refund(refund)
        ctx.refund = refund
        self._move(order, OrderStatus.REFUND, ctx.now,
                   f"refunded {order.refunded_amount} of {order.paid_amount}")

    def _micropay(self, ctx: _Context, req: Request) -> None:
        assert req.out_trade_no is not None and req.amount is not None
        code_text = req.auth_code or ""
        term = req.terminal
        existing = self._by_trade_no.get((term.merchant_id, req.out_trade_no))
        if existing is not None:
            if (existing.kind is OrderKind.MICROPAY and existing.amount == req.amount
                    and existing.auth_code == code_text):
                ctx.order = existing  # the terminal retried: tell it where the order is
                if existing.status is OrderStatus.PAYERROR:
                    raise Refusal(existing.error or ErrorCode.TRADE_ERROR,
                                  existing.reason or "the payment failed", existing)
                return
            raise Refusal(ErrorCode.OUT_TRADE_NO_USED, f"out_trade_no {req.out_trade_no} is "
                                                       f"order {existing.order_id} "
                                                       f"({existing.kind}, {existing.amount})")
        wallet = req.wallet
        if wallet is None:
            shapes = "; ".join(f"{w}: {s.length} digits starting "
                               f"{min(s.prefixes)}-{max(s.prefixes)}" for w, s in WALLETS.items())
            raise Refusal(ErrorCode.AUTH_CODE_INVALID, f"{mask_code(code_text)!r} is not a "
                                                       f"payment code ({shapes})")
        code = self.codes.get(code_text)
        if code is None:
            raise Refusal(ErrorCode.AUTH_CODE_INVALID, f"{mask_code(code_text)} is not a payment "
                                                       f"code {wallet} issued")
        if code.used:
            raise Refusal(ErrorCode.AUTH_CODE_INVALID, f"{mask_code(code_text)} was used "
                                                       f"already")
        if ctx.now >= code.expires_ts:
            raise Refusal(ErrorCode.AUTH_CODE_EXPIRED, f"{mask_code(code_text)} expired at "
                                                       f"{iso(code.expires_ts)} "
                                                       f"({self.code_ttl_s:g} s)")
        code.used = True
        order = Order(
            order_id=self._new_id(ctx.now), terminal_id=term.terminal_id,
            merchant_id=term.merchant_id, out_trade_no=req.out_trade_no,
            kind=OrderKind.MICROPAY, amount=req.amount, created_ts=ctx.now,
            description=req.description, wallet=wallet, buyer_id=code.buyer_id,
            auth_code=code_text)
        if code.balance is not None and req.amount > code.balance:
            order.status, order.error = OrderStatus.PAYERROR, ErrorCode.NOT_ENOUGH
            order.reason = f"{wallet} {code.buyer_id}: balance {code.balance} < {req.amount}"
            ctx.order = self._add(order)
            logger.info("order %s (micropay %s, %d): %s", order.order_id, order.out_trade_no,
                        order.amount, order.reason)
            raise Refusal(ErrorCode.NOT_ENOUGH, f"the customer's balance is short of "
                                                f"{req.amount}", order)
        ctx.order = self._add(order)
        forced = ctx.rule is not None and ctx.rule.rule.answer.user_paying
        if code.password or forced:
            why = (f"rule #{ctx.rule.id}: " if forced and ctx.rule is not None else "") + \
                "waiting for the customer's wallet password"
            self._await_password(order, wallet, code.buyer_id, ctx.now, why)
            return
        self._pay(order, wallet, code.buyer_id, ctx.now)

    # -- the customer's wallet (control socket) --------------------------------------------------

    def issue_code(self, wallet: Wallet, now: float, *, buyer_id: str | None = None,
                   password: bool = False, balance: int | None = None) -> PaymentCode:
        """A new payment code of *wallet* (the customer opens the pay screen); *password*: a
        charge waits for the wallet password; *balance*: what the customer can pay (None:
        no limit)."""
        self.tick(now)
        shape = WALLETS[wallet]
        prefixes = sorted(shape.prefixes)
        while True:
            rnd = self.random(16)
            prefix = prefixes[rnd[0] % len(prefixes)]
            digits = "".join(str(b % 10) for b in rnd[1:])
            while len(prefix + digits) < shape.length:
                digits += "".join(str(b % 10) for b in self.random(8))
            code = (prefix + digits)[:shape.length]
            if code not in self.codes:
                break
        issued = PaymentCode(code, wallet, buyer_id or DEFAULT_BUYER, now,
                             now + self.code_ttl_s, password=password, balance=balance)
        self.codes[code] = issued
        logger.info("%s issued payment code %s to %s (password %s, balance %s)", wallet,
                    mask_code(code), issued.buyer_id, password, balance)
        return issued

    def forget_codes(self) -> int:
        """Forget every payment code not used yet; returns how many."""
        unused = [c for c, pc in self.codes.items() if not pc.used]
        for code in unused:
            del self.codes[code]
        return len(unused)

    def open_codes(self, now: float) -> int:
        return sum(1 for pc in self.codes.values() if not pc.used and now < pc.expires_ts)

    def scan(self, code_url: str, now: float, *, wallet: Wallet, buyer_id: str | None = None,
             password: bool = False, balance: int | None = None) -> QrOrder:
        """The customer scans the terminal's code with *wallet* and pays (or, with *password*,
        is asked for the wallet password: the order waits in USERPAYING)."""
        self.tick(now)
        token = code_url.removeprefix(CODE_URL_PREFIX) if code_url.startswith(
            CODE_URL_PREFIX) else None
        order = self._by_token.get(token) if token else None
        if order is None:
            raise Refusal(ErrorCode.ORDER_NOT_EXIST, f"{code_url[:80]!r} is not the code of an "
                                                     f"order of this platform")
        if order.status is not OrderStatus.NOTPAY:
            raise self._state_refusal(order, "pay")
        buyer = buyer_id or DEFAULT_BUYER
        if balance is not None and order.amount > balance:
            raise Refusal(ErrorCode.NOT_ENOUGH, f"{wallet} {buyer}: balance {balance} < "
                                                f"{order.amount}", order)
        if password:
            self._await_password(order, wallet, buyer, now, "the customer scanned the code; "
                                                            "waiting for the wallet password")
        else:
            self._pay(order, wallet, buyer, now)
        return order.view()

    def _waiting(self, order_id: str | None, out_trade_no: str | None) -> Order:
        if order_id is None and out_trade_no is None:
            waiting = [o for o in self._pending.values() if o.status is OrderStatus.USERPAYING]
            if len(waiting) != 1:
                ids = ", ".join(o.order_id for o in waiting) or "none"
                raise Refusal(ErrorCode.PARAM_ERROR, f"{len(waiting)} orders wait for a wallet "
                                                     f"password ({ids}); name one")
            return waiting[0]
        return self._find(None, order_id=order_id, out_trade_no=out_trade_no)

    def confirm(self, now: float, *, order_id: str | None = None,
                out_trade_no: str | None = None) -> QrOrder:
        """The customer types the wallet password: the order waiting for it is paid (without a
        name: the only order waiting)."""
        self.tick(now)
        order = self._waiting(order_id, out_trade_no)
        if order.status is not OrderStatus.USERPAYING:
            raise self._state_refusal(order, "confirm")
        assert order.wallet is not None and order.buyer_id is not None
        self._pay(order, order.wallet, order.buyer_id, now)
        return order.view()

    def refuse(self, now: float, *, order_id: str | None = None,
               out_trade_no: str | None = None) -> QrOrder:
        """The customer declines the payment waiting for the password: PAYERROR."""
        self.tick(now)
        order = self._waiting(order_id, out_trade_no)
        if order.status is not OrderStatus.USERPAYING:
            raise self._state_refusal(order, "refuse")
        order.error = ErrorCode.BUYER_REFUSED
        self._move(order, OrderStatus.PAYERROR, now, "declined by the customer")
        return order.view()

    def find(self, now: float, *, order_id: str | None = None,
             out_trade_no: str | None = None) -> QrOrder:
        """An order as it stands (the rig's look, unsigned)."""
        self.tick(now)
        return self._find(None, order_id=order_id, out_trade_no=out_trade_no).view()

    # -- control ----------------------------------------------------------------------------------

    def add_rule(self, rule: QrRule) -> int:
        rule_id = self.rules.add(rule)
        logger.info("rule #%d added: %s", rule_id, rule.answer.describe())
        return rule_id

    def clear_rules(self) -> list[int]:
        return self.rules.clear_added()

    def status(self, now: float) -> PlatformStatus:
        self.tick(now)
        return PlatformStatus(
            added_rules=self.rules.added_in_force(), open_codes=self.open_codes(now),
            user_paying=sum(1 for o in self._pending.values()
                            if o.status is OrderStatus.USERPAYING),
            pending_orders=len(self._pending))


#: The terminal's operations → handler (a new operation is a row of protocols.qr.OPERATIONS
#: and a handler here).
HANDLERS: Mapping[Operation, Handler] = MappingProxyType({
    Operation.CREATE: QrPlatformEngine._create,
    Operation.QUERY: QrPlatformEngine._query,
    Operation.CLOSE: QrPlatformEngine._close,
    Operation.CANCEL: QrPlatformEngine._cancel,
    Operation.REFUND: QrPlatformEngine._refund,
    Operation.MICROPAY: QrPlatformEngine._micropay,
})

__all__ = [
    "CODE_TTL_S",
    "HANDLERS",
    "ORDER_TTL_S",
    "Order",
    "PaymentCode",
    "PlatformAnswer",
    "PlatformStatus",
    "QrLedgerSink",
    "QrPlatformEngine",
    "Refusal",
    "USER_PAYING_TIMEOUT_S",
    "iso",
]

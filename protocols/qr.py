"""The QR payment platform's protocol: HTTP/1.1 + JSON, signed with HMAC-SHA256 per terminal.

The contract between the terminal (its platform client, :mod:`protocols.qrclient`), the
simulated platform (:mod:`sim.qr`) and the rig (:mod:`rigs.qr`); docs/qr-platform.md is its
prose.  Everything here is data or a pure function:

- the vocabulary: :class:`Operation` (one row of :data:`OPERATIONS` each: HTTP path, the fields
  it takes), :class:`OrderStatus` (with the transitions of :data:`TRANSITIONS`),
  :class:`OrderKind`, :class:`ErrorCode` (with the HTTP status of each, :data:`ERRORS`),
  :class:`Wallet` (with the shape of its payment codes, :data:`WALLETS`);
- signing: :func:`canonical` (the bytes the signature covers), :func:`sign`,
  :func:`verify`, :func:`signed_body`;
- the records that cross the wire and the control socket: :class:`QrOrder`, :class:`QrRefund`,
  parsed once with errors naming the field (:class:`~protocols.errors.DecodeError`);
- requests and answers: :func:`build_request` (the terminal's side),
  :func:`parse_answer` (the terminal's side: status + body → :class:`Answer`),
  :func:`error_body` (the platform's one way of writing a refusal).

Amounts are integers in minor units (fen); a signed body holds no floating-point number (its
canonical form would depend on the language that wrote it).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from protocols.digits import ascii_digits
from protocols.errors import DecodeError, ProtocolError
from protocols.masking import mask_pan

#: TCP port of the platform on the virtual bench (on the acquirer's namespace address).
DEFAULT_PORT = 8600
#: Longest request body the platform reads (bytes); a longer one is refused (413).
MAX_BODY = 16 * 1024
#: The body's content type, both ways.
CONTENT_TYPE = "application/json; charset=utf-8"
#: Version prefix of every path.
API_PREFIX = "/v1"
#: Currency of every order (ISO 4217); the platform knows no other.
CURRENCY = "CNY"
SIGN_KEY = "sign"
#: A nonce: 8 to 32 letters or digits, never used twice by one terminal (the platform keeps the
#: last :data:`NONCE_MEMORY` of each terminal).
NONCE_RE = re.compile(r"^[A-Za-z0-9]{8,32}$")
NONCE_MEMORY = 4096
#: The merchant's order number / refund number: 1 to 32 of letters, digits, ``_ - | *``.
TRADE_NO_RE = re.compile(r"^[A-Za-z0-9_\-|*]{1,32}$")
#: The longest order description.
MAX_DESCRIPTION = 128
#: Largest amount of one order (minor units): 1,000,000.00.
MAX_AMOUNT = 100_000_000
#: Scheme of the code strings of merchant-presented orders (never a URL anyone fetches).
CODE_URL_PREFIX = "qrsim://pay/"


# -- vocabulary --------------------------------------------------------------------------------

class Operation(enum.StrEnum):
    """What a terminal asks the platform (one HTTP path each, :data:`OPERATIONS`)."""

    CREATE = "create"        # merchant-presented: make an order, get its code
    QUERY = "query"          # an order's status
    CLOSE = "close"          # close an unpaid order
    CANCEL = "cancel"        # revoke an order, paid or not (the terminal gives up)
    REFUND = "refund"        # give back part or all of a paid order
    MICROPAY = "micropay"    # customer-presented: charge the customer's payment code


class OrderKind(enum.StrEnum):
    NATIVE = "native"        # merchant-presented: the customer scans the terminal's code
    MICROPAY = "micropay"    # customer-presented: the terminal scans the customer's code


class OrderStatus(enum.StrEnum):
    """An order's status (names as the Chinese platforms spell them)."""

    NOTPAY = "NOTPAY"            # created, not paid yet
    USERPAYING = "USERPAYING"    # the customer must confirm (wallet password); poll
    SUCCESS = "SUCCESS"          # paid
    CLOSED = "CLOSED"            # closed unpaid (by the terminal, or expired)
    REVOKED = "REVOKED"          # cancelled by the terminal (a paid one is given back)
    REFUND = "REFUND"            # paid, then refunded in part or in full
    PAYERROR = "PAYERROR"        # the payment failed (refused by the customer, no password)

    @property
    def pending(self) -> bool:
        """Still waiting for the customer: a terminal keeps polling."""
        return self in (OrderStatus.NOTPAY, OrderStatus.USERPAYING)

    @property
    def paid(self) -> bool:
        """Money moved from the customer (and not given back by a revocation)."""
        return self in (OrderStatus.SUCCESS, OrderStatus.REFUND)


#: Every status change the platform makes (docs/qr-platform.md has the table with causes).
TRANSITIONS: Mapping[OrderStatus, frozenset[OrderStatus]] = MappingProxyType({
    OrderStatus.NOTPAY: frozenset({OrderStatus.USERPAYING, OrderStatus.SUCCESS,
                                   OrderStatus.CLOSED, OrderStatus.REVOKED}),
    OrderStatus.USERPAYING: frozenset({OrderStatus.SUCCESS, OrderStatus.PAYERROR,
                                       OrderStatus.CLOSED, OrderStatus.REVOKED}),
    OrderStatus.SUCCESS: frozenset({OrderStatus.REFUND, OrderStatus.REVOKED}),
    OrderStatus.REFUND: frozenset({OrderStatus.REFUND}),
    OrderStatus.PAYERROR: frozenset({OrderStatus.CLOSED, OrderStatus.REVOKED}),
    OrderStatus.CLOSED: frozenset({OrderStatus.REVOKED}),
    OrderStatus.REVOKED: frozenset(),
})


class ErrorCode(enum.StrEnum):
    """Why the platform refused a request (``{"ok": false, "error": CODE, "message": …}``)."""

    # the request itself
    BAD_REQUEST = "BAD_REQUEST"              # not JSON, not an object, bad framing
    PARAM_ERROR = "PARAM_ERROR"              # a field missing or malformed (named)
    BODY_TOO_LARGE = "BODY_TOO_LARGE"
    NOT_FOUND = "NOT_FOUND"                  # no such path
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    # who asks
    UNKNOWN_TERMINAL = "UNKNOWN_TERMINAL"
    MERCHANT_MISMATCH = "MERCHANT_MISMATCH"
    SIGN_ERROR = "SIGN_ERROR"
    NONCE_REUSED = "NONCE_REUSED"
    # the business
    OUT_TRADE_NO_USED = "OUT_TRADE_NO_USED"  # that order number is taken (other amount/kind)
    ORDER_NOT_EXIST = "ORDER_NOT_EXIST"
    ORDER_PAID = "ORDER_PAID"
    ORDER_CLOSED = "ORDER_CLOSED"
    ORDER_REVOKED = "ORDER_REVOKED"
    ORDER_PAYING = "ORDER_PAYING"            # the customer is confirming it already
    ORDER_NOT_PAID = "ORDER_NOT_PAID"        # a refund of an order that was never paid
    ORDER_REFUNDED = "ORDER_REFUNDED"        # a refunded order cannot be revoked
    REFUND_EXCEEDED = "REFUND_EXCEEDED"      # above what is left of the paid amount
    OUT_REFUND_NO_USED = "OUT_REFUND_NO_USED"
    AUTH_CODE_INVALID = "AUTH_CODE_INVALID"  # malformed, unknown or already used
    AUTH_CODE_EXPIRED = "AUTH_CODE_EXPIRED"
    NOT_ENOUGH = "NOT_ENOUGH"                # the customer's balance is short
    BUYER_REFUSED = "BUYER_REFUSED"          # the customer (or the wallet) declined
    TRADE_ERROR = "TRADE_ERROR"              # the platform's risk control declined
    SYSTEM_ERROR = "SYSTEM_ERROR"            # the platform failed; the outcome is unknown


@dataclass(frozen=True)
class ErrorInfo:
    """How a refusal travels: its HTTP status, and whether the outcome of the request is
    unknown (the terminal must query before deciding)."""

    http_status: int
    unknown_outcome: bool = False


ERRORS: Mapping[ErrorCode, ErrorInfo] = MappingProxyType({
    ErrorCode.BAD_REQUEST: ErrorInfo(400),
    ErrorCode.PARAM_ERROR: ErrorInfo(400),
    ErrorCode.BODY_TOO_LARGE: ErrorInfo(413),
    ErrorCode.NOT_FOUND: ErrorInfo(404),
    ErrorCode.METHOD_NOT_ALLOWED: ErrorInfo(405),
    ErrorCode.UNKNOWN_TERMINAL: ErrorInfo(401),
    ErrorCode.MERCHANT_MISMATCH: ErrorInfo(403),
    ErrorCode.SIGN_ERROR: ErrorInfo(401),
    ErrorCode.NONCE_REUSED: ErrorInfo(400),
    ErrorCode.OUT_TRADE_NO_USED: ErrorInfo(200),
    ErrorCode.ORDER_NOT_EXIST: ErrorInfo(200),
    ErrorCode.ORDER_PAID: ErrorInfo(200),
    ErrorCode.ORDER_CLOSED: ErrorInfo(200),
    ErrorCode.ORDER_REVOKED: ErrorInfo(200),
    ErrorCode.ORDER_PAYING: ErrorInfo(200),
    ErrorCode.ORDER_NOT_PAID: ErrorInfo(200),
    ErrorCode.ORDER_REFUNDED: ErrorInfo(200),
    ErrorCode.REFUND_EXCEEDED: ErrorInfo(200),
    ErrorCode.OUT_REFUND_NO_USED: ErrorInfo(200),
    ErrorCode.AUTH_CODE_INVALID: ErrorInfo(200),
    ErrorCode.AUTH_CODE_EXPIRED: ErrorInfo(200),
    ErrorCode.NOT_ENOUGH: ErrorInfo(200),
    ErrorCode.BUYER_REFUSED: ErrorInfo(200),
    ErrorCode.TRADE_ERROR: ErrorInfo(200),
    ErrorCode.SYSTEM_ERROR: ErrorInfo(500, unknown_outcome=True),
})
#: Refusals a platform rule may force (business answers; the request is then not processed).
RULE_ERRORS: frozenset[ErrorCode] = frozenset({
    ErrorCode.SYSTEM_ERROR, ErrorCode.TRADE_ERROR, ErrorCode.NOT_ENOUGH,
    ErrorCode.BUYER_REFUSED, ErrorCode.AUTH_CODE_EXPIRED, ErrorCode.AUTH_CODE_INVALID,
    ErrorCode.ORDER_NOT_EXIST, ErrorCode.ORDER_CLOSED, ErrorCode.REFUND_EXCEEDED,
})


# -- payment codes (auth_code) ------------------------------------------------------------------

class Wallet(enum.StrEnum):
    """The wallets whose payment codes the platform accepts (shapes of the real ones)."""

    WECHAT = "wechat"
    ALIPAY = "alipay"
    UNIONPAY = "unionpay"


@dataclass(frozen=True)
class CodeShape:
    """A wallet's payment code: *length* digits, the first two in *prefixes*."""

    length: int
    prefixes: frozenset[str]

    def fits(self, code: str) -> bool:
        return len(code) == self.length and ascii_digits(code) and code[:2] in self.prefixes


def _prefixes(lo: int, hi: int) -> frozenset[str]:
    return frozenset(f"{n:02d}" for n in range(lo, hi + 1))


#: The payment code (auth_code) of each wallet: WeChat Pay's are 18 digits starting 10–15,
#: Alipay's 16–24 digits starting 25–30 (the platform takes 18), UnionPay's 19 starting 62.
WALLETS: Mapping[Wallet, CodeShape] = MappingProxyType({
    Wallet.WECHAT: CodeShape(18, _prefixes(10, 15)),
    Wallet.ALIPAY: CodeShape(18, _prefixes(25, 30)),
    Wallet.UNIONPAY: CodeShape(19, frozenset({"62"})),
})


def wallet_of(auth_code: str) -> Wallet | None:
    """The wallet whose payment code shape *auth_code* has, or None."""
    for wallet, shape in WALLETS.items():
        if shape.fits(auth_code):
            return wallet
    return None


def mask_code(auth_code: str) -> str:
    """A payment code as logs and ledgers show it (first 6, last 4, like a PAN)."""
    return mask_pan(auth_code)


# -- operations ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class OperationSpec:
    """One operation: its path, the fields it requires, and those it may take."""

    op: Operation
    required: frozenset[str]
    optional: frozenset[str] = frozenset()
    order_ref: bool = False
    """Names an order by ``out_trade_no`` or ``order_id`` (one of them is required)."""

    @property
    def path(self) -> str:
        return f"{API_PREFIX}/{self.op.value}"


#: Fields every request carries (and that the signature covers, with the operation's own).
COMMON_FIELDS = frozenset({"merchant_id", "terminal_id", "nonce", "timestamp"})
REF_FIELDS = frozenset({"out_trade_no", "order_id"})

OPERATIONS: Mapping[Operation, OperationSpec] = MappingProxyType({
    Operation.CREATE: OperationSpec(Operation.CREATE, frozenset({"out_trade_no", "amount"}),
                                    frozenset({"description", "currency"})),
    Operation.QUERY: OperationSpec(Operation.QUERY, frozenset(), order_ref=True),
    Operation.CLOSE: OperationSpec(Operation.CLOSE, frozenset(), order_ref=True),
    Operation.CANCEL: OperationSpec(Operation.CANCEL, frozenset(), order_ref=True),
    Operation.REFUND: OperationSpec(Operation.REFUND, frozenset({"out_refund_no", "amount"}),
                                    frozenset({"reason"}), order_ref=True),
    Operation.MICROPAY: OperationSpec(Operation.MICROPAY,
                                      frozenset({"out_trade_no", "amount", "auth_code"}),
                                      frozenset({"description", "currency"})),
})
#: HTTP path → operation.
PATHS: Mapping[str, Operation] = MappingProxyType({s.path: op for op, s in OPERATIONS.items()})


# -- signing -------------------------------------------------------------------------------------

def _no_floats(value: object, where: str) -> None:
    if isinstance(value, float):
        raise ProtocolError(f"{where}: a signed body holds no floating-point number "
                            f"(amounts are integers in minor units), got {value!r}")
    if isinstance(value, Mapping):
        for k, v in value.items():
            _no_floats(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _no_floats(v, f"{where}[{i}]")


def canonical(body: Mapping[str, Any]) -> bytes:
    """The bytes a signature covers: *body* without ``sign``, as compact JSON with keys sorted
    at every level, non-ASCII kept as UTF-8 (``json.dumps(…, sort_keys=True,
    separators=(",", ":"), ensure_ascii=False)``)."""
    rest = {k: v for k, v in body.items() if k != SIGN_KEY}
    _no_floats(rest, "body")
    return json.dumps(rest, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


def sign(body: Mapping[str, Any], key: bytes) -> str:
    """HMAC-SHA256 of :func:`canonical` under *key*, 64 upper-case hex digits."""
    return hmac.new(key, canonical(body), hashlib.sha256).hexdigest().upper()


def verify(body: Mapping[str, Any], key: bytes) -> bool:
    """Whether ``body["sign"]`` is the signature of *body* under *key* (constant time)."""
    given = body.get(SIGN_KEY)
    if not isinstance(given, str) or not given.isascii():  # compare_digest: ASCII text only
        return False
    try:
        want = sign(body, key)
    except ProtocolError:
        return False
    return hmac.compare_digest(given.upper(), want)


def signed_body(body: Mapping[str, Any], key: bytes) -> dict[str, Any]:
    """*body* with its ``sign``."""
    out = {k: v for k, v in body.items() if k != SIGN_KEY}
    out[SIGN_KEY] = sign(out, key)
    return out


def encode_body(body: Mapping[str, Any]) -> bytes:
    """A body on the wire: compact UTF-8 JSON."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


MAX_DEPTH = 8  # nesting of a body's JSON: a request is one flat object


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {key[:32]!r} appears twice")
        out[key] = value
    return out


def _check_json(value: object, where: str) -> None:
    """No text that UTF-8 cannot carry (a lone surrogate from ``\\ud800``: signing or answering
    it would raise UnicodeEncodeError) and at most :data:`MAX_DEPTH` levels (iterative)."""
    stack: list[tuple[object, str, int]] = [(value, where, 0)]
    while stack:
        item, path, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise DecodeError(f"{path}: nested deeper than {MAX_DEPTH} levels")
        if isinstance(item, str):
            bad = next((i for i, ch in enumerate(item) if "\ud800" <= ch <= "\udfff"), None)
            if bad is not None:
                raise DecodeError(f"{path}: lone surrogate U+{ord(item[bad]):04X} at character "
                                  f"{bad}; not text")
        elif isinstance(item, dict):
            for key, sub in item.items():
                stack.append((key, f"{path} key", depth + 1))
                stack.append((sub, f"{path}[{key[:32]!r}]", depth + 1))
        elif isinstance(item, list):
            stack.extend((sub, f"{path}[{i}]", depth + 1) for i, sub in enumerate(item))


def decode_body(raw: bytes, where: str) -> dict[str, Any]:
    """Wire bytes → a JSON object; anything else is a DecodeError naming *where* and showing
    the start of the bytes.  Strict JSON: no ``NaN``/``Infinity``, no key twice, no lone
    surrogate, at most :data:`MAX_DEPTH` levels, no integer of more than 4300 digits."""
    try:
        obj = json.loads(raw.decode("utf-8"), parse_constant=_no_constant,
                         object_pairs_hook=_unique_keys)
    except (UnicodeDecodeError, ValueError) as exc:
        raise DecodeError(f"{where}: body is not JSON ({str(exc)[:120]}): {raw[:60]!r}") from None
    except RecursionError:
        raise DecodeError(f"{where}: body nested too deeply to read: {raw[:60]!r}") from None
    if not isinstance(obj, dict):
        raise DecodeError(f"{where}: body is JSON {type(obj).__name__}, expected an object: "
                          f"{raw[:60]!r}")
    _check_json(obj, where)
    return obj


# -- records -------------------------------------------------------------------------------------

def _field(raw: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in raw:
        raise DecodeError(f"{where}.{key} is missing")
    return raw[key]


def _text(raw: Mapping[str, Any], key: str, where: str, *, optional: bool = False) -> str | None:
    value = raw.get(key) if optional else _field(raw, key, where)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise DecodeError(f"{where}.{key} must be a string, got {value!r}"[:160])
    return value


def _amount(raw: Mapping[str, Any], key: str, where: str) -> int:
    value = _field(raw, key, where)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DecodeError(f"{where}.{key} must be an integer >= 0 (minor units), got "
                          f"{value!r}"[:160])
    return value


def _enum(kind: type[enum.StrEnum], raw: Mapping[str, Any], key: str, where: str) -> Any:
    value = str(_text(raw, key, where))
    try:
        return kind(value)
    except ValueError:
        raise DecodeError(f"{where}.{key} must be one of {', '.join(m.value for m in kind)}, "
                          f"got {value!r}") from None


@dataclass(frozen=True)
class QrOrder:
    """An order as the platform answers it (and as its ledger keeps it).  ``auth_code`` is
    masked; ``reason`` says why an order closed, failed or was revoked."""

    order_id: str
    out_trade_no: str
    merchant_id: str
    terminal_id: str
    kind: OrderKind
    amount: int
    status: OrderStatus
    currency: str = CURRENCY
    description: str = ""
    code_url: str | None = None
    wallet: Wallet | None = None
    buyer_id: str | None = None
    auth_code: str | None = None
    paid_amount: int = 0
    refunded_amount: int = 0
    created_at: str = ""
    paid_at: str | None = None
    expires_at: str | None = None
    reason: str | None = None

    @property
    def refundable(self) -> int:
        """What is left to refund (0 unless paid)."""
        return self.paid_amount - self.refunded_amount if self.status.paid else 0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "order_id": self.order_id, "out_trade_no": self.out_trade_no,
            "merchant_id": self.merchant_id, "terminal_id": self.terminal_id,
            "kind": self.kind.value, "amount": self.amount, "currency": self.currency,
            "status": self.status.value, "description": self.description,
            "paid_amount": self.paid_amount, "refunded_amount": self.refunded_amount,
            "created_at": self.created_at,
        }
        optional = {"code_url": self.code_url,
                    "wallet": None if self.wallet is None else self.wallet.value,
                    "buyer_id": self.buyer_id, "auth_code": self.auth_code,
                    "paid_at": self.paid_at, "expires_at": self.expires_at,
                    "reason": self.reason}
        out.update({k: v for k, v in optional.items() if v is not None})
        return out

    @classmethod
    def from_json(cls, raw: object, where: str = "order") -> QrOrder:
        if not isinstance(raw, Mapping):
            raise DecodeError(f"{where} must be an object, got {type(raw).__name__}")
        wallet = _text(raw, "wallet", where, optional=True)
        try:
            wallet_value = None if wallet is None else Wallet(wallet)
        except ValueError:
            raise DecodeError(f"{where}.wallet must be one of "
                              f"{', '.join(w.value for w in Wallet)}, got {wallet!r}") from None
        return cls(
            order_id=str(_text(raw, "order_id", where)),
            out_trade_no=str(_text(raw, "out_trade_no", where)),
            merchant_id=str(_text(raw, "merchant_id", where)),
            terminal_id=str(_text(raw, "terminal_id", where)),
            kind=_enum(OrderKind, raw, "kind", where),
            amount=_amount(raw, "amount", where),
            status=_enum(OrderStatus, raw, "status", where),
            currency=str(_text(raw, "currency", where)),
            description=_text(raw, "description", where, optional=True) or "",
            code_url=_text(raw, "code_url", where, optional=True),
            wallet=wallet_value,
            buyer_id=_text(raw, "buyer_id", where, optional=True),
            auth_code=_text(raw, "auth_code", where, optional=True),
            paid_amount=_amount(raw, "paid_amount", where),
            refunded_amount=_amount(raw, "refunded_amount", where),
            created_at=str(_text(raw, "created_at", where)),
            paid_at=_text(raw, "paid_at", where, optional=True),
            expires_at=_text(raw, "expires_at", where, optional=True),
            reason=_text(raw, "reason", where, optional=True))


@dataclass(frozen=True)
class QrRefund:
    """One refund of an order (the platform books it at once: status SUCCESS)."""

    refund_id: str
    out_refund_no: str
    order_id: str
    out_trade_no: str
    amount: int
    status: str = "SUCCESS"
    created_at: str = ""
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"refund_id": self.refund_id, "out_refund_no": self.out_refund_no,
                "order_id": self.order_id, "out_trade_no": self.out_trade_no,
                "amount": self.amount, "status": self.status, "created_at": self.created_at,
                "reason": self.reason}

    @classmethod
    def from_json(cls, raw: object, where: str = "refund") -> QrRefund:
        if not isinstance(raw, Mapping):
            raise DecodeError(f"{where} must be an object, got {type(raw).__name__}")
        return cls(refund_id=str(_text(raw, "refund_id", where)),
                   out_refund_no=str(_text(raw, "out_refund_no", where)),
                   order_id=str(_text(raw, "order_id", where)),
                   out_trade_no=str(_text(raw, "out_trade_no", where)),
                   amount=_amount(raw, "amount", where),
                   status=str(_text(raw, "status", where)),
                   created_at=str(_text(raw, "created_at", where)),
                   reason=_text(raw, "reason", where, optional=True) or "")


# -- requests and answers ------------------------------------------------------------------------

def build_request(op: Operation, fields: Mapping[str, Any], *, merchant_id: str,
                  terminal_id: str, key: bytes, nonce: str, timestamp: int
                  ) -> tuple[str, bytes]:
    """The path and signed body of one request (the terminal's side).  *fields* are the
    operation's own (:data:`OPERATIONS`); an unknown or missing one is a ProtocolError."""
    spec = OPERATIONS[op]
    allowed = spec.required | spec.optional | (REF_FIELDS if spec.order_ref else frozenset())
    unknown = sorted(set(fields) - allowed)
    if unknown:
        raise ProtocolError(f"{op} request: unknown field(s) {', '.join(unknown)}; it takes "
                            f"{', '.join(sorted(allowed))}")
    missing = sorted(spec.required - set(fields))
    if spec.order_ref and not REF_FIELDS & set(fields):
        missing.append("out_trade_no or order_id")
    if missing:
        raise ProtocolError(f"{op} request: missing {', '.join(missing)}")
    if not NONCE_RE.match(nonce):
        raise ProtocolError(f"{op} request: nonce {nonce!r} must be 8-32 letters or digits")
    body: dict[str, Any] = {"merchant_id": merchant_id, "terminal_id": terminal_id,
                            "nonce": nonce, "timestamp": int(timestamp), **fields}
    return spec.path, encode_body(signed_body(body, key))


@dataclass(frozen=True)
class Answer:
    """The platform's answer to one request, parsed: ``ok`` with the order (and the refund of
    a refund), or a refusal with its code and message (and the order when there is one)."""

    http_status: int
    ok: bool
    order: QrOrder | None = None
    refund: QrRefund | None = None
    error: ErrorCode | None = None
    message: str = ""
    signed: bool = False
    body: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


def error_body(code: ErrorCode, message: str, *, order: QrOrder | None = None
               ) -> dict[str, Any]:
    """The platform's refusal (unsigned; the platform signs it when it knows the terminal)."""
    body: dict[str, Any] = {"ok": False, "error": code.value, "message": message}
    if order is not None:
        body["order"] = order.to_json()
    return body


def parse_answer(http_status: int, raw: bytes, key: bytes | None, *,
                 where: str = "QR platform answer") -> Answer:
    """Status and body bytes → :class:`Answer` (the terminal's side).

    An ``ok`` answer must carry a valid signature under *key* (a corrupted or forged answer is
    a ProtocolError); a refusal may be unsigned (the platform cannot sign for a terminal it does
    not know), but a signature it carries must verify.  A body that is not the platform's JSON
    is a DecodeError naming *where*."""
    body = decode_body(raw, where)
    ok = body.get("ok")
    if not isinstance(ok, bool):
        raise DecodeError(f"{where}: 'ok' must be true or false, got {ok!r}")
    signed = SIGN_KEY in body
    if signed and (key is None or not verify(body, key)):
        raise ProtocolError(f"{where}: the signature does not verify under the terminal's "
                            f"key (HTTP {http_status}, ok={ok})")
    if ok and not signed:
        raise ProtocolError(f"{where}: an 'ok' answer without a signature (HTTP {http_status})")
    order = None if "order" not in body else QrOrder.from_json(body["order"], f"{where}.order")
    refund = (None if "refund" not in body
              else QrRefund.from_json(body["refund"], f"{where}.refund"))
    if ok:
        return Answer(http_status, True, order, refund, signed=signed,
                      body=MappingProxyType(dict(body)))
    code = body.get("error")
    try:
        error = ErrorCode(str(code))
    except ValueError:
        raise DecodeError(f"{where}: 'error' must be one of the platform's codes, got "
                          f"{code!r}") from None
    message = body.get("message")
    return Answer(http_status, False, order, refund, error=error,
                  message=message if isinstance(message, str) else "", signed=signed,
                  body=MappingProxyType(dict(body)))


__all__ = [
    "API_PREFIX",
    "Answer",
    "CODE_URL_PREFIX",
    "COMMON_FIELDS",
    "CONTENT_TYPE",
    "CURRENCY",
    "CodeShape",
    "DEFAULT_PORT",
    "ERRORS",
    "ErrorCode",
    "ErrorInfo",
    "MAX_AMOUNT",
    "MAX_BODY",
    "MAX_DESCRIPTION",
    "NONCE_MEMORY",
    "NONCE_RE",
    "OPERATIONS",
    "Operation",
    "OperationSpec",
    "OrderKind",
    "OrderStatus",
    "PATHS",
    "QrOrder",
    "QrRefund",
    "REF_FIELDS",
    "RULE_ERRORS",
    "SIGN_KEY",
    "TRADE_NO_RE",
    "TRANSITIONS",
    "WALLETS",
    "Wallet",
    "build_request",
    "canonical",
    "decode_body",
    "encode_body",
    "error_body",
    "mask_code",
    "parse_answer",
    "sign",
    "signed_body",
    "verify",
    "wallet_of",
]

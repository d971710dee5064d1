"""The QR platform's ledger schema: the contract between the platform simulator that writes it
(``sim.qr.ledger``) and the rig that reads it (``rigs.qr``).

Four tables in one SQLite file (WAL):

- ``orders``: one row per order, updated in place as its status changes; ``changed_seq`` is
  the platform's change counter (it grows with every change of an order or a payment), so a
  reader asks for what changed since a mark;
- ``payments``: one row per payment of an order by a wallet (``paid``; ``revoked`` when the
  terminal cancelled the paid order and the money went back);
- ``refunds``: one row per refund (never changed);
- ``requests``: one row per request a terminal sent (operation, result: ``SUCCESS`` or the
  refusal's code, the order's status after it, the platform rule that shaped the answer).

Payment codes are kept masked (first 6, last 4).  Columns are only ever appended.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from protocols.errors import DecodeError
from protocols.qr import OrderKind, OrderStatus, QrOrder, QrRefund, Wallet

ORDERS = "orders"
PAYMENTS = "payments"
REFUNDS = "refunds"
REQUESTS = "requests"

#: Columns of each table but ``id`` (row id), in table order, with their SQL types.
ORDER_COLUMNS: tuple[tuple[str, str], ...] = (
    ("order_id", "TEXT NOT NULL UNIQUE"),
    ("changed_seq", "INTEGER NOT NULL"),
    ("out_trade_no", "TEXT NOT NULL"),
    ("merchant_id", "TEXT NOT NULL"),
    ("terminal_id", "TEXT NOT NULL"),
    ("kind", "TEXT NOT NULL"),           # OrderKind
    ("amount", "INTEGER NOT NULL"),
    ("currency", "TEXT NOT NULL"),
    ("status", "TEXT NOT NULL"),         # OrderStatus
    ("description", "TEXT"),
    ("code_url", "TEXT"),
    ("wallet", "TEXT"),                  # Wallet
    ("buyer_id", "TEXT"),
    ("auth_code", "TEXT"),               # masked
    ("paid_amount", "INTEGER NOT NULL"),
    ("refunded_amount", "INTEGER NOT NULL"),
    ("created_at", "TEXT NOT NULL"),
    ("paid_at", "TEXT"),
    ("expires_at", "TEXT"),
    ("reason", "TEXT"),
)
PAYMENT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("payment_id", "TEXT NOT NULL UNIQUE"),
    ("changed_seq", "INTEGER NOT NULL"),
    ("order_id", "TEXT NOT NULL"),
    ("wallet", "TEXT NOT NULL"),
    ("buyer_id", "TEXT NOT NULL"),
    ("amount", "INTEGER NOT NULL"),
    ("status", "TEXT NOT NULL"),         # PaymentStatus
    ("paid_at", "TEXT NOT NULL"),
    ("revoked_at", "TEXT"),
)
REFUND_COLUMNS: tuple[tuple[str, str], ...] = (
    ("refund_id", "TEXT NOT NULL UNIQUE"),
    ("out_refund_no", "TEXT NOT NULL"),
    ("order_id", "TEXT NOT NULL"),
    ("out_trade_no", "TEXT NOT NULL"),
    ("amount", "INTEGER NOT NULL"),
    ("status", "TEXT NOT NULL"),
    ("created_at", "TEXT NOT NULL"),
    ("reason", "TEXT"),
)
REQUEST_COLUMNS: tuple[tuple[str, str], ...] = (
    ("received_at", "TEXT NOT NULL"),
    ("received_ts", "REAL NOT NULL"),
    ("operation", "TEXT NOT NULL"),      # Operation, or the path of an unknown one
    ("terminal_id", "TEXT"),
    ("merchant_id", "TEXT"),
    ("out_trade_no", "TEXT"),
    ("order_id", "TEXT"),
    ("amount", "INTEGER"),
    ("result", "TEXT NOT NULL"),         # SUCCESS or an ErrorCode
    ("order_status", "TEXT"),            # the order's status after the request
    ("http_status", "INTEGER NOT NULL"),
    ("message", "TEXT"),
    ("rule_id", "INTEGER"),
    ("rule_action", "TEXT"),
)
TABLES: Mapping[str, tuple[tuple[str, str], ...]] = {
    ORDERS: ORDER_COLUMNS, PAYMENTS: PAYMENT_COLUMNS, REFUNDS: REFUND_COLUMNS,
    REQUESTS: REQUEST_COLUMNS,
}
#: Column names of each table, without ``id``.
COLUMNS: Mapping[str, tuple[str, ...]] = {t: tuple(n for n, _ in cols)
                                          for t, cols in TABLES.items()}
SCHEMAS: tuple[str, ...] = tuple(
    f"CREATE TABLE IF NOT EXISTS {table} (\n    id INTEGER PRIMARY KEY AUTOINCREMENT,\n"
    + ",\n".join(f"    {name} {sql}" for name, sql in cols) + "\n);"
    for table, cols in TABLES.items())
RESULT_SUCCESS = "SUCCESS"


class PaymentStatus(enum.StrEnum):
    PAID = "paid"
    REVOKED = "revoked"      # the order was cancelled after it was paid: the money went back


@dataclass(frozen=True)
class QrPayment:
    """One payment of an order by a customer's wallet."""

    payment_id: str
    order_id: str
    wallet: Wallet
    buyer_id: str
    amount: int
    status: PaymentStatus
    paid_at: str
    revoked_at: str | None = None


@dataclass(frozen=True)
class QrRequestRecord:
    """One request a terminal sent, and what the platform made of it."""

    received_at: str
    received_ts: float
    operation: str
    result: str
    http_status: int
    terminal_id: str | None = None
    merchant_id: str | None = None
    out_trade_no: str | None = None
    order_id: str | None = None
    amount: int | None = None
    order_status: str | None = None
    message: str | None = None
    rule_id: int | None = None
    rule_action: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.result == RESULT_SUCCESS


# -- rows ↔ records ------------------------------------------------------------------------------

def order_row(order: QrOrder) -> dict[str, Any]:
    """An order as the columns of ``orders`` (without ``changed_seq``)."""
    return {"order_id": order.order_id, "out_trade_no": order.out_trade_no,
            "merchant_id": order.merchant_id, "terminal_id": order.terminal_id,
            "kind": order.kind.value, "amount": order.amount, "currency": order.currency,
            "status": order.status.value, "description": order.description,
            "code_url": order.code_url,
            "wallet": None if order.wallet is None else order.wallet.value,
            "buyer_id": order.buyer_id, "auth_code": order.auth_code,
            "paid_amount": order.paid_amount, "refunded_amount": order.refunded_amount,
            "created_at": order.created_at, "paid_at": order.paid_at,
            "expires_at": order.expires_at, "reason": order.reason}


def _enum(kind: type[enum.StrEnum], value: object, where: str) -> Any:
    try:
        return kind(str(value))
    except ValueError:
        raise DecodeError(f"{where}: {value!r} is not one of "
                          f"{', '.join(m.value for m in kind)}") from None


def order_from_row(row: Mapping[str, Any], where: str = ORDERS) -> QrOrder:
    """A row of ``orders`` → :class:`QrOrder` (a bad value is a DecodeError naming it)."""
    wallet = row.get("wallet")
    return QrOrder(
        order_id=str(row["order_id"]), out_trade_no=str(row["out_trade_no"]),
        merchant_id=str(row["merchant_id"]), terminal_id=str(row["terminal_id"]),
        kind=_enum(OrderKind, row["kind"], f"{where}.kind"), amount=int(row["amount"]),
        status=_enum(OrderStatus, row["status"], f"{where}.status"),
        currency=str(row["currency"]), description=str(row.get("description") or ""),
        code_url=row.get("code_url"),
        wallet=None if wallet is None else _enum(Wallet, wallet, f"{where}.wallet"),
        buyer_id=row.get("buyer_id"), auth_code=row.get("auth_code"),
        paid_amount=int(row["paid_amount"]), refunded_amount=int(row["refunded_amount"]),
        created_at=str(row["created_at"]), paid_at=row.get("paid_at"),
        expires_at=row.get("expires_at"), reason=row.get("reason"))


def payment_row(payment: QrPayment) -> dict[str, Any]:
    return {"payment_id": payment.payment_id, "order_id": payment.order_id,
            "wallet": payment.wallet.value, "buyer_id": payment.buyer_id,
            "amount": payment.amount, "status": payment.status.value,
            "paid_at": payment.paid_at, "revoked_at": payment.revoked_at}


def payment_from_row(row: Mapping[str, Any], where: str = PAYMENTS) -> QrPayment:
    return QrPayment(payment_id=str(row["payment_id"]), order_id=str(row["order_id"]),
                     wallet=_enum(Wallet, row["wallet"], f"{where}.wallet"),
                     buyer_id=str(row["buyer_id"]), amount=int(row["amount"]),
                     status=_enum(PaymentStatus, row["status"], f"{where}.status"),
                     paid_at=str(row["paid_at"]), revoked_at=row.get("revoked_at"))


def refund_row(refund: QrRefund) -> dict[str, Any]:
    return refund.to_json()


def refund_from_row(row: Mapping[str, Any]) -> QrRefund:
    return QrRefund(refund_id=str(row["refund_id"]), out_refund_no=str(row["out_refund_no"]),
                    order_id=str(row["order_id"]), out_trade_no=str(row["out_trade_no"]),
                    amount=int(row["amount"]), status=str(row["status"]),
                    created_at=str(row["created_at"]), reason=str(row.get("reason") or ""))


def request_row(rec: QrRequestRecord) -> dict[str, Any]:
    return {name: getattr(rec, name) for name in COLUMNS[REQUESTS]}


def request_from_row(row: Mapping[str, Any]) -> QrRequestRecord:
    def opt_int(name: str) -> int | None:
        value = row.get(name)
        return None if value is None else int(value)

    def opt_text(name: str) -> str | None:
        value = row.get(name)
        return None if value is None else str(value)

    return QrRequestRecord(
        received_at=str(row["received_at"]), received_ts=float(row["received_ts"]),
        operation=str(row["operation"]), result=str(row["result"]),
        http_status=int(row["http_status"]), terminal_id=opt_text("terminal_id"),
        merchant_id=opt_text("merchant_id"), out_trade_no=opt_text("out_trade_no"),
        order_id=opt_text("order_id"), amount=opt_int("amount"),
        order_status=opt_text("order_status"), message=opt_text("message"),
        rule_id=opt_int("rule_id"), rule_action=opt_text("rule_action"))


__all__ = [
    "COLUMNS",
    "ORDERS",
    "ORDER_COLUMNS",
    "PAYMENTS",
    "PAYMENT_COLUMNS",
    "PaymentStatus",
    "QrPayment",
    "QrRequestRecord",
    "REFUNDS",
    "REFUND_COLUMNS",
    "REQUESTS",
    "REQUEST_COLUMNS",
    "RESULT_SUCCESS",
    "SCHEMAS",
    "TABLES",
    "order_from_row",
    "order_row",
    "payment_from_row",
    "payment_row",
    "refund_from_row",
    "refund_row",
    "request_from_row",
    "request_row",
]

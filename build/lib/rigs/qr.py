"""The rig's view of the QR payment platform: its ledger, the customer's wallet, its rules.

The platform (on the virtual bench ``python -m sim.qr``; protocol :mod:`protocols.qr`,
docs/qr-platform.md) is published in the bench file's ``qr`` section: ``address`` (where the
terminal reaches it, to find its traffic in captures), ``ledger`` (its SQLite file) and
``control`` (its JSON-lines control socket).  Three drivers, each built from that section:

- :class:`SqliteQrPlatformLedger` reads the ledger read-only (schema
  :mod:`protocols.qrledger`): orders with their status, payments, refunds, and every request a
  terminal sent, as typed records (:class:`~protocols.qr.QrOrder`,
  :class:`~protocols.qrledger.QrPayment`, :class:`~protocols.qr.QrRefund`,
  :class:`~protocols.qrledger.QrRequestRecord`), since a :class:`QrMark`;
- :class:`SocketQrWallet` plays the customer's wallet: it pays an order by the code the
  terminal shows (:meth:`~SocketQrWallet.pay_order`), opens a payment code to show the
  terminal's scanner (:meth:`~SocketQrWallet.new_payment_code`), types the wallet password
  (:meth:`~SocketQrWallet.confirm`) or declines (:meth:`~SocketQrWallet.refuse`).  Nominal: no
  payment code left open (restore forgets them);
- :class:`SocketQrPlatformControl` sets the platform's answers (rules: a refusal, a late
  answer, no answer, a payment code that needs the password).  Nominal: no rule added by a step
  still in force (restore clears them; the rules file's stay).

:class:`QrPlatformView` is what the bench façade hands the steps as ``bench.qr``: the three
parts, each raising :class:`~rigs.errors.CapabilityMissing` when the bench lacks it.  The rig
never imports ``sim``; every answer is parsed here, once, into typed records, and a malformed
one is a :class:`~protocols.errors.TransportError` naming the field.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from protocols.errors import DecodeError
from protocols.qr import ErrorCode, QrOrder, QrRefund, Wallet, mask_code
from protocols.qrledger import (
    COLUMNS,
    ORDERS,
    PAYMENTS,
    REFUNDS,
    REQUESTS,
    QrPayment,
    QrRequestRecord,
    order_from_row,
    payment_from_row,
    refund_from_row,
    request_from_row,
)
from rigs.answers import as_bool, as_int, as_object, as_str, bad, required
from rigs.capabilities import REQUIREMENT, Capability
from rigs.errors import CapabilityMissing, ConfigError, InstrumentError, RigError, TransportError
from rigs.events import Source
from rigs.jsonctl import SocketControlDriver, SocketRuleControl
from rigs.sqliteledger import SqliteLedgerReader

if TYPE_CHECKING:
    from rigs.interfaces import Instrument, QrPlatformControl, QrPlatformLedger, QrWallet

R = TypeVar("R")


# --- records ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class QrMark:
    """Where the ledger stood: the change counter of orders and payments, the last refund and
    request ids.  ``since=mark`` gives what changed or was added after it."""

    seq: int = 0
    refund_id: int = 0
    request_id: int = 0


@dataclass(frozen=True)
class PaymentCode:
    """A payment code the customer's wallet opened (shown to the terminal's scanner).  The
    code itself is a one-time test token; its ``repr`` shows it masked."""

    auth_code: str
    wallet: Wallet
    buyer_id: str
    expires_at: str
    password: bool = False
    balance_minor: int | None = None

    def __repr__(self) -> str:
        return (f"PaymentCode({mask_code(self.auth_code)}, {self.wallet}, {self.buyer_id}, "
                f"password={self.password}, expires {self.expires_at})")

    @classmethod
    def from_json(cls, raw: object, where: str = "answer.code") -> PaymentCode:
        obj = as_object(raw, where)
        wallet = as_str(required(obj, "wallet", where, "a wallet name"), f"{where}.wallet")
        try:
            wallet_value = Wallet(wallet)
        except ValueError:
            raise bad(f"{where}.wallet", f"one of {', '.join(w.value for w in Wallet)}",
                      wallet) from None
        balance = obj.get("balance_minor")
        return cls(
            auth_code=as_str(required(obj, "auth_code", where, "digits"), f"{where}.auth_code"),
            wallet=wallet_value,
            buyer_id=as_str(required(obj, "buyer_id", where, "a string"), f"{where}.buyer_id"),
            expires_at=as_str(required(obj, "expires_at", where, "a time"),
                              f"{where}.expires_at"),
            password=as_bool(required(obj, "password", where, "true or false"),
                             f"{where}.password"),
            balance_minor=None if balance is None else as_int(balance,
                                                              f"{where}.balance_minor"))


@dataclass(frozen=True)
class QrPlatformStatus:
    """The platform's answer to ``ping``."""

    pid: int
    added_rules: int
    open_codes: int
    user_paying: int
    pending_orders: int

    @classmethod
    def from_json(cls, raw: object, where: str = "answer") -> QrPlatformStatus:
        obj = as_object(raw, where)

        def count(key: str) -> int:
            return as_int(required(obj, key, where, "an integer >= 0"), f"{where}.{key}")

        return cls(pid=count("pid"), added_rules=count("added_rules"),
                   open_codes=count("open_codes"), user_paying=count("user_paying"),
                   pending_orders=count("pending_orders"))


class WalletRefused(InstrumentError):
    """The platform refused what the wallet asked (a paid or closed order, a short balance…):
    its *code*, and the *order* it concerns when there is one."""

    def __init__(self, message: str, code: ErrorCode, order: QrOrder | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.order = order


def _order(raw: object, where: str) -> QrOrder:
    try:
        return QrOrder.from_json(raw, where)
    except DecodeError as exc:
        raise TransportError(str(exc)) from None


# --- the ledger ---------------------------------------------------------------------------------

def _text(value: object) -> str | None:
    return None if value is None else str(value)


class SqliteQrPlatformLedger(SqliteLedgerReader):
    """Read-only view of the platform's ledger file (URI ``mode=ro``, bounded busy wait)."""

    writer = "the platform"
    started_as = "the QR platform running with --ledger"
    tables = (ORDERS, PAYMENTS, REFUNDS, REQUESTS)

    def _select(self, op: str, table: str, parse: Callable[[Mapping[str, Any]], R],
                conditions: list[tuple[str, object]], tail: str = "ORDER BY id") -> list[R]:
        rows = self._rows(op, table, ("id", *COLUMNS[table]), conditions, tail)
        return self._parse(op, table, rows, parse)

    def mark(self) -> QrMark:
        """Where the ledger stands now (a scenario's start)."""
        (row,) = self._execute(
            "mark", ", ".join(self.tables),
            f"SELECT (SELECT MAX(m) FROM (SELECT MAX(changed_seq) AS m FROM {ORDERS} "
            f"UNION ALL SELECT MAX(changed_seq) FROM {PAYMENTS})), "
            f"(SELECT MAX(id) FROM {REFUNDS}), (SELECT MAX(id) FROM {REQUESTS})")
        return QrMark(*(int(v or 0) for v in row))

    def orders(self, since: QrMark | None = None, *, status: str | None = None,
               terminal_id: str | None = None, kind: str | None = None) -> list[QrOrder]:
        """Orders (as they stand now) that changed after *since*, matching every criterion
        given, in the order they were created."""
        return self._select("orders", ORDERS, order_from_row, [
            ("status = ?", _text(status)), ("terminal_id = ?", _text(terminal_id)),
            ("kind = ?", _text(kind)), ("changed_seq > ?", None if since is None else since.seq)])

    def order(self, *, out_trade_no: str | None = None, order_id: str | None = None
              ) -> QrOrder | None:
        """The newest order with this out_trade_no and/or order id, or None."""
        if out_trade_no is None and order_id is None:
            raise ConfigError(f"{self!r}: order() needs out_trade_no or order_id")
        found = self._select("order", ORDERS, order_from_row,
                             [("out_trade_no = ?", out_trade_no), ("order_id = ?", order_id)],
                             "ORDER BY id DESC LIMIT 1")
        return found[0] if found else None

    def payments(self, since: QrMark | None = None, *, order_id: str | None = None
                 ) -> list[QrPayment]:
        return self._select("payments", PAYMENTS, payment_from_row, [
            ("order_id = ?", order_id), ("changed_seq > ?", None if since is None else since.seq)])

    def refunds(self, since: QrMark | None = None, *, order_id: str | None = None
                ) -> list[QrRefund]:
        return self._select("refunds", REFUNDS, refund_from_row, [
            ("order_id = ?", order_id), ("id > ?", None if since is None else since.refund_id)])

    def requests(self, since: QrMark | None = None, *, operation: str | None = None
                 ) -> list[QrRequestRecord]:
        """The requests terminals sent (what reached the platform), in order."""
        return self._select("requests", REQUESTS, request_from_row, [
            ("operation = ?", _text(operation)), ("id > ?", None if since is None else since.request_id)])

    def text(self, since: QrMark | None = None) -> str:
        """Orders, refunds and requests as text for a report attachment (codes masked)."""
        lines = ["orders:", "  order_id              out_trade_no      kind      amount  "
                 "status      paid  refunded  wallet    reason"]
        for o in self.orders(since):
            lines.append(f"  {o.order_id:<21} {o.out_trade_no:<17} {o.kind.value:<9} "
                         f"{o.amount:>6}  {o.status.value:<10} {o.paid_amount:>5} "
                         f"{o.refunded_amount:>9}  {(o.wallet or '-'):<9} {o.reason or ''}")
        refunds = self.refunds(since)
        if refunds:
            lines.append("refunds:")
            lines += [f"  {r.refund_id} {r.out_refund_no} of {r.order_id}: {r.amount}"
                      for r in refunds]
        lines.append("requests:")
        for q in self.requests(since):
            rule = f"  (rule #{q.rule_id} {q.rule_action})" if q.rule_id is not None else ""
            lines.append(f"  {q.received_at} {q.operation:<9} {q.terminal_id or '-':<9} "
                         f"{q.out_trade_no or '-':<17} {q.result:<18} "
                         f"{q.order_status or '-'}{rule}")
        return "\n".join(lines)


# --- the control socket: wallet and rules -------------------------------------------------------

class _QrControlSocket(SocketControlDriver[QrPlatformStatus]):
    """A connection to the platform's control socket at *path* (JSON lines, bounded waits).
    A refusal of a wallet action carries the platform's code: :class:`WalletRefused`."""

    peer = "the QR platform"
    refuser = "the platform"
    where = "QR platform control socket"
    started_as = "the QR platform"

    def _refused(self, operation: str, request: Mapping[str, Any],
                 answer: Mapping[str, Any]) -> RigError:
        code = answer.get("code")
        known = {c.value: c for c in ErrorCode}
        if not isinstance(code, str) or code not in known:
            return super()._refused(operation, request, answer)
        order = _order(answer["order"], "answer.order") if "order" in answer else None
        return WalletRefused(f"{self!r}: {operation}(): the platform refused: {code}: "
                             f"{answer.get('error')}", known[code], order)

    def status(self) -> QrPlatformStatus:
        """Round trip (``ping``): the platform's pid, rules added, codes open, orders
        waiting."""
        answer = self._request("status", {"op": "ping"})
        return self._parsed("ping", lambda: QrPlatformStatus.from_json(answer))


def _wallet(value: Wallet | str, who: str) -> Wallet:
    try:
        return Wallet(value)
    except ValueError:
        raise ConfigError(f"{who}: wallet {value!r} is not one of "
                          f"{', '.join(w.value for w in Wallet)}") from None


def _ref(order_id: str | None, out_trade_no: str | None) -> dict[str, str]:
    return {k: v for k, v in (("order_id", order_id), ("out_trade_no", out_trade_no))
            if v is not None}


class SocketQrWallet(_QrControlSocket):
    """The customer's wallet, played on the platform's control socket (see the module doc).
    Nominal: no payment code left open (restoring forgets them)."""

    restore_op = "forget_codes"
    not_nominal = "open payment codes"

    def pay_order(self, code_url: str, *, wallet: Wallet | str = Wallet.WECHAT,
                  buyer_id: str | None = None, password: bool = False,
                  balance_minor: int | None = None) -> QrOrder:
        """The customer scans the terminal's code and pays; with *password* the order waits in
        USERPAYING for :meth:`confirm` or :meth:`refuse`.  A refusal (paid, closed, short
        balance) is :class:`WalletRefused`."""
        if not isinstance(code_url, str) or not code_url:
            raise ConfigError(f"{self!r}: pay_order() takes the code the terminal shows, got "
                              f"{code_url!r}")
        chosen = _wallet(wallet, f"{self!r}: pay_order()")
        request: dict[str, Any] = {"op": "pay", "code_url": code_url,
                                   "wallet": chosen.value, "password": password}
        if buyer_id is not None:
            request["buyer_id"] = buyer_id
        if balance_minor is not None:
            request["balance_minor"] = balance_minor
        answer = self._request("pay_order", request)
        order = self._parsed("pay", lambda: _order(answer.get("order"), "answer.order"))
        self.event_sink.publish(Source.QR, "wallet", "paid" if not password else "scanned",
                                f"{chosen} scanned order {order.order_id} "
                                f"({order.amount}): {order.status}",
                                data={"order_id": order.order_id, "status": order.status.value})
        return order

    def new_payment_code(self, wallet: Wallet | str = Wallet.WECHAT, *,
                         buyer_id: str | None = None, password: bool = False,
                         balance_minor: int | None = None) -> PaymentCode:
        """A payment code the customer shows the terminal's scanner; with *password* a charge
        of it waits for the wallet password (USERPAYING); *balance_minor* caps what it pays."""
        request: dict[str, Any] = {"op": "new_code",
                                   "wallet": _wallet(wallet, f"{self!r}: "
                                                             f"new_payment_code()").value,
                                   "password": password}
        if buyer_id is not None:
            request["buyer_id"] = buyer_id
        if balance_minor is not None:
            request["balance_minor"] = balance_minor
        answer = self._request("new_payment_code", request)
        code = self._parsed("new_code", lambda: PaymentCode.from_json(answer.get("code")))
        self.event_sink.publish(Source.QR, "wallet", "code",
                                f"{code.wallet} payment code {mask_code(code.auth_code)}"
                                + (" (password)" if password else ""),
                                data={"wallet": code.wallet.value, "password": password})
        return code

    def confirm(self, *, order_id: str | None = None, out_trade_no: str | None = None
                ) -> QrOrder:
        """The customer types the wallet password (without a name: the only order waiting)."""
        answer = self._request("confirm", {"op": "confirm", **_ref(order_id, out_trade_no)})
        order = self._parsed("confirm", lambda: _order(answer.get("order"), "answer.order"))
        self.event_sink.publish(Source.QR, "wallet", "confirmed",
                                f"password typed for order {order.order_id}: {order.status}",
                                data={"order_id": order.order_id, "status": order.status.value})
        return order

    def refuse(self, *, order_id: str | None = None, out_trade_no: str | None = None
               ) -> QrOrder:
        """The customer declines the payment waiting for the password (PAYERROR)."""
        answer = self._request("refuse", {"op": "refuse", **_ref(order_id, out_trade_no)})
        order = self._parsed("refuse", lambda: _order(answer.get("order"), "answer.order"))
        self.event_sink.publish(Source.QR, "wallet", "refused",
                                f"customer declined order {order.order_id}: {order.status}",
                                data={"order_id": order.order_id, "status": order.status.value})
        return order

    def order(self, *, order_id: str | None = None, out_trade_no: str | None = None
              ) -> QrOrder:
        """An order as the platform holds it now (as the wallet app would show it)."""
        if order_id is None and out_trade_no is None:
            raise ConfigError(f"{self!r}: order() needs order_id or out_trade_no")
        answer = self._request("order", {"op": "order", **_ref(order_id, out_trade_no)})
        return self._parsed("order", lambda: _order(answer.get("order"), "answer.order"))

    def forget_codes(self) -> int:
        """Forget every payment code not used yet; how many there were."""
        answer = self._request("forget_codes", {"op": "forget_codes"})
        return self._parsed("forget_codes",
                            lambda: as_int(required(answer, "forgotten", "answer", "a count"),
                                           "answer.forgotten"))

    def _nominal_status(self, status: QrPlatformStatus) -> bool:
        """No payment code left open (restoring forgets them)."""
        return status.open_codes == 0

    def _restored(self, answer: dict[str, Any]) -> None:
        self._parsed("forget_codes", lambda: as_int(required(answer, "forgotten", "answer",
                                                             "a count"), "answer.forgotten"))


class SocketQrPlatformControl(SocketRuleControl[QrPlatformStatus], _QrControlSocket):
    """Setting the platform's answers (rules) on its control socket (see the module doc; the
    keys of :meth:`add_rule` are sim.qr.rules's, docs/qr-platform.md).  Nominal: no rule added
    by a step still in force (restoring clears them; the rules file's stay)."""

    restore_op = "clear_rules"
    not_nominal = "added rules"
    rule_label = "QR platform rule"
    event_source = Source.QR

    def _nominal_status(self, status: QrPlatformStatus) -> bool:
        return status.added_rules == 0

    def _restored(self, answer: dict[str, Any]) -> None:
        self._published_cleared("clear_rules", answer)


# --- the view the façade hands the steps ----------------------------------------------------------

class QrPlatformView:
    """``bench.qr``: the platform's ledger, the customer's wallet and the platform's rules on
    this bench; a part the bench lacks raises CapabilityMissing (a skip with the reason)."""

    def __init__(self, bench_name: str, *, address: str | None,
                 ledger: QrPlatformLedger | None = None, wallet: QrWallet | None = None,
                 control: QrPlatformControl | None = None) -> None:
        self.bench_name = bench_name
        self._address = address
        self._ledger = ledger
        self._wallet = wallet
        self._control = control
        self._mark: QrMark | None = None

    @property
    def address(self) -> str:
        """host:port of the platform (bench YAML ``qr.address``), to recognise its traffic."""
        if self._address is None:
            raise CapabilityMissing(f"bench {self.bench_name}: needs a 'qr' section in the "
                                    f"bench file (the QR platform's address)")
        return self._address

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])

    @property
    def has_ledger(self) -> bool:
        return self._ledger is not None

    @property
    def ledger(self) -> QrPlatformLedger:
        """The platform's ledger."""
        if self._ledger is None:
            raise CapabilityMissing(f"bench {self.bench_name}: what the QR platform booked "
                                    f"needs {REQUIREMENT[Capability.QR_LEDGER]}")
        return self._ledger

    @property
    def wallet(self) -> QrWallet:
        """The customer's wallet the rig plays."""
        if self._wallet is None:
            raise CapabilityMissing(f"bench {self.bench_name}: the customer's wallet needs "
                                    f"{REQUIREMENT[Capability.QR]}")
        return self._wallet

    @property
    def control(self) -> QrPlatformControl:
        """The platform's rules."""
        if self._control is None:
            raise CapabilityMissing(f"bench {self.bench_name}: setting the QR platform's "
                                    f"answers needs {REQUIREMENT[Capability.QR]}")
        return self._control

    def instruments(self) -> list[Instrument]:
        """The parts this bench has (the façade opens, restores and closes them)."""
        parts: list[Instrument | None] = [self._ledger, self._wallet, self._control]
        return [p for p in parts if p is not None]

    def begin_scenario(self) -> None:
        self._mark = self._ledger.mark() if self._ledger is not None else None

    @property
    def scenario_mark(self) -> QrMark | None:
        """Where the ledger stood when the scenario began (None without a ledger)."""
        return self._mark

    def orders(self) -> list[QrOrder]:
        """The orders created or changed during this scenario (from the ledger)."""
        return self.ledger.orders(self._mark)

    def evidence_text(self) -> str | None:
        """The ledger's orders, refunds and requests of this scenario, or None without one."""
        if self._ledger is None:
            return None
        return self._ledger.text(self._mark)


__all__ = [
    "PaymentCode",
    "QrMark",
    "QrPlatformStatus",
    "QrPlatformView",
    "SocketQrPlatformControl",
    "SocketQrWallet",
    "SqliteQrPlatformLedger",
    "WalletRefused",
]

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

import logging
import socket
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
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
from rigs.answers import as_bool, as_int, as_list, as_object, as_str, bad, required
from rigs.capabilities import REQUIREMENT, Capability
from rigs.driver import Driver, SessionState
from rigs.errors import (
    CapabilityMissing,
    ConfigError,
    DeviceStateError,
    InstrumentError,
    NoResponse,
    TransportError,
)
from rigs.events import Source
from rigs.jsonctl import ControlChannel

if TYPE_CHECKING:
    from rigs.interfaces import Instrument, QrPlatformControl, QrPlatformLedger, QrWallet

log = logging.getLogger(__name__)
R = TypeVar("R")

#: Longest control answer line accepted.
ANSWER_MAX = 1024 * 1024


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

class SqliteQrPlatformLedger(Driver):
    """Read-only view of the platform's ledger file (URI ``mode=ro``, bounded busy wait)."""

    def __init__(self, name: str, path: str | Path, *, busy_timeout: float = 2.0) -> None:
        super().__init__(name)
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self._db: sqlite3.Connection | None = None

    def open(self) -> None:
        if not self.path.is_file():
            raise TransportError(f"{self!r}: open(): ledger file {self.path} does not exist "
                                 f"(is the QR platform running with --ledger {self.path}?)")
        try:
            self._db = sqlite3.connect(f"file:{self.path.resolve()}?mode=ro", uri=True,
                                       timeout=self.busy_timeout, check_same_thread=False)
        except sqlite3.Error as exc:
            raise TransportError(f"{self!r}: open(): cannot open {self.path} read-only "
                                 f"({exc})") from exc
        super().open()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        super().close()

    def _rows(self, op: str, table: str, where: list[str], params: list[Any],
              tail: str = "ORDER BY id") -> list[Mapping[str, Any]]:
        self.require_open(op)
        assert self._db is not None
        names = ("id", *COLUMNS[table])
        clause = ("WHERE " + " AND ".join(where)) if where else ""
        try:
            rows = self._db.execute(f"SELECT {', '.join(names)} FROM {table} {clause} {tail}",
                                    params).fetchall()
            return [dict(zip(names, row, strict=True)) for row in rows]
        except sqlite3.Error as exc:
            raise TransportError(f"{self!r}: {op}(): query on {table} of {self.path} failed "
                                 f"({exc}); busy timeout {self.busy_timeout} s") from exc

    def _parse(self, op: str, parse: Callable[[], R]) -> R:
        try:
            return parse()
        except (DecodeError, KeyError, TypeError, ValueError) as exc:
            raise TransportError(f"{self!r}: {op}(): a row of {self.path} is not the "
                                 f"platform's schema: {exc}") from None

    def mark(self) -> QrMark:
        """Where the ledger stands now (a scenario's start)."""
        self.require_open("mark")
        assert self._db is not None
        try:
            row = self._db.execute(
                f"SELECT (SELECT MAX(m) FROM (SELECT MAX(changed_seq) AS m FROM {ORDERS} "
                f"UNION ALL SELECT MAX(changed_seq) FROM {PAYMENTS})), "
                f"(SELECT MAX(id) FROM {REFUNDS}), (SELECT MAX(id) FROM {REQUESTS})").fetchone()
        except sqlite3.Error as exc:
            raise TransportError(f"{self!r}: mark(): {self.path}: {exc}") from exc
        return QrMark(*(int(v or 0) for v in row))

    def orders(self, since: QrMark | None = None, *, status: str | None = None,
               terminal_id: str | None = None, kind: str | None = None) -> list[QrOrder]:
        """Orders (as they stand now) that changed after *since*, matching every criterion
        given, in the order they were created."""
        where: list[str] = []
        params: list[Any] = []
        for col, value in (("status", status), ("terminal_id", terminal_id), ("kind", kind)):
            if value is not None:
                where.append(f"{col} = ?")
                params.append(str(value))
        if since is not None:
            where.append("changed_seq > ?")
            params.append(since.seq)
        rows = self._rows("orders", ORDERS, where, params)
        return self._parse("orders", lambda: [order_from_row(r) for r in rows])

    def order(self, *, out_trade_no: str | None = None, order_id: str | None = None
              ) -> QrOrder | None:
        """The newest order with this out_trade_no and/or order id, or None."""
        if out_trade_no is None and order_id is None:
            raise ConfigError(f"{self!r}: order() needs out_trade_no or order_id")
        where: list[str] = []
        params: list[Any] = []
        for col, value in (("out_trade_no", out_trade_no), ("order_id", order_id)):
            if value is not None:
                where.append(f"{col} = ?")
                params.append(value)
        rows = self._rows("order", ORDERS, where, params, "ORDER BY id DESC LIMIT 1")
        return self._parse("order", lambda: order_from_row(rows[0]) if rows else None)

    def payments(self, since: QrMark | None = None, *, order_id: str | None = None
                 ) -> list[QrPayment]:
        where: list[str] = []
        params: list[Any] = []
        if order_id is not None:
            where.append("order_id = ?")
            params.append(order_id)
        if since is not None:
            where.append("changed_seq > ?")
            params.append(since.seq)
        rows = self._rows("payments", PAYMENTS, where, params)
        return self._parse("payments", lambda: [payment_from_row(r) for r in rows])

    def refunds(self, since: QrMark | None = None, *, order_id: str | None = None
                ) -> list[QrRefund]:
        where: list[str] = []
        params: list[Any] = []
        if order_id is not None:
            where.append("order_id = ?")
            params.append(order_id)
        if since is not None:
            where.append("id > ?")
            params.append(since.refund_id)
        rows = self._rows("refunds", REFUNDS, where, params)
        return self._parse("refunds", lambda: [refund_from_row(r) for r in rows])

    def requests(self, since: QrMark | None = None, *, operation: str | None = None
                 ) -> list[QrRequestRecord]:
        """The requests terminals sent (what reached the platform), in order."""
        where: list[str] = []
        params: list[Any] = []
        if operation is not None:
            where.append("operation = ?")
            params.append(str(operation))
        if since is not None:
            where.append("id > ?")
            params.append(since.request_id)
        rows = self._rows("requests", REQUESTS, where, params)
        return self._parse("requests", lambda: [request_from_row(r) for r in rows])

    def is_nominal(self) -> bool:
        """The ledger file is readable and has the platform's tables."""
        if self._db is None:
            return False
        try:
            for table in (ORDERS, PAYMENTS, REFUNDS, REQUESTS):
                self._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
        except sqlite3.Error as exc:
            log.warning("%r: ledger not readable: %s", self, exc)
            return False
        return True

    def restore_nominal(self) -> None:
        """Reopen the file (the platform may have recreated it)."""
        self.close()
        self.open()
        if not self.is_nominal():
            raise DeviceStateError(f"{self!r}: restore_nominal(): {self.path} lacks the "
                                   f"platform's tables ({ORDERS}, {PAYMENTS}, {REFUNDS}, "
                                   f"{REQUESTS})")

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

class _QrControlSocket(Driver):
    """A connection to the platform's control socket at *path* (JSON lines, bounded waits)."""

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
        self._control = ControlChannel(repr(self), "the QR platform",
                                       "QR platform control socket",
                                       reply_timeout_s=self.reply_timeout_s,
                                       max_line=ANSWER_MAX,
                                       closed_text=lambda: f"socket {self.path}")

    def open(self) -> None:
        if self._control.connected:
            self.close()
        if not self.path.exists():
            raise TransportError(f"{self!r}: open(): control socket {self.path} does not exist "
                                 f"(is the QR platform running with --control {self.path}?)")
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

    def _request(self, operation: str, request: dict[str, Any]) -> dict[str, Any]:
        self.require_open(operation)
        if not self._control.connected:
            raise TransportError(f"{self!r}: {operation}() needs a connection to {self.path}")
        self._control.reply_timeout_s = self.reply_timeout_s
        try:
            answer = self._control.exchange(operation, request)
        except (TransportError, NoResponse):
            self._broken()
            raise
        except OSError as exc:
            self._broken()
            raise TransportError(f"{self!r}: {operation}(): control socket {self.path} "
                                 f"failed: {exc}") from exc
        if answer.get("ok") is not True:
            error = answer.get("error")
            code = answer.get("code")
            if request["op"] == "add_rule":
                raise ConfigError(f"{self!r}: add_rule(): the platform refused the rule: "
                                  f"{error}")
            known = {c.value: c for c in ErrorCode}
            if isinstance(code, str) and code in known:
                order = (_order(answer["order"], "answer.order") if "order" in answer
                         else None)
                raise WalletRefused(f"{self!r}: {operation}(): the platform refused: {code}: "
                                    f"{error}", known[code], order)
            raise InstrumentError(f"{self!r}: {operation}(): the platform refused "
                                  f"{request['op']!r}: {error}")
        return answer

    def _broken(self) -> None:
        """After a failed exchange the stream may hold half an answer: start afresh."""
        self._control.detach()
        self.state = SessionState.CLOSED

    def _parsed(self, op: str, parse: Callable[[], R]) -> R:
        return self._control.parsed(op, parse)

    def status(self) -> QrPlatformStatus:
        """Round trip (``ping``): the platform's pid, rules added, codes open, orders
        waiting."""
        answer = self._request("status", {"op": "ping"})
        return self._parsed("ping", lambda: QrPlatformStatus.from_json(answer))

    def _reconnect_and(self, operation: str, request: dict[str, Any]) -> dict[str, Any]:
        """A restore's request, reconnecting first when the connection broke (the platform
        was restarted)."""
        if self.state is not SessionState.OPEN:
            self.open()
        try:
            return self._request(operation, request)
        except (TransportError, NoResponse):
            self.open()
            return self._request(operation, request)

    def _nominal(self, test: Callable[[QrPlatformStatus], bool], what: str) -> bool:
        if self.state is not SessionState.OPEN:
            return False
        try:
            status = self.status()
        except (TransportError, NoResponse, InstrumentError, DeviceStateError) as exc:
            log.warning("%r: not nominal: %s", self, exc)
            return False
        if not test(status):
            log.info("%r: not nominal: %s (%s)", self, what, status)
            return False
        return True


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
    """The customer's wallet, played on the platform's control socket (see the module doc)."""

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

    def is_nominal(self) -> bool:
        """No payment code left open (False when closed or the platform does not answer)."""
        return self._nominal(lambda s: s.open_codes == 0, "payment codes still open")

    def restore_nominal(self) -> None:
        answer = self._reconnect_and("restore_nominal", {"op": "forget_codes"})
        self._parsed("forget_codes", lambda: as_int(required(answer, "forgotten", "answer",
                                                             "a count"), "answer.forgotten"))
        if not self.is_nominal():
            raise DeviceStateError(f"{self!r}: restore_nominal(): the platform still reports "
                                   f"open payment codes after 'forget_codes'")


def _int_list(raw: Mapping[str, Any], key: str, where: str) -> list[int]:
    value = as_list(required(raw, key, where, "a list"), f"{where}.{key}")
    return [as_int(item, f"{where}.{key}[{i}]") for i, item in enumerate(value)]


class SocketQrPlatformControl(_QrControlSocket):
    """Setting the platform's answers (rules) on its control socket (see the module doc)."""

    def add_rule(self, match: dict[str, object], answer: dict[str, object],
                 times: int | None = None) -> int:
        """Add a rule after those in force (keys: sim.qr.rules, docs/qr-platform.md); returns
        its id.  A rule the platform refuses is a ConfigError naming the key."""
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
                                                                   "an integer"), "answer.id"))
        described = ", ".join(f"{k}={v}" for k, v in {**match, **answer}.items())
        log.info("%r: QR platform rule #%d armed: %s%s", self, rule_id, described,
                 f" x{times}" if times else "")
        self.event_sink.publish(Source.QR, "rule", "armed",
                                f"QR platform rule #{rule_id}: {described}"
                                + (f" ({times} time(s))" if times else ""),
                                data={"rule": rule_id})
        return rule_id

    def clear_rules(self) -> None:
        """Remove every rule added over the control socket (the rules file's stay)."""
        reply = self._request("clear_rules", {"op": "clear_rules"})
        self._published_cleared(self._parsed("clear_rules",
                                             lambda: _int_list(reply, "cleared", "answer")))

    def _published_cleared(self, cleared: list[int]) -> None:
        for rule_id in cleared:
            self.event_sink.publish(Source.QR, "rule", "cleared", f"QR platform rule #{rule_id}",
                                    data={"rule": rule_id})

    def is_nominal(self) -> bool:
        """No rule added by a step still in force."""
        return self._nominal(lambda s: s.added_rules == 0, "rules added by a step in force")

    def restore_nominal(self) -> None:
        reply = self._reconnect_and("restore_nominal", {"op": "clear_rules"})
        self._published_cleared(self._parsed("clear_rules",
                                             lambda: _int_list(reply, "cleared", "answer")))
        if not self.is_nominal():
            raise DeviceStateError(f"{self!r}: restore_nominal(): the platform still reports "
                                   f"added rules after 'clear_rules'")


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

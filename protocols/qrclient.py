"""The terminal's client of the QR payment platform (:mod:`protocols.qr`): signed requests,
checked answers, and polling with a bound.

Pure where it can be: the request and the answer are :func:`protocols.qr.build_request` and
:func:`protocols.qr.parse_answer`; the transport is injected (:class:`QrTransport`: one
``post(path, body)`` call; :class:`HttpTransport` is a short HTTP/1.1 connection per request
with ``http.client``, every wait bounded); :class:`OrderPoller` decides when to query next and
when to give up with time passed in, so firmware driven by its own event loop can use it as
it is, and :func:`wait_for_payment` is the blocking loop around it.

:class:`QrPlatformClient` raises :class:`QrRefused` when the platform refuses (its code, its
message, the order when there is one), :class:`~protocols.errors.NoResponse` when no answer
came within the bound, :class:`~protocols.errors.TransportError` when the connection failed,
and :class:`~protocols.errors.ProtocolError` when the answer is not the platform's (a bad or
missing signature, an answer to another request).
"""

from __future__ import annotations

import http.client
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from protocols.digits import ascii_digits
from protocols.errors import NoResponse, ProtocolError, RigError, TransportError
from protocols.qr import (
    CONTENT_TYPE,
    ERRORS,
    MAX_BODY,
    Answer,
    ErrorCode,
    Operation,
    QrOrder,
    QrRefund,
    build_request,
    parse_answer,
)

log = logging.getLogger(__name__)

#: Longest answer body the client reads (bytes).
MAX_ANSWER = 4 * MAX_BODY


class QrRefused(RigError):
    """The platform refused a request: *code*, its *message*, and the *order* it concerns (a
    micropay refused for a short balance carries the failed order)."""

    def __init__(self, op: Operation, code: ErrorCode, message: str, *,
                 order: QrOrder | None = None, http_status: int = 200) -> None:
        super().__init__(f"QR platform refused {op}: {code.value}: {message}")
        self.op = op
        self.code = code
        self.message = message
        self.order = order
        self.http_status = http_status

    @property
    def unknown_outcome(self) -> bool:
        """The platform failed: the request may or may not have been carried out (query)."""
        return ERRORS[self.code].unknown_outcome


class QrTransport(Protocol):
    """One request, one answer: ``post(path, body) -> (HTTP status, body)``; raises
    NoResponse when the answer does not come within its bound, TransportError when the
    connection fails."""

    def post(self, path: str, body: bytes) -> tuple[int, bytes]: ...


class HttpTransport:
    """POST on a new HTTP/1.1 connection per request to *host*:*port*.  *timeout* bounds the
    connect and every read of the answer (s)."""

    def __init__(self, host: str, port: int, *, timeout: float = 5.0) -> None:
        if not timeout > 0:
            raise RigError(f"HttpTransport({host}:{port}): timeout must be above 0 s, got "
                           f"{timeout}")
        self.host = host
        self.port = port
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"HttpTransport({self.host}:{self.port})"

    def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request("POST", path, body=body, headers={"Content-Type": CONTENT_TYPE,
                                                           "Connection": "close"})
            resp = conn.getresponse()
            length = resp.getheader("Content-Length")
            if length is not None and ascii_digits(length) and int(length) > MAX_ANSWER:
                raise ProtocolError(f"{self!r}: POST {path}: an answer of {length} bytes; at "
                                    f"most {MAX_ANSWER}")
            data = resp.read(MAX_ANSWER + 1)
            if len(data) > MAX_ANSWER:
                raise ProtocolError(f"{self!r}: POST {path}: an answer longer than "
                                    f"{MAX_ANSWER} bytes")
            return resp.status, data
        except TimeoutError as exc:
            raise NoResponse(f"{self!r}: POST {path}: no answer within {self.timeout:.1f} s "
                             f"({exc})") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise TransportError(f"{self!r}: POST {path} failed: "
                                 f"{type(exc).__name__}: {exc}") from exc
        finally:
            conn.close()


def _nonce() -> str:
    return secrets.token_hex(16)


class QrPlatformClient:
    """The terminal's requests to the platform (see the module doc)."""

    def __init__(self, transport: QrTransport, *, terminal_id: str, merchant_id: str,
                 key: bytes, nonce_source: Callable[[], str] = _nonce,
                 clock: Callable[[], float] = time.time) -> None:
        self.transport = transport
        self.terminal_id = terminal_id
        self.merchant_id = merchant_id
        self._key = key
        self.nonce_source = nonce_source
        self.clock = clock

    def __repr__(self) -> str:
        return f"QrPlatformClient({self.terminal_id} via {self.transport!r})"

    def request(self, op: Operation, fields: dict[str, Any]) -> Answer:
        """Send one signed request and return the checked answer (a refusal included)."""
        nonce = self.nonce_source()
        path, body = build_request(op, fields, merchant_id=self.merchant_id,
                                   terminal_id=self.terminal_id, key=self._key, nonce=nonce,
                                   timestamp=int(self.clock()))
        status, raw = self.transport.post(path, body)
        answer = parse_answer(status, raw, self._key, where=f"{self!r}: {op} answer")
        if answer.signed and answer.body.get("nonce") != nonce:
            raise ProtocolError(f"{self!r}: {op} answer is bound to nonce "
                                f"{answer.body.get('nonce')!r}, the request's was {nonce!r} "
                                f"(an answer to another request)")
        log.debug("%r: %s → HTTP %d %s", self, op, status,
                  "ok" if answer.ok else answer.error)
        return answer

    def _order(self, op: Operation, fields: dict[str, Any]) -> Answer:
        answer = self.request(op, fields)
        if not answer.ok:
            assert answer.error is not None
            raise QrRefused(op, answer.error, answer.message, order=answer.order,
                            http_status=answer.http_status)
        if answer.order is None:
            raise ProtocolError(f"{self!r}: {op} answer is ok but carries no order")
        return answer

    @staticmethod
    def _ref(out_trade_no: str | None, order_id: str | None) -> dict[str, Any]:
        ref = {k: v for k, v in (("out_trade_no", out_trade_no), ("order_id", order_id)) if v}
        if not ref:
            raise ProtocolError("name the order by out_trade_no or order_id")
        return ref

    # -- operations --------------------------------------------------------------------------
    def create_order(self, out_trade_no: str, amount: int, description: str = "") -> QrOrder:
        """A merchant-presented order: its ``code_url`` is what the terminal shows as a QR."""
        fields: dict[str, Any] = {"out_trade_no": out_trade_no, "amount": amount}
        if description:
            fields["description"] = description
        order = self._order(Operation.CREATE, fields).order
        assert order is not None
        return order

    def query(self, *, out_trade_no: str | None = None, order_id: str | None = None
              ) -> QrOrder:
        order = self._order(Operation.QUERY, self._ref(out_trade_no, order_id)).order
        assert order is not None
        return order

    def close_order(self, *, out_trade_no: str | None = None, order_id: str | None = None
                    ) -> QrOrder:
        order = self._order(Operation.CLOSE, self._ref(out_trade_no, order_id)).order
        assert order is not None
        return order

    def cancel(self, *, out_trade_no: str | None = None, order_id: str | None = None
               ) -> QrOrder:
        """Revoke the order whatever its state (a paid one is given back, unless refunded)."""
        order = self._order(Operation.CANCEL, self._ref(out_trade_no, order_id)).order
        assert order is not None
        return order

    def refund(self, out_refund_no: str, amount: int, *, out_trade_no: str | None = None,
               order_id: str | None = None, reason: str = "") -> tuple[QrOrder, QrRefund]:
        fields: dict[str, Any] = {**self._ref(out_trade_no, order_id),
                                  "out_refund_no": out_refund_no, "amount": amount}
        if reason:
            fields["reason"] = reason
        answer = self._order(Operation.REFUND, fields)
        if answer.refund is None:
            raise ProtocolError(f"{self!r}: refund answer is ok but carries no refund")
        assert answer.order is not None
        return answer.order, answer.refund

    def micropay(self, out_trade_no: str, amount: int, auth_code: str,
                 description: str = "") -> QrOrder:
        """Charge the customer's payment code: SUCCESS, or USERPAYING (poll it with
        :func:`wait_for_payment`); a refusal raises :class:`QrRefused`."""
        fields: dict[str, Any] = {"out_trade_no": out_trade_no, "amount": amount,
                                  "auth_code": auth_code}
        if description:
            fields["description"] = description
        order = self._order(Operation.MICROPAY, fields).order
        assert order is not None
        return order


# -- polling ------------------------------------------------------------------------------------

@dataclass
class OrderPoller:
    """When to query a pending order next and when to give up, time passed in (monotonic
    seconds).  ``seen(now, order)`` returns the order once it is final (not NOTPAY or
    USERPAYING); ``failed(now, why)`` notes a query that got no usable answer."""

    started: float
    timeout_s: float
    interval_s: float = 1.0
    next_at: float = field(init=False)
    queries: int = 0
    last_status: str = "not queried yet"
    last_error: str | None = None

    def __post_init__(self) -> None:
        if not self.timeout_s > 0 or not self.interval_s > 0:
            raise RigError(f"OrderPoller: timeout_s and interval_s must be above 0, got "
                           f"{self.timeout_s} and {self.interval_s}")
        self.next_at = self.started

    @property
    def deadline(self) -> float:
        return self.started + self.timeout_s

    def expired(self, now: float) -> bool:
        return now >= self.deadline

    def wait_s(self, now: float) -> float:
        """Seconds until the next query is due (0: now), never past the deadline."""
        return max(0.0, min(self.next_at, self.deadline) - now)

    def seen(self, now: float, order: QrOrder) -> QrOrder | None:
        self.queries += 1
        self.last_status = order.status.value
        self.last_error = None
        self.next_at = now + self.interval_s
        return None if order.status.pending else order

    def failed(self, now: float, why: str) -> None:
        self.queries += 1
        self.last_error = why
        self.next_at = now + self.interval_s

    def give_up(self, what: str) -> NoResponse:
        err = f"; last error: {self.last_error}" if self.last_error else ""
        return NoResponse(f"{what}: still {self.last_status} after {self.timeout_s:g} s "
                          f"(bound), {self.queries} queries{err}")


def wait_for_payment(client: QrPlatformClient, *, out_trade_no: str | None = None,
                     order_id: str | None = None, timeout_s: float, interval_s: float = 1.0,
                     clock: Callable[[], float] = time.monotonic,
                     sleep: Callable[[float], None] = time.sleep) -> QrOrder:
    """Query the order until it is final (SUCCESS, PAYERROR, CLOSED, REVOKED, REFUND) and
    return it; NoResponse naming the bound and the last status when it is still pending after
    *timeout_s* (plus at most one request's own bound).  A query without a usable answer (no
    answer, connection failed, SYSTEM_ERROR) is retried at the next interval; another refusal
    is raised."""
    ref = QrPlatformClient._ref(out_trade_no, order_id)
    what = f"{client!r}: order {ref.get('order_id') or ref.get('out_trade_no')}"
    poller = OrderPoller(clock(), timeout_s, interval_s)
    while True:
        now = clock()
        if poller.expired(now):
            raise poller.give_up(what)
        wait = poller.wait_s(now)
        if wait > 0:
            sleep(wait)
            continue
        try:
            order = client.query(**ref)
        except QrRefused as exc:
            if not exc.unknown_outcome:
                raise
            poller.failed(clock(), str(exc))
            continue
        except (NoResponse, TransportError, ProtocolError) as exc:
            poller.failed(clock(), str(exc))
            continue
        final = poller.seen(clock(), order)
        if final is not None:
            return final


__all__ = [
    "HttpTransport",
    "MAX_ANSWER",
    "OrderPoller",
    "QrPlatformClient",
    "QrRefused",
    "QrTransport",
    "wait_for_payment",
]

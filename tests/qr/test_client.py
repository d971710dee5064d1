"""The terminal's platform client (protocols.qrclient): against the server on 127.0.0.1, with
injected transports that tamper or replay, the HTTP transport's bounds, and the poller with
time passed in."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from protocols.errors import NoResponse, ProtocolError, TransportError
from protocols.qr import ErrorCode, Operation, OrderKind, OrderStatus, QrOrder, Wallet
from protocols.qrclient import (
    HttpTransport,
    OrderPoller,
    QrPlatformClient,
    QrRefused,
    wait_for_payment,
)
from sim.qr.server import QrPlatformServer

from .conftest import KEY, KEY2, MID, TID

BOUND = 5.0


@pytest.fixture
def client(platform: QrPlatformServer) -> QrPlatformClient:
    return QrPlatformClient(HttpTransport(*platform.address, timeout=2.0), terminal_id=TID,
                            merchant_id=MID, key=KEY)


def test_every_operation(platform: QrPlatformServer, client: QrPlatformClient) -> None:
    order = client.create_order("C1", 1000, "noodles")
    assert order.status is OrderStatus.NOTPAY and order.description == "noodles"
    assert client.query(order_id=order.order_id) == order
    with platform.lock:
        platform.engine.scan(str(order.code_url), time.time(), wallet=Wallet.WECHAT)
    paid = client.query(out_trade_no="C1")
    assert paid.status is OrderStatus.SUCCESS
    after, refund = client.refund("RF1", 400, out_trade_no="C1", reason="one bowl back")
    assert after.status is OrderStatus.REFUND and refund.amount == 400
    assert refund.reason == "one bowl back"
    with pytest.raises(QrRefused) as err:
        client.refund("RF2", 601, order_id=order.order_id)
    assert err.value.code is ErrorCode.REFUND_EXCEEDED and not err.value.unknown_outcome
    assert err.value.order is not None and err.value.order.refunded_amount == 400
    assert client.create_order("C2", 5).status is OrderStatus.NOTPAY
    assert client.close_order(out_trade_no="C2").status is OrderStatus.CLOSED
    assert client.cancel(out_trade_no="C2").status is OrderStatus.REVOKED
    with platform.lock:
        code = platform.engine.issue_code(Wallet.ALIPAY, time.time()).code
    charged = client.micropay("C3", 250, code, "tea")
    assert charged.status is OrderStatus.SUCCESS and charged.kind is OrderKind.MICROPAY


def test_refusals_before_the_terminal_is_known_are_unsigned(platform: QrPlatformServer
                                                            ) -> None:
    stranger = QrPlatformClient(HttpTransport(*platform.address), terminal_id="99999999",
                                merchant_id=MID, key=KEY)
    with pytest.raises(QrRefused) as err:
        stranger.query(out_trade_no="x")
    assert err.value.code is ErrorCode.UNKNOWN_TERMINAL and err.value.http_status == 401
    wrong_key = QrPlatformClient(HttpTransport(*platform.address), terminal_id=TID,
                                 merchant_id=MID, key=KEY2)
    with pytest.raises(QrRefused, match="SIGN_ERROR"):
        wrong_key.create_order("x", 1)


def test_a_platform_failure_is_an_unknown_outcome(platform: QrPlatformServer,
                                                  client: QrPlatformClient) -> None:
    from sim.qr.rules import QrRule

    with platform.lock:
        platform.engine.add_rule(QrRule.model_validate({"answer": {"error": "SYSTEM_ERROR"},
                                                        "times": 1}))
    with pytest.raises(QrRefused) as err:
        client.create_order("F1", 1)
    assert err.value.code is ErrorCode.SYSTEM_ERROR and err.value.unknown_outcome
    assert err.value.http_status == 500


class Relay:
    """A transport that hands the request to the real one and lets a test spoil the answer."""

    def __init__(self, inner: HttpTransport) -> None:
        self.inner = inner
        self.last: tuple[int, bytes] | None = None
        self.replay: tuple[int, bytes] | None = None
        self.tamper = False

    def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.replay is not None:
            return self.replay
        status, raw = self.inner.post(path, body)
        self.last = (status, raw)
        if self.tamper:
            answer = json.loads(raw)
            answer["order"]["status"] = "SUCCESS"
            raw = json.dumps(answer).encode()
        return status, raw


def test_tampered_and_replayed_answers_are_not_the_platforms(platform: QrPlatformServer
                                                             ) -> None:
    relay = Relay(HttpTransport(*platform.address))
    client = QrPlatformClient(relay, terminal_id=TID, merchant_id=MID, key=KEY)
    client.create_order("P1", 9)
    relay.tamper = True
    with pytest.raises(ProtocolError, match="signature does not verify"):
        client.query(out_trade_no="P1")
    relay.tamper = False
    client.query(out_trade_no="P1")
    relay.replay = relay.last
    with pytest.raises(ProtocolError, match="an answer to another request"):
        client.query(out_trade_no="P1")


def test_http_transport_bounds(unused_port: int) -> None:
    with pytest.raises(TransportError, match=r"POST /v1/query failed: ConnectionRefusedError"):
        HttpTransport("127.0.0.1", unused_port, timeout=1.0).post("/v1/query", b"{}")
    with pytest.raises(Exception, match="timeout must be above 0"):
        HttpTransport("127.0.0.1", 1, timeout=0)


@pytest.fixture
def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def silent_server() -> Iterator[tuple[str, int]]:
    """Accepts connections and never answers."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield srv.getsockname()[:2]
    finally:
        stop.set()
        thread.join(BOUND)
        for conn in held:
            conn.close()
        srv.close()


def test_no_answer_is_no_response_naming_the_bound(silent_server: tuple[str, int]) -> None:
    start = time.monotonic()
    with pytest.raises(NoResponse, match=r"POST /v1/query: no answer within 0.3 s"):
        HttpTransport(*silent_server, timeout=0.3).post("/v1/query", b"{}")
    assert time.monotonic() - start < BOUND


# -- polling -------------------------------------------------------------------------------------

def _order(status: OrderStatus) -> QrOrder:
    return QrOrder(order_id="O1", out_trade_no="T1", merchant_id=MID, terminal_id=TID,
                   kind=OrderKind.MICROPAY, amount=1, status=status)


def test_the_poller_with_time_passed_in() -> None:
    poller = OrderPoller(started=100.0, timeout_s=10.0, interval_s=2.0)
    assert poller.wait_s(100.0) == 0.0 and not poller.expired(109.9)
    assert poller.seen(100.5, _order(OrderStatus.USERPAYING)) is None
    assert poller.wait_s(101.0) == pytest.approx(1.5)
    poller.failed(102.5, "no answer")
    assert poller.wait_s(103.0) == pytest.approx(1.5) and poller.last_error == "no answer"
    poller.failed(108.5, "reset")
    assert poller.wait_s(109.0) == pytest.approx(1.0)  # never past the deadline
    assert poller.expired(110.0)
    message = str(poller.give_up("order O1"))
    assert message == ("order O1: still USERPAYING after 10 s (bound), 3 queries; last "
                       "error: reset")
    done = poller.seen(109.6, _order(OrderStatus.SUCCESS))
    assert done is not None and done.status is OrderStatus.SUCCESS
    with pytest.raises(Exception, match="timeout_s and interval_s must be above 0"):
        OrderPoller(0.0, 0.0)


class Scripted(QrPlatformClient):
    """A client whose queries answer from a script (a status, or an exception)."""

    def __init__(self, script: list[OrderStatus | Exception]) -> None:
        super().__init__(HttpTransport("127.0.0.1", 9), terminal_id=TID, merchant_id=MID,
                         key=KEY)
        self.script = script

    def query(self, *, out_trade_no: str | None = None, order_id: str | None = None
              ) -> QrOrder:
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(step, Exception):
            raise step
        return _order(step)


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s


def test_wait_for_payment_polls_through_transient_failures() -> None:
    t = FakeTime()
    client = Scripted([OrderStatus.USERPAYING, NoResponse("late"),
                       QrRefused(Operation.QUERY, ErrorCode.SYSTEM_ERROR, "down"),
                       TransportError("reset"), OrderStatus.SUCCESS])
    order = wait_for_payment(client, out_trade_no="T1", timeout_s=30, interval_s=2,
                             clock=t.clock, sleep=t.sleep)
    assert order.status is OrderStatus.SUCCESS and t.slept == [2, 2, 2, 2]


def test_wait_for_payment_gives_up_at_the_bound() -> None:
    t = FakeTime()
    client = Scripted([OrderStatus.USERPAYING])
    with pytest.raises(NoResponse, match=r"order T1: still USERPAYING after 7 s \(bound\), "
                                         r"4 queries"):
        wait_for_payment(client, out_trade_no="T1", timeout_s=7, interval_s=2,
                         clock=t.clock, sleep=t.sleep)
    assert t.now == 7


def test_wait_for_payment_raises_a_real_refusal() -> None:
    client = Scripted([QrRefused(Operation.QUERY, ErrorCode.ORDER_NOT_EXIST, "no")])
    t = FakeTime()
    with pytest.raises(QrRefused, match="ORDER_NOT_EXIST"):
        wait_for_payment(client, order_id="O1", timeout_s=5, clock=t.clock, sleep=t.sleep)


def test_wait_for_payment_on_the_real_platform(platform: QrPlatformServer,
                                               client: QrPlatformClient) -> None:
    with platform.lock:
        code = platform.engine.issue_code(Wallet.WECHAT, time.time(), password=True).code
    assert client.micropay("U1", 700, code).status is OrderStatus.USERPAYING

    def customer_types_password() -> None:
        time.sleep(0.3)
        with platform.lock:
            platform.engine.confirm(time.time(), out_trade_no="U1")

    typing = threading.Thread(target=customer_types_password)
    typing.start()
    order = wait_for_payment(client, out_trade_no="U1", timeout_s=BOUND, interval_s=0.1)
    typing.join(BOUND)
    assert order.status is OrderStatus.SUCCESS and order.paid_amount == 700

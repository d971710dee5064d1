"""The platform's HTTP server (sim.qr.server) on 127.0.0.1, ephemeral port: every answer is the
platform's JSON (bad method, path, body, framing included), keep-alive, rule delays and drops,
expiry by the ticker, and every request in the ledger."""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import pytest

from protocols.qr import MAX_BODY, Operation, verify
from sim.qr.rules import QrRule
from sim.qr.server import QrPlatformServer

from .conftest import KEY, signed

BOUND = 5.0


def _raw(platform: QrPlatformServer, data: bytes, *, read_all: bool = False) -> bytes:
    """Send *data* as it is; what comes back until the first whole answer (or, with
    *read_all*, until the server closes), bounded."""
    with socket.create_connection(platform.address, timeout=BOUND) as sock:
        sock.sendall(data)
        chunks = []
        deadline = time.monotonic() + BOUND
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            if not read_all and b"\r\n\r\n" in b"".join(chunks):
                head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
                length = int(_headers(head).get("content-length", "0"))
                if len(body) >= length:
                    break
        return b"".join(chunks)


def _headers(head: bytes) -> dict[str, str]:
    lines = head.decode("latin-1").split("\r\n")[1:]
    return {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines)}


def _answer(raw: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    headers = _headers(head)
    length = int(headers["content-length"])
    return status, headers, json.loads(body[:length])


def _post(path: str, body: bytes, extra: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{extra}\r\n").encode() + body


def test_a_signed_request_gets_a_signed_answer(platform: QrPlatformServer) -> None:
    path, body = signed(Operation.CREATE, {"out_trade_no": "S1", "amount": 100})
    status, headers, answer = _answer(_raw(platform, _post(path, body, "Connection: close\r\n")))
    assert status == 200 and headers["content-type"] == "application/json; charset=utf-8"
    assert answer["ok"] and answer["order"]["status"] == "NOTPAY" and verify(answer, KEY)


@pytest.mark.parametrize(("request_bytes", "status", "code"), [
    (b"GET /v1/query HTTP/1.1\r\nHost: x\r\n\r\n", 405, "METHOD_NOT_ALLOWED"),
    (b"PUT /v1/query HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405,
     "METHOD_NOT_ALLOWED"),
    (b"BREW /v1/query HTTP/1.1\r\nHost: x\r\n\r\n", 405, "METHOD_NOT_ALLOWED"),
    (_post("/v1/nothing", b"{}"), 404, "NOT_FOUND"),
    (_post("/v1/create", b"{oops"), 400, "BAD_REQUEST"),
    (_post("/v1/create", b"[1]"), 400, "BAD_REQUEST"),
    (_post("/v1/create", b'{"terminal_id":"10000001","merchant_id":"898100012340001"}'), 401,
     "SIGN_ERROR"),
    (b"POST /v1/create HTTP/1.1\r\nHost: x\r\n\r\n", 400, "BAD_REQUEST"),
    (b"POST /v1/create HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 400,
     "BAD_REQUEST"),
    (b"POST /v1/create HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
     400, "BAD_REQUEST"),
    (f"POST /v1/create HTTP/1.1\r\nHost: x\r\nContent-Length: {MAX_BODY + 1}\r\n\r\n".encode(),
     413, "BODY_TOO_LARGE"),
    # '²'.isdigit() is True, int('²') raises ValueError: the handler thread died unanswered
    (b"POST /v1/create HTTP/1.1\r\nHost: x\r\nContent-Length: \xb2\r\n\r\n", 400,
     "BAD_REQUEST"),
    # int() of more than 4300 digits raises ValueError too
    (b"POST /v1/create HTTP/1.1\r\nHost: x\r\nContent-Length: " + b"1" * 4301 + b"\r\n\r\n",
     413, "BODY_TOO_LARGE"),
    (b"garbage\r\n\r\n", 400, "BAD_REQUEST"),
    (b"POST /v1/create HTTP/9.9\r\n\r\n", 400, "BAD_REQUEST"),
])
def test_bad_requests_get_json_errors(platform: QrPlatformServer, request_bytes: bytes,
                                      status: int, code: str) -> None:
    got_status, headers, answer = _answer(_raw(platform, request_bytes))
    assert (got_status, answer["ok"], answer["error"]) == (status, False, code), answer
    assert headers["content-type"].startswith("application/json")
    assert "Traceback" not in answer["message"]


def test_refusals_are_in_the_ledger(platform: QrPlatformServer) -> None:
    _raw(platform, b"GET /v1/query HTTP/1.1\r\nHost: x\r\n\r\n")
    _raw(platform, _post("/v1/create", b"{oops"))
    ledger = platform.engine.ledger
    assert ledger is not None
    from rigs.qr import SqliteQrPlatformLedger

    rig = SqliteQrPlatformLedger("qr", ledger.path)  # type: ignore[attr-defined]
    rig.open()
    try:
        assert [(r.operation, r.result, r.http_status) for r in rig.requests()] == [
            ("query", "METHOD_NOT_ALLOWED", 405), ("create", "BAD_REQUEST", 400)]
    finally:
        rig.close()


def test_keep_alive_serves_requests_in_order(platform: QrPlatformServer) -> None:
    first = _post(*signed(Operation.CREATE, {"out_trade_no": "K1", "amount": 1}))
    second = _post(*signed(Operation.QUERY, {"out_trade_no": "K1"}))
    with socket.create_connection(platform.address, timeout=BOUND) as sock:
        sock.sendall(first + second)
        data = b""
        deadline = time.monotonic() + BOUND
        while data.count(b"HTTP/1.1 200") < 2 or not data.rstrip().endswith(b"}"):
            assert time.monotonic() < deadline, data
            data += sock.recv(65536)
    assert data.count(b"HTTP/1.1 200 OK") == 2 and b"Connection: close" not in data


def test_a_rule_delays_the_answer(platform: QrPlatformServer) -> None:
    with platform.lock:
        platform.engine.add_rule(QrRule.model_validate(
            {"match": {"operation": "create"}, "answer": {"delay_s": 0.4}, "times": 1}))
    start = time.monotonic()
    status, _, answer = _answer(_raw(platform, _post(*signed(
        Operation.CREATE, {"out_trade_no": "D1", "amount": 1}), "Connection: close\r\n")))
    assert status == 200 and answer["ok"] and time.monotonic() - start >= 0.4


def test_a_dropped_answer_never_comes(platform: QrPlatformServer) -> None:
    with platform.lock:
        platform.engine.add_rule(QrRule.model_validate(
            {"match": {"operation": "create"}, "answer": {"drop": True}, "times": 1}))
    with socket.create_connection(platform.address, timeout=1.0) as sock:
        sock.sendall(_post(*signed(Operation.CREATE, {"out_trade_no": "X1", "amount": 1})))
        with pytest.raises(TimeoutError):
            sock.recv(100)
    with platform.lock:  # carried out all the same
        assert [o.out_trade_no for o in platform.engine.orders.values()] == ["X1"]


def test_the_ticker_expires_orders_without_requests(terminals: dict[str, Any],
                                                     short_dir: Any) -> None:
    from sim.qr.engine import QrPlatformEngine

    engine = QrPlatformEngine(terminals, order_ttl_s=0.2)
    with QrPlatformServer(engine, "127.0.0.1", 0, tick_s=0.05) as srv:
        _raw(srv, _post(*signed(Operation.CREATE, {"out_trade_no": "E1", "amount": 1}),
                        "Connection: close\r\n"))
        deadline = time.monotonic() + BOUND
        while True:
            with srv.lock:
                (order,) = engine.orders.values()
                if order.status.value == "CLOSED":
                    break
            assert time.monotonic() < deadline, "not expired within the bound"
            time.sleep(0.05)


def test_an_idle_connection_is_closed(terminals: dict[str, Any]) -> None:
    from sim.qr.engine import QrPlatformEngine

    with QrPlatformServer(QrPlatformEngine(terminals), "127.0.0.1", 0,
                          idle_timeout=0.3) as srv:
        with socket.create_connection(srv.address, timeout=BOUND) as sock:
            sock.sendall(b"POST /v1/create HTTP/1.1\r\nContent-Length: 10\r\n\r\n{")
            start = time.monotonic()
            assert sock.recv(100) == b""  # closed, no answer to half a request
            assert time.monotonic() - start < BOUND


def test_address_needs_a_started_server(terminals: dict[str, Any]) -> None:
    from protocols.errors import SimError, TransportError
    from sim.qr.engine import QrPlatformEngine

    srv = QrPlatformServer(QrPlatformEngine(terminals), "127.0.0.1", 0)
    with pytest.raises(SimError, match=r"address needs a started server; state is STOPPED"):
        _ = srv.address
    srv.stop()  # nothing to stop
    with srv:
        busy = QrPlatformServer(QrPlatformEngine(terminals), *srv.address)
        with pytest.raises(TransportError, match="cannot listen on 127.0.0.1"):
            busy.start()

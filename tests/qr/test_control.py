"""The platform's control socket (sim.qr.control): the ops as a pure function, then over a real
unix socket (JSON lines, seq echoed, bad lines answered, over-long lines end the session)."""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import Any

import pytest

from protocols.qr import Operation, wallet_of
from sim.qr.control import CONTROL_OPS, ControlSession, handle_control
from sim.qr.engine import QrPlatformEngine
from sim.qr.server import QrPlatformServer

from .conftest import T0, call

BOUND = 5.0


def ctl(engine: QrPlatformEngine, request: object, now: float = T0) -> dict[str, Any]:
    return handle_control(engine, request, now)


def test_ops_table() -> None:
    assert set(CONTROL_OPS) == {"ping", "add_rule", "clear_rules", "rules", "new_code",
                                "forget_codes", "pay", "confirm", "refuse", "order", "reset"}


def test_ping_counts(engine: QrPlatformEngine) -> None:
    answer = ctl(engine, {"op": "ping", "seq": 7})
    assert answer["ok"] and answer["seq"] == 7
    assert {k: answer[k] for k in ("added_rules", "open_codes", "user_paying",
                                   "pending_orders")} == dict.fromkeys(
        ("added_rules", "open_codes", "user_paying", "pending_orders"), 0)


def test_the_wallet_pays_a_native_order_with_its_password(engine: QrPlatformEngine) -> None:
    order = call(engine, Operation.CREATE, {"out_trade_no": "T1", "amount": 800}).order
    paid = ctl(engine, {"op": "pay", "code_url": order["code_url"], "wallet": "alipay",
                        "password": True, "buyer_id": "carol"})
    assert paid["ok"] and paid["order"]["status"] == "USERPAYING"
    assert ctl(engine, {"op": "ping"})["user_paying"] == 1
    confirmed = ctl(engine, {"op": "confirm", "out_trade_no": "T1"})
    assert confirmed["order"]["status"] == "SUCCESS"
    assert confirmed["order"]["buyer_id"] == "carol"
    again = ctl(engine, {"op": "pay", "code_url": order["code_url"], "wallet": "alipay"})
    assert again == {"ok": False, "code": "ORDER_PAID", "order": again["order"],
                     "error": again["error"]}
    assert "is SUCCESS" in again["error"]
    assert ctl(engine, {"op": "order", "order_id": order["order_id"]})["order"]["status"] == \
        "SUCCESS"


def test_new_codes_and_refuse(engine: QrPlatformEngine) -> None:
    answer = ctl(engine, {"op": "new_code", "wallet": "wechat", "password": True,
                          "balance_minor": 10_000})
    code = answer["code"]
    assert wallet_of(code["auth_code"]) is not None and code["password"] is True
    assert code["balance_minor"] == 10_000 and code["buyer_id"] == "buyer-0001"
    assert ctl(engine, {"op": "ping"})["open_codes"] == 1
    pay = call(engine, Operation.MICROPAY, {"out_trade_no": "M1", "amount": 100,
                                            "auth_code": code["auth_code"]})
    assert pay.order["status"] == "USERPAYING"
    refused = ctl(engine, {"op": "refuse"})
    assert refused["order"]["status"] == "PAYERROR"
    ctl(engine, {"op": "new_code", "wallet": "unionpay"})
    assert ctl(engine, {"op": "forget_codes"}) == {"ok": True, "forgotten": 1}


def test_rules_over_control(engine: QrPlatformEngine) -> None:
    added = ctl(engine, {"op": "add_rule", "rule": {"match": {"operation": "query"},
                                                    "answer": {"delay_s": 1}, "times": 2}})
    assert added == {"ok": True, "id": 1}
    assert ctl(engine, {"op": "rules"})["rules"] == [
        {"id": 1, "source": "control", "used": 0, "spent": False,
         "match": {"operation": "query"}, "answer": {"delay_s": 1.0}, "times": 2}]
    assert ctl(engine, {"op": "ping"})["added_rules"] == 1
    bad = ctl(engine, {"op": "add_rule", "rule": {"answer": {"error": "NOPE"}}})
    assert not bad["ok"] and "answer.error" in bad["error"] and "code" not in bad
    ctl(engine, {"op": "new_code", "wallet": "wechat"})
    assert ctl(engine, {"op": "reset"}) == {"ok": True, "cleared": [1], "forgotten": 1}


@pytest.mark.parametrize(("request_", "message"), [
    ([1], "a request is a JSON object, got list"),
    ({"op": "fly"}, "unknown op 'fly'; expected one of ping, add_rule"),
    ({"op": "add_rule"}, 'a request needs "rule"'),
    ({"op": "new_code", "wallet": "paypal"}, "'wallet' must be one of wechat, alipay"),
    ({"op": "new_code", "wallet": "wechat", "password": "yes"}, "'password' must be true"),
    ({"op": "new_code", "wallet": "wechat", "balance_minor": -1}, "'balance_minor' must be"),
    ({"op": "pay", "wallet": "wechat"}, "'code_url' is required"),
    ({"op": "order"}, "give 'order_id' or 'out_trade_no'"),
    ({"op": "confirm", "order_id": 5}, "'order_id' must be a non-empty string"),
])
def test_bad_requests_are_answered(engine: QrPlatformEngine, request_: object,
                                   message: str) -> None:
    answer = ctl(engine, request_)
    assert answer["ok"] is False and message in answer["error"] and "code" not in answer


def test_refusals_carry_the_platforms_code(engine: QrPlatformEngine) -> None:
    answer = ctl(engine, {"op": "confirm", "order_id": "nope"})
    assert answer["code"] == "ORDER_NOT_EXIST" and "order" not in answer


def test_session_keeps_going_after_a_bad_line(engine: QrPlatformEngine) -> None:
    session = ControlSession(engine, threading.Lock(), clock=lambda: T0)
    answers = session.feed(b'{"op":"ping","seq":1}\nnot json\n{"op":"ping",')
    assert [a["ok"] for a in answers] == [True, False] and "not JSON" in answers[1]["error"]
    assert session.feed(b'"seq":2}\n')[0]["seq"] == 2 and not session.broken
    session.feed(b"x" * (64 * 1024 + 1))
    assert session.broken


def _exchange(sock: socket.socket, request: dict[str, Any]) -> dict[str, Any]:
    sock.sendall(json.dumps(request).encode() + b"\n")
    data = b""
    deadline = time.monotonic() + BOUND
    while not data.endswith(b"\n"):
        assert time.monotonic() < deadline
        chunk = sock.recv(65536)
        assert chunk, "control socket closed"
        data += chunk
    return dict(json.loads(data))


def test_over_the_unix_socket(platform: QrPlatformServer) -> None:
    assert platform.control is not None
    path = platform.control.path
    assert path.stat().st_mode & 0o777 == 0o600
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(BOUND)
        sock.connect(str(path))
        assert _exchange(sock, {"op": "ping", "seq": 3})["seq"] == 3
        code = _exchange(sock, {"op": "new_code", "wallet": "alipay"})["code"]["auth_code"]
        assert len(code) == 18
        sock.sendall(b"y" * (70 * 1024))
        end = time.monotonic() + BOUND
        tail = b""
        while time.monotonic() < end:
            chunk = sock.recv(65536)
            if not chunk:
                break
            tail += chunk
        assert b"longer than" in tail  # answered, then the session ends


def test_a_stale_socket_file_is_replaced_and_a_file_is_not(platform: QrPlatformServer,
                                                           short_dir: Any) -> None:
    from protocols.errors import SimError, TransportError
    from sim.qr.control import ControlServer

    plain = short_dir / "plain"
    plain.write_text("x")
    with pytest.raises(TransportError, match="exists and is not a socket"):
        ControlServer(platform.engine, plain, threading.Lock()).start()
    with pytest.raises(SimError, match="a unix socket path has at most 107"):
        ControlServer(platform.engine, "/tmp/" + "x" * 120, threading.Lock())

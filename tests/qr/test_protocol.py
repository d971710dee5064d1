"""protocols.qr: the vocabulary tables are complete, signing is pinned, payment code shapes,
requests built and answers parsed with errors naming the field."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest

from protocols.errors import DecodeError, ProtocolError
from protocols.qr import (
    ERRORS,
    OPERATIONS,
    PATHS,
    RULE_ERRORS,
    TRANSITIONS,
    WALLETS,
    ErrorCode,
    Operation,
    OrderKind,
    OrderStatus,
    QrOrder,
    QrRefund,
    Wallet,
    build_request,
    canonical,
    encode_body,
    error_body,
    mask_code,
    parse_answer,
    sign,
    signed_body,
    verify,
    wallet_of,
)
from sim.qr.engine import HANDLERS

from .conftest import KEY, MID, TID

ORDER = QrOrder(order_id="20260101000001aabbcc", out_trade_no="T1", merchant_id=MID,
                terminal_id=TID, kind=OrderKind.NATIVE, amount=1234, status=OrderStatus.NOTPAY,
                code_url="qrsim://pay/00", created_at="2026-01-01T00:00:00.000",
                expires_at="2026-01-01T00:02:00.000")


def test_tables_cover_every_member() -> None:
    assert set(TRANSITIONS) == set(OrderStatus)
    assert set(ERRORS) == set(ErrorCode)
    assert set(OPERATIONS) == set(Operation) == set(HANDLERS)
    assert set(WALLETS) == set(Wallet)
    assert RULE_ERRORS <= set(ErrorCode)
    assert PATHS == {f"/v1/{op.value}": op for op in Operation}
    # final statuses: nothing but a revocation (or a further refund) leaves them
    assert TRANSITIONS[OrderStatus.REVOKED] == frozenset()
    assert all(not s.pending for s in TRANSITIONS[OrderStatus.USERPAYING]
               if s is not OrderStatus.USERPAYING)


def test_canonical_form_and_signature_are_pinned() -> None:
    body = {"terminal_id": TID, "amount": 100, "merchant_id": MID, "nonce": "abcdefgh",
            "timestamp": 1, "description": "咖啡", "sign": "ignored", "x": {"b": 1, "a": [2]}}
    assert canonical(body) == ('{"amount":100,"description":"咖啡","merchant_id":"'
                               + MID + '","nonce":"abcdefgh","terminal_id":"' + TID
                               + '","timestamp":1,"x":{"a":[2],"b":1}}').encode()
    expected = hmac.new(KEY, canonical(body), hashlib.sha256).hexdigest().upper()
    assert sign(body, KEY) == expected and len(expected) == 64
    good = signed_body(body, KEY)
    assert good["sign"] == expected and verify(good, KEY)
    assert verify({**good, "sign": expected.lower()}, KEY)  # hex case does not matter
    assert not verify({**good, "amount": 101}, KEY)
    assert not verify(good, bytes(32))
    assert not verify({k: v for k, v in good.items() if k != "sign"}, KEY)


def test_the_documented_example_signature() -> None:
    """docs/qr-platform.md shows this canonical body and signature."""
    body = {"merchant_id": MID, "terminal_id": TID, "nonce": "5K8264ILTKCH16CQ",
            "timestamp": 1790000000, "out_trade_no": "20260314000123", "amount": 1888,
            "description": "午餐"}
    doc = (Path(__file__).resolve().parents[2] / "docs/qr-platform.md").read_text()
    assert f"canonical: {canonical(body).decode()}" in doc
    assert f"sign:      {sign(body, KEY)}" in doc


def test_a_signed_body_holds_no_float() -> None:
    with pytest.raises(ProtocolError, match=r"body.amount: .*no floating-point.*12.5"):
        canonical({"amount": 12.5})
    with pytest.raises(ProtocolError, match=r"body.x\[1\]"):
        canonical({"x": [1, 0.5]})
    assert not verify({"amount": 1.0, "sign": "00"}, KEY)


@pytest.mark.parametrize(("code", "wallet"), [
    ("134567890123456789", Wallet.WECHAT), ("104567890123456789", Wallet.WECHAT),
    ("154567890123456789", Wallet.WECHAT), ("284567890123456789", Wallet.ALIPAY),
    ("254567890123456789", Wallet.ALIPAY), ("304567890123456789", Wallet.ALIPAY),
    ("6212345678901234567", Wallet.UNIONPAY),
    ("164567890123456789", None), ("094567890123456789", None), ("31456789012345678", None),
    ("13456789012345678", None), ("1345678901234567890", None), ("13456789012345678a", None),
    ("", None),
])
def test_payment_code_shapes(code: str, wallet: Wallet | None) -> None:
    assert wallet_of(code) is wallet


def test_mask_code_keeps_first_six_and_last_four() -> None:
    assert mask_code("134567890123456789") == "134567********6789"


def test_build_request_signs_and_checks_fields() -> None:
    path, raw = build_request(Operation.CREATE, {"out_trade_no": "T1", "amount": 5},
                              merchant_id=MID, terminal_id=TID, key=KEY, nonce="n1234567",
                              timestamp=99)
    body = json.loads(raw)
    assert path == "/v1/create"
    assert body == {"merchant_id": MID, "terminal_id": TID, "nonce": "n1234567",
                    "timestamp": 99, "out_trade_no": "T1", "amount": 5,
                    "sign": sign(body, KEY)}
    with pytest.raises(ProtocolError, match="create request: missing amount"):
        build_request(Operation.CREATE, {"out_trade_no": "T1"}, merchant_id=MID,
                      terminal_id=TID, key=KEY, nonce="n1234567", timestamp=1)
    with pytest.raises(ProtocolError, match="query request: missing out_trade_no or order_id"):
        build_request(Operation.QUERY, {}, merchant_id=MID, terminal_id=TID, key=KEY,
                      nonce="n1234567", timestamp=1)
    with pytest.raises(ProtocolError, match="unknown field.*auth_code"):
        build_request(Operation.CREATE, {"out_trade_no": "T", "amount": 1, "auth_code": "1"},
                      merchant_id=MID, terminal_id=TID, key=KEY, nonce="n1234567", timestamp=1)
    with pytest.raises(ProtocolError, match="nonce 'short'"):
        build_request(Operation.QUERY, {"order_id": "x"}, merchant_id=MID, terminal_id=TID,
                      key=KEY, nonce="short", timestamp=1)


def test_order_and_refund_round_trip_through_json() -> None:
    assert QrOrder.from_json(ORDER.to_json()) == ORDER
    paid = QrOrder(**{**ORDER.__dict__, "status": OrderStatus.REFUND, "wallet": Wallet.ALIPAY,
                      "buyer_id": "b", "paid_amount": 1234, "refunded_amount": 34,
                      "auth_code": mask_code("284567890123456789")})
    assert QrOrder.from_json(paid.to_json()) == paid
    assert paid.refundable == 1200 and ORDER.refundable == 0
    refund = QrRefund("R1", "RF1", ORDER.order_id, "T1", 34, created_at="t")
    assert QrRefund.from_json(refund.to_json()) == refund


@pytest.mark.parametrize(("change", "message"), [
    ({"status": "PAID"}, r"order.status must be one of NOTPAY, .*got 'PAID'"),
    ({"amount": -1}, r"order.amount must be an integer >= 0"),
    ({"amount": True}, r"order.amount must be an integer"),
    ({"wallet": "paypal"}, r"order.wallet must be one of wechat"),
    ({"order_id": 7}, r"order.order_id must be a string"),
])
def test_order_decode_errors_name_the_field(change: dict[str, object], message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        QrOrder.from_json({**ORDER.to_json(), **change})
    raw = ORDER.to_json()
    del raw["kind"]
    with pytest.raises(DecodeError, match=r"order.kind is missing"):
        QrOrder.from_json(raw)


def _answer(body: dict[str, object], *, sign_it: bool = True) -> bytes:
    return encode_body(signed_body(body, KEY) if sign_it else body)


def test_parse_answer_checks_the_signature() -> None:
    ok = {"ok": True, "order": ORDER.to_json(), "nonce": "n1234567"}
    answer = parse_answer(200, _answer(ok), KEY)
    assert answer.ok and answer.order == ORDER and answer.signed
    with pytest.raises(ProtocolError, match="without a signature"):
        parse_answer(200, _answer(ok, sign_it=False), KEY)
    tampered = json.loads(_answer(ok))
    tampered["order"]["amount"] = 1
    with pytest.raises(ProtocolError, match="signature does not verify"):
        parse_answer(200, encode_body(tampered), KEY)
    with pytest.raises(ProtocolError, match="signature does not verify"):
        parse_answer(200, _answer(ok), bytes(32))


def test_parse_answer_of_refusals() -> None:
    unsigned = parse_answer(401, encode_body(error_body(ErrorCode.SIGN_ERROR, "bad")), KEY)
    assert not unsigned.ok and unsigned.error is ErrorCode.SIGN_ERROR
    assert unsigned.message == "bad" and not unsigned.signed and unsigned.http_status == 401
    with_order = parse_answer(200, _answer(error_body(ErrorCode.NOT_ENOUGH, "short",
                                                      order=ORDER)), KEY)
    assert with_order.error is ErrorCode.NOT_ENOUGH and with_order.order == ORDER
    with pytest.raises(DecodeError, match="'error' must be one of the platform's codes"):
        parse_answer(400, encode_body({"ok": False, "error": "NOPE"}), KEY)
    with pytest.raises(DecodeError, match="'ok' must be true or false"):
        parse_answer(200, encode_body({"error": "X"}), KEY)
    with pytest.raises(DecodeError, match="answer: body is not JSON"):
        parse_answer(200, b"<html>", KEY)
    with pytest.raises(DecodeError, match="body is JSON list, expected an object"):
        parse_answer(200, b"[1]", KEY)

"""The platform's state machine (sim.qr.engine), without sockets: every status transition,
expiry, refunds, USERPAYING then confirm / refuse / time-out, micropay codes, signature and
request failures, rules, and what reaches the ledger."""

from __future__ import annotations

import json
import re

import pytest

from protocols.errors import SimError
from protocols.qr import (
    CODE_URL_PREFIX,
    PATHS,
    ErrorCode,
    Operation,
    OrderStatus,
    Wallet,
    encode_body,
    signed_body,
    verify,
    wallet_of,
)
from protocols.qrledger import PaymentStatus
from sim.qr.engine import QrPlatformEngine, Refusal
from sim.qr.ledger import MemoryQrLedger
from sim.qr.rules import QrRule

from .conftest import KEY, KEY2, MID, MID2, T0, TID, TID2, Reply, call, nonce, signed

S = OrderStatus


def create(engine: QrPlatformEngine, no: str = "T1", amount: int = 1000, now: float = T0,
           **kw: object) -> Reply:
    return call(engine, Operation.CREATE, {"out_trade_no": no, "amount": amount}, now, **kw)


def status(engine: QrPlatformEngine, no: str = "T1", now: float = T0) -> str:
    reply = call(engine, Operation.QUERY, {"out_trade_no": no}, now)
    assert reply.ok, reply.body
    return str(reply.order["status"])


def scan(engine: QrPlatformEngine, no: str = "T1", now: float = T0, **kw: object) -> str:
    order = engine.orders[next(o.order_id for o in engine.orders.values()
                               if o.out_trade_no == no)]
    assert order.code_url is not None
    return engine.scan(order.code_url, now, wallet=Wallet.WECHAT, **kw).status.value


def refund(engine: QrPlatformEngine, rno: str, amount: int, no: str = "T1",
           now: float = T0) -> Reply:
    return call(engine, Operation.REFUND, {"out_trade_no": no, "out_refund_no": rno,
                                           "amount": amount}, now)


def micropay(engine: QrPlatformEngine, code: str, no: str = "M1", amount: int = 500,
             now: float = T0) -> Reply:
    return call(engine, Operation.MICROPAY, {"out_trade_no": no, "amount": amount,
                                             "auth_code": code}, now)


# -- merchant-presented ------------------------------------------------------------------------

def test_create_gives_an_unpaid_order_with_a_code(engine: QrPlatformEngine) -> None:
    reply = create(engine)
    assert reply.ok and reply.status == 200
    order = reply.order
    assert order["status"] == "NOTPAY" and order["kind"] == "native"
    assert order["code_url"].startswith(CODE_URL_PREFIX) and order["amount"] == 1000
    assert order["terminal_id"] == TID and order["merchant_id"] == MID
    assert order["currency"] == "CNY" and "expires_at" in order
    assert verify(reply.body, KEY) and reply.body["nonce"].startswith("nonce")


def test_create_again_is_the_same_order_and_another_amount_is_refused(
        engine: QrPlatformEngine) -> None:
    first = create(engine).order
    assert create(engine).order == first
    other = create(engine, amount=999)
    assert other.error == "OUT_TRADE_NO_USED" and other.status == 200
    assert len(engine.orders) == 1


def test_notpay_to_success_by_the_wallet(engine: QrPlatformEngine) -> None:
    create(engine)
    assert scan(engine, now=T0 + 5) == "SUCCESS"
    order = call(engine, Operation.QUERY, {"out_trade_no": "T1"}, T0 + 6).order
    assert order["paid_amount"] == 1000 and order["wallet"] == "wechat"
    assert order["buyer_id"] == "buyer-0001" and "paid_at" in order


def test_notpay_expires_to_closed(engine: QrPlatformEngine) -> None:
    create(engine)
    assert engine.tick(T0 + 119.9) == []
    assert status(engine, now=T0 + 119.9) == "NOTPAY"
    changed = engine.tick(T0 + 120.0)
    assert len(changed) == 1
    order = call(engine, Operation.QUERY, {"out_trade_no": "T1"}, T0 + 121).order
    assert order["status"] == "CLOSED" and order["reason"] == "not paid within 120 s"
    with pytest.raises(Refusal) as err:
        scan(engine, now=T0 + 122)
    assert err.value.code is ErrorCode.ORDER_CLOSED


def test_expiry_applies_on_the_next_request_without_a_tick(engine: QrPlatformEngine) -> None:
    create(engine)
    assert status(engine, now=T0 + 500) == "CLOSED"


@pytest.mark.parametrize(("setup", "expected"), [
    ("notpay", "CLOSED"), ("userpaying", "CLOSED"), ("payerror", "CLOSED"),
    ("closed", "CLOSED"), ("success", "ORDER_PAID"), ("refund", "ORDER_PAID"),
    ("revoked", "ORDER_REVOKED"),
])
def test_close(engine: QrPlatformEngine, setup: str, expected: str) -> None:
    _bring(engine, setup)
    reply = call(engine, Operation.CLOSE, {"out_trade_no": "T1"}, T0 + 10)
    if expected == "CLOSED":
        assert reply.ok and reply.order["status"] == "CLOSED"
    else:
        assert reply.error == expected and reply.order["status"] == _STATUS[setup]


@pytest.mark.parametrize(("setup", "expected"), [
    ("notpay", "REVOKED"), ("userpaying", "REVOKED"), ("payerror", "REVOKED"),
    ("closed", "REVOKED"), ("success", "REVOKED"), ("revoked", "REVOKED"),
    ("refund", "ORDER_REFUNDED"),
])
def test_cancel(engine: QrPlatformEngine, setup: str, expected: str) -> None:
    _bring(engine, setup)
    reply = call(engine, Operation.CANCEL, {"out_trade_no": "T1"}, T0 + 10)
    if expected == "REVOKED":
        assert reply.ok and reply.order["status"] == "REVOKED"
    else:
        assert reply.error == expected and reply.order["status"] == "REFUND"


_STATUS = {"notpay": "NOTPAY", "userpaying": "USERPAYING", "payerror": "PAYERROR",
           "closed": "CLOSED", "success": "SUCCESS", "refund": "REFUND", "revoked": "REVOKED"}


def _bring(engine: QrPlatformEngine, state: str) -> None:
    """Order T1 in *state*."""
    create(engine)
    if state in ("userpaying", "payerror"):
        scan(engine, password=True)
    if state == "payerror":
        engine.refuse(T0 + 1)
    if state in ("success", "refund"):
        scan(engine)
    if state == "refund":
        assert refund(engine, "RF1", 100).ok
    if state == "closed":
        assert call(engine, Operation.CLOSE, {"out_trade_no": "T1"}).ok
    if state == "revoked":
        assert call(engine, Operation.CANCEL, {"out_trade_no": "T1"}).ok
    assert status(engine, now=T0 + 2) == _STATUS[state]


def test_cancel_of_a_paid_order_gives_the_money_back(engine: QrPlatformEngine,
                                                     ledger: MemoryQrLedger) -> None:
    _bring(engine, "success")
    reply = call(engine, Operation.CANCEL, {"out_trade_no": "T1"}, T0 + 10)
    assert reply.order["status"] == "REVOKED"
    assert "1000 given back to wechat buyer-0001" in reply.order["reason"]
    (_, payment), = ledger.payments.values()
    assert payment.status is PaymentStatus.REVOKED and payment.revoked_at


def test_refunds_up_to_what_was_paid(engine: QrPlatformEngine, ledger: MemoryQrLedger) -> None:
    _bring(engine, "success")
    first = refund(engine, "RF1", 300)
    assert first.ok and first.order["status"] == "REFUND"
    assert first.order["refunded_amount"] == 300 and first.body["refund"]["amount"] == 300
    over = refund(engine, "RF2", 701)
    assert over.error == "REFUND_EXCEEDED" and "700 left" in over.body["message"]
    rest = refund(engine, "RF2", 700)
    assert rest.ok and rest.order["refunded_amount"] == 1000
    beyond = refund(engine, "RF3", 1)
    assert beyond.error == "REFUND_EXCEEDED" and "0 left" in beyond.body["message"]
    assert [r.amount for r in ledger.refunds] == [300, 700]


def test_the_same_refund_twice_is_one_refund(engine: QrPlatformEngine) -> None:
    _bring(engine, "success")
    first = refund(engine, "RF1", 400)
    again = refund(engine, "RF1", 400)
    assert again.ok and again.body["refund"] == first.body["refund"]
    assert again.order["refunded_amount"] == 400
    other = refund(engine, "RF1", 100)
    assert other.error == "OUT_REFUND_NO_USED"


@pytest.mark.parametrize(("state", "code"), [
    ("notpay", "ORDER_NOT_PAID"), ("closed", "ORDER_NOT_PAID"),
    ("payerror", "ORDER_NOT_PAID"), ("revoked", "ORDER_REVOKED"),
])
def test_refund_of_what_was_not_paid(engine: QrPlatformEngine, state: str, code: str) -> None:
    _bring(engine, state)
    assert refund(engine, "RF9", 1).error == code


def test_refund_of_an_unknown_order_and_a_bad_amount(engine: QrPlatformEngine) -> None:
    assert refund(engine, "RF1", 1, no="NOPE").error == "ORDER_NOT_EXIST"
    _bring(engine, "success")
    assert refund(engine, "RF1", 0).error == "PARAM_ERROR"


# -- the wallet password (USERPAYING) ----------------------------------------------------------

def test_userpaying_then_confirm(engine: QrPlatformEngine) -> None:
    create(engine)
    assert scan(engine, password=True) == "USERPAYING"
    assert status(engine) == "USERPAYING"
    with pytest.raises(Refusal) as err:
        scan(engine)
    assert err.value.code is ErrorCode.ORDER_PAYING
    assert engine.confirm(T0 + 3).status is S.SUCCESS
    assert status(engine) == "SUCCESS"
    with pytest.raises(Refusal) as again:
        engine.confirm(T0 + 4, out_trade_no="T1")
    assert again.value.code is ErrorCode.ORDER_PAID


def test_userpaying_then_refuse(engine: QrPlatformEngine) -> None:
    create(engine)
    scan(engine, password=True)
    order = engine.refuse(T0 + 3, out_trade_no="T1")
    assert order.status is S.PAYERROR and order.reason == "declined by the customer"


def test_userpaying_times_out_to_payerror(engine: QrPlatformEngine) -> None:
    create(engine)
    scan(engine, password=True, now=T0 + 10)
    assert engine.tick(T0 + 69.9) == []
    assert engine.tick(T0 + 70.0)
    order = call(engine, Operation.QUERY, {"out_trade_no": "T1"}, T0 + 71).order
    assert order["status"] == "PAYERROR"
    assert order["reason"] == "the customer did not confirm within 60 s"
    with pytest.raises(Refusal) as err:
        engine.confirm(T0 + 72)
    assert err.value.code is ErrorCode.PARAM_ERROR  # nothing waits any more


def test_confirm_without_a_name_needs_exactly_one_waiting(engine: QrPlatformEngine) -> None:
    with pytest.raises(Refusal, match="0 orders wait"):
        engine.confirm(T0)
    for no in ("T1", "T2"):
        create(engine, no=no)
        scan(engine, no=no, password=True)
    with pytest.raises(Refusal, match="2 orders wait"):
        engine.refuse(T0)
    assert engine.confirm(T0, out_trade_no="T2").status is S.SUCCESS
    assert engine.confirm(T0).out_trade_no == "T1"


def test_scan_refusals(engine: QrPlatformEngine) -> None:
    with pytest.raises(Refusal) as unknown:
        engine.scan(CODE_URL_PREFIX + "00", T0, wallet=Wallet.ALIPAY)
    assert unknown.value.code is ErrorCode.ORDER_NOT_EXIST
    with pytest.raises(Refusal) as other:
        engine.scan("https://example.invalid/x", T0, wallet=Wallet.ALIPAY)
    assert other.value.code is ErrorCode.ORDER_NOT_EXIST
    create(engine)
    with pytest.raises(Refusal) as short:
        scan(engine, balance=999)
    assert short.value.code is ErrorCode.NOT_ENOUGH
    assert status(engine) == "NOTPAY"  # a short balance does not fail the order
    assert scan(engine, balance=1000) == "SUCCESS"
    with pytest.raises(Refusal) as paid:
        scan(engine)
    assert paid.value.code is ErrorCode.ORDER_PAID


def test_moves_outside_the_transition_table_are_bugs(engine: QrPlatformEngine) -> None:
    create(engine)
    order = next(iter(engine.orders.values()))
    with pytest.raises(SimError, match="cannot go from NOTPAY to REFUND"):
        engine._move(order, S.REFUND, T0)


# -- customer-presented (micropay) ---------------------------------------------------------------

def test_micropay_success(engine: QrPlatformEngine, ledger: MemoryQrLedger) -> None:
    code = engine.issue_code(Wallet.ALIPAY, T0, buyer_id="alice")
    assert wallet_of(code.code) is Wallet.ALIPAY
    reply = micropay(engine, code.code)
    assert reply.ok
    order = reply.order
    assert order["status"] == "SUCCESS" and order["kind"] == "micropay"
    assert order["wallet"] == "alipay" and order["buyer_id"] == "alice"
    assert order["auth_code"] == code.code[:6] + "********" + code.code[-4:]
    assert code.code not in json.dumps([r.__dict__ for r in ledger.requests])
    assert code.code not in json.dumps([o.to_json() for _, o in ledger.orders.values()])


def test_micropay_with_password_polls_to_success(engine: QrPlatformEngine) -> None:
    code = engine.issue_code(Wallet.WECHAT, T0, password=True)
    reply = micropay(engine, code.code)
    assert reply.ok and reply.order["status"] == "USERPAYING"
    assert status(engine, "M1", T0 + 2) == "USERPAYING"
    engine.confirm(T0 + 3)
    assert status(engine, "M1", T0 + 4) == "SUCCESS"


def test_micropay_with_password_refused_or_timed_out(engine: QrPlatformEngine) -> None:
    for no in ("M1", "M2"):
        code = engine.issue_code(Wallet.WECHAT, T0, password=True)
        assert micropay(engine, code.code, no=no).order["status"] == "USERPAYING"
    engine.refuse(T0 + 1, out_trade_no="M1")
    assert status(engine, "M1", T0 + 2) == "PAYERROR"
    assert status(engine, "M2", T0 + 60) == "PAYERROR"


def test_micropay_retry_is_the_same_order(engine: QrPlatformEngine) -> None:
    code = engine.issue_code(Wallet.WECHAT, T0)
    first = micropay(engine, code.code).order
    again = micropay(engine, code.code, now=T0 + 1)
    assert again.ok and again.order == first
    other = micropay(engine, code.code, amount=501)
    assert other.error == "OUT_TRADE_NO_USED"


def test_micropay_balance_short_fails_the_order(engine: QrPlatformEngine) -> None:
    code = engine.issue_code(Wallet.WECHAT, T0, balance=499)
    reply = micropay(engine, code.code)
    assert reply.error == "NOT_ENOUGH" and reply.order["status"] == "PAYERROR"
    retry = micropay(engine, code.code, now=T0 + 1)
    assert retry.error == "NOT_ENOUGH" and retry.order["status"] == "PAYERROR"


@pytest.mark.parametrize(("make", "code"), [
    ("malformed", "AUTH_CODE_INVALID"), ("unknown", "AUTH_CODE_INVALID"),
    ("used", "AUTH_CODE_INVALID"), ("expired", "AUTH_CODE_EXPIRED"),
])
def test_micropay_code_refusals(engine: QrPlatformEngine, make: str, code: str) -> None:
    issued = engine.issue_code(Wallet.WECHAT, T0)
    text = {"malformed": "123", "unknown": "139999999999999999"}.get(make, issued.code)
    now = T0 + 60 if make == "expired" else T0
    if make == "used":
        assert micropay(engine, issued.code, no="M0").ok
    reply = micropay(engine, text, now=now)
    assert reply.error == code and "order" not in reply.body
    assert issued.code not in reply.body["message"]


def test_issued_codes_have_the_wallets_shape(engine: QrPlatformEngine) -> None:
    for wallet in Wallet:
        for _ in range(20):
            assert wallet_of(engine.issue_code(wallet, T0).code) is wallet
    assert engine.open_codes(T0) == 60 and engine.forget_codes() == 60
    assert engine.open_codes(T0) == 0


def test_a_payment_code_in_other_digits_has_no_wallet() -> None:
    """str.isdigit() took fullwidth and Arabic-Indic digits as a payment code's digits."""
    assert wallet_of("134567890123456789") is Wallet.WECHAT
    assert wallet_of("１３４５６７８９０１２３４５６７８９") is None
    assert wallet_of("13" + "٤" * 16) is None


# -- who asks ----------------------------------------------------------------------------------

def test_signature_failures_answer_unsigned(engine: QrPlatformEngine) -> None:
    wrong_key = create(engine, key=KEY2)
    assert wrong_key.status == 401 and wrong_key.error == "SIGN_ERROR"
    assert "sign" not in wrong_key.body and "nonce" not in wrong_key.body
    path, raw = signed(Operation.CREATE, {"out_trade_no": "T1", "amount": 5})
    body = json.loads(raw)
    tampered = engine.answer(path, encode_body({**body, "amount": 6}), T0)
    assert tampered.http_status == 401 and json.loads(tampered.body)["error"] == "SIGN_ERROR"
    unsigned = {k: v for k, v in body.items() if k != "sign"}
    assert json.loads(engine.answer(path, encode_body(unsigned), T0).body)["message"] == \
        "no 'sign' in the request"
    assert engine.orders == {}


def test_who_asks(engine: QrPlatformEngine) -> None:
    unknown = create(engine, tid="99999999")
    assert unknown.status == 401 and unknown.error == "UNKNOWN_TERMINAL"
    mismatch = create(engine, tid=TID2, mid=MID, key=KEY2)
    assert mismatch.status == 403 and mismatch.error == "MERCHANT_MISMATCH"
    assert create(engine, tid=TID2, mid=MID2, key=KEY2).ok


def test_nonce_and_timestamp_are_checked(engine: QrPlatformEngine) -> None:
    for change, message in (({"nonce": "short"}, "nonce must be 8-32 letters or digits"),
                            ({"timestamp": "now"}, "timestamp must be POSIX seconds"),
                            ({"timestamp": None}, "timestamp must be POSIX seconds")):
        body = {"merchant_id": MID, "terminal_id": TID, "nonce": nonce(), "timestamp": 1,
                "out_trade_no": "T1", "amount": 1, **change}
        body = {k: v for k, v in body.items() if v is not None}
        reply = json.loads(engine.answer("/v1/create", encode_body(signed_body(body, KEY)),
                                         T0).body)
        assert reply["error"] == "PARAM_ERROR" and message in reply["message"]


def test_a_nonce_is_used_once(engine: QrPlatformEngine) -> None:
    assert create(engine, nonce_text="samenonce1").ok
    again = call(engine, Operation.QUERY, {"out_trade_no": "T1"}, nonce_text="samenonce1")
    assert again.error == "NONCE_REUSED" and again.status == 400
    assert "sign" not in again.body  # the request was not accepted: the refusal is unsigned
    other_terminal = create(engine, tid=TID2, mid=MID2, key=KEY2, nonce_text="samenonce1")
    assert other_terminal.ok


@pytest.mark.parametrize(("fields", "message"), [
    ({"out_trade_no": "T1", "amount": 0}, "amount must be an integer of minor units"),
    ({"out_trade_no": "T1", "amount": True}, "amount must be an integer"),
    ({"out_trade_no": "T1", "amount": "100"}, "amount must be an integer"),
    ({"out_trade_no": "T 1", "amount": 1}, "out_trade_no must be 1-32 of letters"),
    ({"out_trade_no": "T" * 33, "amount": 1}, "out_trade_no must be 1-32"),
    ({"out_trade_no": "T1", "amount": 1, "currency": "USD"}, "currency must be CNY"),
    ({"out_trade_no": "T1", "amount": 1, "description": "x" * 129}, "at most 128"),
    ({"out_trade_no": "T1"}, "create: missing amount"),
    ({"out_trade_no": "T1", "amount": 1, "auth_code": "1"}, "unknown field.*auth_code"),
])
def test_bad_fields_are_param_errors(engine: QrPlatformEngine, fields: dict[str, object],
                                     message: str) -> None:
    body = {"merchant_id": MID, "terminal_id": TID, "nonce": nonce(), "timestamp": 1, **fields}
    ans = engine.answer("/v1/create", encode_body(signed_body(body, KEY)), T0)
    reply = json.loads(ans.body)
    assert ans.http_status == 400 and reply["error"] == "PARAM_ERROR"
    assert re.search(message, reply["message"]), reply["message"]


def test_requests_that_are_not_the_platforms(engine: QrPlatformEngine,
                                             ledger: MemoryQrLedger) -> None:
    not_json = engine.answer("/v1/create", b"{not json", T0)
    assert not_json.http_status == 400 and json.loads(not_json.body)["error"] == "BAD_REQUEST"
    a_list = engine.answer("/v1/create", b"[1,2]", T0)
    assert "expected an object" in json.loads(a_list.body)["message"]
    nowhere = engine.answer("/v1/pay", b"{}", T0)
    assert nowhere.http_status == 404 and json.loads(nowhere.body)["error"] == "NOT_FOUND"
    ids = engine.answer("/v1/query", b'{"terminal_id": 1}', T0)
    assert json.loads(ids.body)["error"] == "PARAM_ERROR"
    assert [r.result for r in ledger.requests] == ["BAD_REQUEST", "BAD_REQUEST", "NOT_FOUND",
                                                   "PARAM_ERROR"]
    assert ledger.requests[2].operation == "/v1/pay"


def test_query_by_order_id_is_scoped_to_the_merchant(engine: QrPlatformEngine) -> None:
    order_id = create(engine).order["order_id"]
    assert call(engine, Operation.QUERY, {"order_id": order_id}).ok
    both = call(engine, Operation.QUERY, {"order_id": order_id, "out_trade_no": "T1"})
    assert both.ok
    mismatch = call(engine, Operation.QUERY, {"order_id": order_id, "out_trade_no": "T2"})
    assert mismatch.error == "ORDER_NOT_EXIST"
    create(engine, no="T2")
    assert call(engine, Operation.QUERY, {"order_id": order_id,
                                          "out_trade_no": "T2"}).error == "PARAM_ERROR"
    other = call(engine, Operation.QUERY, {"order_id": order_id}, tid=TID2, mid=MID2, key=KEY2)
    assert other.error == "ORDER_NOT_EXIST"


# -- rules -------------------------------------------------------------------------------------

def _rule(data: dict[str, object]) -> QrRule:
    return QrRule.model_validate(data)


def test_a_rule_refuses_and_nothing_is_done(engine: QrPlatformEngine,
                                            ledger: MemoryQrLedger) -> None:
    rule_id = engine.add_rule(_rule({"match": {"operation": "create", "amount_min": 500},
                                     "answer": {"error": "SYSTEM_ERROR"}, "times": 1}))
    refused = create(engine)
    assert refused.status == 500 and refused.error == "SYSTEM_ERROR"
    assert refused.body["message"] == f"rule #{rule_id} answers SYSTEM_ERROR"
    assert verify(refused.body, KEY) and engine.orders == {}
    assert create(engine).ok  # spent after one
    assert ledger.requests[0].rule_id == rule_id
    assert ledger.requests[0].rule_action == "error SYSTEM_ERROR"
    assert ledger.requests[1].rule_id is None


def test_rules_delay_or_drop_but_the_request_is_carried_out(engine: QrPlatformEngine) -> None:
    engine.add_rule(_rule({"match": {"operation": "create"}, "answer": {"delay_s": 2.5}}))
    engine.add_rule(_rule({"match": {"operation": "query"}, "answer": {"drop": True}}))
    late = create(engine)
    assert late.ok and late.delay_s == 2.5 and not late.drop
    lost = call(engine, Operation.QUERY, {"out_trade_no": "T1"})
    assert lost.drop and lost.ok
    assert engine.clear_rules() == [1, 2]
    assert create(engine, no="T2").delay_s == 0.0


def test_a_rule_makes_micropay_wait_for_the_password(engine: QrPlatformEngine) -> None:
    engine.add_rule(_rule({"match": {"wallet": "alipay"}, "answer": {"user_paying": True}}))
    wechat = engine.issue_code(Wallet.WECHAT, T0)
    alipay = engine.issue_code(Wallet.ALIPAY, T0)
    assert micropay(engine, wechat.code, no="M1").order["status"] == "SUCCESS"
    waiting = micropay(engine, alipay.code, no="M2").order
    assert waiting["status"] == "USERPAYING" and waiting["reason"].startswith("rule #1:")


@pytest.mark.parametrize(("data", "message"), [
    ({"answer": {}}, "an answer needs error, delay_s, drop"),
    ({"answer": {"error": "SIGN_ERROR"}}, "not a refusal a rule may force"),
    ({"answer": {"drop": True, "delay_s": 1}}, "drop never answers"),
    ({"match": {"operation": "create"}, "answer": {"user_paying": True}},
     "user_paying applies to micropay"),
    ({"match": {"amount_min": 5, "amount_max": 4}, "answer": {"drop": True}},
     "amount_min 5 > amount_max 4"),
    ({"match": {"operation": "pay"}, "answer": {"drop": True}}, "match.operation"),
])
def test_bad_rules_name_the_key(data: dict[str, object], message: str) -> None:
    from protocols.errors import ConfigError
    from sim.qr.rules import parse_rule

    with pytest.raises(ConfigError, match=message):
        parse_rule(data, "add_rule: rule")


def test_every_request_reaches_the_ledger(engine: QrPlatformEngine,
                                          ledger: MemoryQrLedger) -> None:
    create(engine)
    scan(engine)
    refund(engine, "RF1", 10)
    call(engine, Operation.QUERY, {"out_trade_no": "T1"})
    ops = [(r.operation, r.result, r.order_status) for r in ledger.requests]
    assert ops == [("create", "SUCCESS", "NOTPAY"), ("refund", "SUCCESS", "REFUND"),
                   ("query", "SUCCESS", "REFUND")]
    seqs = [s for s, _ in ledger.orders.values()]
    assert seqs == [engine.seq] and ledger.last_seq() == engine.seq == 4


def test_engine_refuses_bad_clocks(terminals: dict[str, object]) -> None:
    with pytest.raises(SimError, match="order_ttl_s must be above 0 s"):
        QrPlatformEngine({}, order_ttl_s=0)


def test_a_restarted_engine_continues_the_change_counter(terminals: dict[str, object]) -> None:
    mem = MemoryQrLedger()
    first = QrPlatformEngine(terminals, ledger=mem)  # type: ignore[arg-type]
    call(first, Operation.CREATE, {"out_trade_no": "T1", "amount": 1})
    again = QrPlatformEngine(terminals, ledger=mem)  # type: ignore[arg-type]
    assert again.seq == first.seq == 1


def _raw(**fields: object) -> bytes:
    body = {"terminal_id": TID, "merchant_id": MID, "nonce": nonce(), "timestamp": int(T0),
            "out_trade_no": "T9", "amount": 100, **fields}
    return json.dumps(body).encode()


@pytest.mark.parametrize(("raw", "error", "why"), [
    # a lone surrogate: verify() → canonical() raised UnicodeEncodeError out of the engine
    (_raw(description="\ud800", sign="00"), "BAD_REQUEST", "lone surrogate U+D800"),
    # a non-ASCII signature: hmac.compare_digest raised TypeError
    (_raw(sign="\u00e9" * 64), "SIGN_ERROR", "does not verify"),
    # 100000 levels: json.loads raised RecursionError
    (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "BAD_REQUEST", "nested too deeply"),
    (_raw(sign="00", extra=[[[[[[[[[[1]]]]]]]]]]), "BAD_REQUEST", "deeper than 8 levels"),
    (_raw(sign="00").replace(b'"amount": 100', b'"amount": NaN'), "BAD_REQUEST", "NaN is not"),
    (_raw(sign="00").replace(b'"amount": 100', b'"amount": ' + b"9" * 5000), "BAD_REQUEST",
     "not JSON"),
    (_raw(sign="00").replace(b'"amount": 100', b'"amount": 100, "amount": 1'), "BAD_REQUEST",
     "'amount' appears twice"),
    (b"\xff\xfe", "BAD_REQUEST", "not JSON"),
])
def test_hostile_bodies_get_the_platforms_error_and_change_nothing(
        engine: QrPlatformEngine, raw: bytes, error: str, why: str) -> None:
    path = "/v1/create"
    assert path in PATHS
    ans = engine.answer(path, raw, T0)
    body = json.loads(ans.body)
    assert (body["ok"], body["error"]) == (False, error) and why in body["message"], body
    assert engine.orders == {}


def test_an_unknown_path_is_quoted_short(engine: QrPlatformEngine) -> None:
    ans = engine.answer("/" + "x" * 70000, b"{}", T0)
    body = json.loads(ans.body)
    assert body["error"] == "NOT_FOUND" and len(body["message"]) < 200

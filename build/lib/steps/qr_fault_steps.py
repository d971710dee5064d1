"""Steps that lose the traffic between the terminal and the QR payment platform on the network:
one kind of request never reaching the platform, or the platform's answer to it never reaching
the terminal (the in-line injector's ``drop_qr``, which reads only the HTTP request line).

A loss is named in words (:data:`QR_LOSSES`) and mapped to its fault.  The Thens prove it from
outside the terminal: the injector's fault ledger (which segments it dropped, which way, from
or to the platform's port) and the platform's own ledger (what it received, what it booked).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType

from pytest_bdd import given, parsers, then, when

from protocols.ecr import EntryMode, Result
from protocols.faults import Direction, FaultKind, FaultSpec
from protocols.qr import Operation, OrderKind, OrderStatus
from rigs.bench import Bench
from rigs.capabilities import Capability, needs
from rigs.faults import FaultRecord
from rigs.network.records import RuleRecord
from rigs.terminal import Outcome

_MICROPAY_ANSWER = FaultSpec.of(FaultKind.DROP_QR, operation=Operation.MICROPAY.value,
                                part="answer")
_CREATE_REQUESTS = FaultSpec.of(FaultKind.DROP_QR, operation=Operation.CREATE.value,
                                part="request", times=0)
_QUERY_ANSWER = FaultSpec.of(FaultKind.DROP_QR, operation=Operation.QUERY.value, part="answer")

QR_LOSSES: Mapping[str, FaultSpec] = MappingProxyType({
    "the QR platform's answer to the next payment-code charge": _MICROPAY_ANSWER,
    "the terminal's order requests to the QR platform": _CREATE_REQUESTS,
    "the QR platform's answer to the terminal's next order query": _QUERY_ANSWER,
})
"""What the network loses, in words → the injector's fault."""
QR_LOSSES_ZH: Mapping[str, FaultSpec] = MappingProxyType({
    "二维码支付平台对下一笔付款码扣款的应答": _MICROPAY_ANSWER,
    "终端发往二维码支付平台的下单请求": _CREATE_REQUESTS,
    "二维码支付平台对终端下一次订单查询的应答": _QUERY_ANSWER,
})


def _choices(words: Mapping[str, FaultSpec]) -> str:
    return "(?P<loss>" + "|".join(re.escape(w) for w in words) + ")"


@needs(Capability.NETWORK, Capability.QR)
@given(parsers.re(f"the network will lose {_choices(QR_LOSSES)}"), target_fixture="qr_loss")
@given(parsers.re(f"网络将丢失{_choices(QR_LOSSES_ZH)}"), target_fixture="qr_loss")
def network_will_lose(bench: Bench, loss: str) -> FaultRecord:
    return bench.inject({**QR_LOSSES, **QR_LOSSES_ZH}[loss])


@needs(Capability.NETWORK)
@when("the network stops losing the QR platform's traffic")
@when("网络不再丢失二维码支付平台的报文")
def qr_loss_over(bench: Bench) -> None:
    assert bench.clear_faults(FaultKind.DROP_QR), "no loss of QR platform traffic was active"


@then("the QR payment fails with a communication error")
@then("扫码支付失败，提示通讯故障")
def qr_comms_error(purchase: Outcome) -> None:
    assert not purchase.ok and purchase.result == Result.COMMS_ERROR, \
        f"expected COMMS_ERROR, the terminal answered {purchase.result} " \
        f"{purchase.reason or ''} {purchase.display!r}"
    assert purchase.entry_mode in ("", EntryMode.QR), f"entry {purchase.entry_mode}"


def _rule_of(bench: Bench, loss: FaultRecord) -> RuleRecord:
    rules = [r for r in bench.network.fault_ledger() if r.id == loss.remote_id]
    assert rules, f"the injector's ledger has no rule #{loss.remote_id} for fault #{loss.id}"
    return rules[0]


@needs(Capability.NETWORK, Capability.QR)
@then(parsers.parse("the injector dropped {n:d} of them on the way, as it was told"))
@then(parsers.parse("注入器按要求在线路上丢弃了{n:d}个"))
def injector_dropped(bench: Bench, qr_loss: FaultRecord, n: int) -> None:
    """The injector's own ledger: *n* trips of the rule, each a segment travelling the way the
    loss says (the platform's answers come from its port, requests go to it)."""
    rule = _rule_of(bench, qr_loss)
    assert rule.fired_count == n, (f"the injector dropped {rule.fired_count} time(s) for "
                                   f"{rule.spec.describe()}, expected {n}")
    answer = qr_loss.spec.params["part"] == "answer"
    way = Direction.TO_TERMINAL if answer else Direction.TO_HOST
    port = bench.qr.port
    for trip in rule.fired:
        assert trip.direction is way, f"{trip.describe()}: travelling {trip.direction}, not {way}"
        assert trip.tcp is not None, f"{trip.describe()}: not a TCP segment"
        got = trip.tcp.sport if answer else trip.tcp.dport
        assert got == port, f"{trip.describe()}: not the QR platform's port {port}"


@needs(Capability.QR_LEDGER)
@then("the QR platform charged the customer although the terminal never heard its answer")
@then("二维码支付平台已扣款，但终端没有收到应答")
def platform_charged_unheard(bench: Bench, purchase: Outcome) -> None:
    orders = [o for o in bench.qr.orders() if o.kind is OrderKind.MICROPAY]
    assert len(orders) == 1, f"{len(orders)} payment-code orders on the platform, expected one"
    order = orders[0]
    assert order.status is OrderStatus.SUCCESS and order.paid_amount == order.amount, \
        f"the platform's order {order.order_id} is {order.status}, paid {order.paid_amount}"
    assert order.order_id != purchase.qr_order_id or not purchase.ok, \
        "the terminal heard the answer after all"


@needs(Capability.QR_LEDGER)
@then("the QR platform revoked the unheard payment and gave the money back")
@then("二维码支付平台已撤销未收到应答的付款并退回款项")
def platform_revoked_unheard(bench: Bench, purchase: Outcome) -> None:
    orders = [o for o in bench.qr.orders()
              if o.kind is OrderKind.MICROPAY and o.order_id != purchase.qr_order_id]
    assert len(orders) == 1, f"{len(orders)} earlier payment-code orders, expected one"
    order = orders[0]
    assert order.status is OrderStatus.REVOKED and order.paid_amount == order.amount, \
        f"the unheard order {order.order_id} is {order.status} (paid {order.paid_amount}); " \
        f"expected REVOKED with the payment given back"
    cancels = bench.qr.ledger.requests(bench.qr.scenario_mark, operation=Operation.CANCEL.value)
    assert cancels, "the platform received no cancel from the terminal"


@needs(Capability.QR_LEDGER)
@then("the QR platform received no order request and booked nothing")
@then("二维码支付平台未收到下单请求，也没有记账")
def platform_got_nothing(bench: Bench) -> None:
    creates = bench.qr.ledger.requests(bench.qr.scenario_mark,
                                       operation=Operation.CREATE.value)
    assert not creates, f"the platform received {len(creates)} order request(s)"
    assert not bench.qr.orders(), f"the platform booked {len(bench.qr.orders())} order(s)"

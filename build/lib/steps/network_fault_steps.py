"""Steps that fault the network between terminal and acquirer at a protocol moment: only the
acquirer's answer lost, latency, a corrupted request, a forged reset.

Each fault goes through ``bench.inject(FaultSpec)`` (armed, fired and cleared in the fault
ledger and the timeline) and each Then proves from the wire (the injector's captures: what was
sent, what was delivered, when) that the terminal met the fault, not only what it said.
"""

from __future__ import annotations

from pytest_bdd import given, parsers, then, when

from protocols.faults import FaultSpec
from protocols.transactions import TxnType, transaction_type
from rigs.bench import Bench
from rigs.capabilities import Capability, needs
from rigs.terminal import Outcome

SALE = transaction_type(TxnType.SALE)
ANSWER_MTI = "0210"


@needs(Capability.NETWORK)
@given("only the acquirer's next answer to a purchase will be lost on the network")
@given("网络上将只丢失收单机构对下一笔消费的应答")
def answer_will_be_lost(bench: Bench) -> None:
    bench.inject(FaultSpec.of("drop_message", mti=ANSWER_MTI, times=1))


@needs(Capability.WIRE)
@then("the acquirer answered the purchase but its answer never reached the terminal")
@then("收单机构已应答但应答未到达终端")
def answer_lost_on_wire(bench: Bench, purchase: Outcome) -> None:
    sent = [m for m in bench.acquirer.sent_by_host(ANSWER_MTI) if m.stan == purchase.stan]
    assert sent, f"the acquirer sent no 0210 for STAN {purchase.stan}: nothing was lost"
    delivered = [m for m in bench.acquirer.answered(ANSWER_MTI) if m.stan == purchase.stan]
    assert not delivered, f"the 0210 for STAN {purchase.stan} reached the terminal"
    fired = [r for r in bench.network.fault_ledger() if r.spec.kind == "drop_message" and r.fired]
    assert fired, "the injector's ledger shows no drop of the answer"


@needs(Capability.NETWORK)
@given(parsers.parse("the network adds {ms:d} ms of latency"))
@given(parsers.parse("网络增加{ms:d}毫秒延迟"))
def latency(bench: Bench, ms: int) -> None:
    bench.inject(FaultSpec.of("delay", ms=float(ms)))


@needs(Capability.NETWORK)
@when("the network is fast again")
@when("网络恢复正常")
def latency_gone(bench: Bench) -> None:
    from protocols.faults import FaultKind

    assert bench.clear_faults(FaultKind("delay")), "no latency was active"


@needs(Capability.WIRE)
@then(parsers.parse("the acquirer's answer reached the terminal at least {ms:d} ms after the "
                    "request reached the acquirer"))
def answer_late(bench: Bench, purchase: Outcome, ms: int) -> None:
    request = [m for m in bench.acquirer.received(SALE.mti) if m.stan == purchase.stan]
    answer = [m for m in bench.acquirer.answered(ANSWER_MTI) if m.stan == purchase.stan]
    assert request and answer, f"request or answer for STAN {purchase.stan} not on the wire"
    gap = (answer[-1].t - request[-1].t) * 1000
    assert gap >= ms * 0.95, f"the answer came {gap:.0f} ms after the request, not {ms} ms"


@needs(Capability.NETWORK)
@given("the next purchase request will be corrupted on its way to the acquirer")
@given("下一笔消费请求将在发往收单机构途中被篡改")
def request_corrupted(bench: Bench) -> None:
    bench.inject(FaultSpec.of("corrupt_byte", mti=SALE.mti, times=1))


@needs(Capability.WIRE)
@then(parsers.parse("the purchase is declined by the acquirer with code {code}"))
@then(parsers.parse("交易被收单机构拒绝，应答码{code}"))
def declined_with(bench: Bench, purchase: Outcome, code: str) -> None:
    assert purchase.response_code == code and not purchase.ok, \
        f"expected a decline with code {code}, got {purchase.result} (host code " \
        f"{purchase.response_code or '-'})"
    answered = [m for m in bench.acquirer.answered(ANSWER_MTI) if m.stan == purchase.stan]
    assert answered and answered[-1].response_code == code, \
        f"the acquirer's answer on the wire for STAN {purchase.stan} is " \
        f"{answered[-1].describe() if answered else 'missing'}"


@needs(Capability.WIRE)
@then("the request the acquirer received differs from the one the terminal sent")
@then("收单机构收到的请求与终端发出的不同")
def request_changed(bench: Bench, purchase: Outcome) -> None:
    sent = [m for m in bench.acquirer.sent_by_terminal(SALE.mti) if m.stan == purchase.stan]
    got = [m for m in bench.acquirer.received(SALE.mti) if m.stan == purchase.stan]
    assert sent and got, f"STAN {purchase.stan} missing on the wire (sent {sent}, got {got})"
    assert dict(sent[-1].fields) != dict(got[-1].fields), \
        "the request arrived exactly as sent: the corruption did not happen"


@needs(Capability.NETWORK)
@given("the connection will be reset as the acquirer answers the next purchase")
@given("收单机构应答下一笔消费时连接将被重置")
def reset_on_answer(bench: Bench) -> None:
    bench.inject(FaultSpec.of("forge_rst", on_mti=ANSWER_MTI))


@then("the terminal owes no reversal")
@then("终端没有待发冲正")
def no_reversal(bench: Bench) -> None:
    assert not bench.terminal.status().reversal_pending, \
        "the terminal keeps a reversal although no request reached the acquirer"


@needs(Capability.NETWORK)
@given(parsers.parse("the network slows to {kbps:d} kbit/s"))
@given(parsers.parse("网络带宽降到{kbps:d}千比特每秒"))
def slow_link(bench: Bench, kbps: int) -> None:
    bench.inject(FaultSpec.of("bandwidth", kbps=float(kbps)))


@needs(Capability.WIRE)
@then(parsers.parse("the request took at least its length at {kbps:d} kbit/s to reach the "
                    "acquirer"))
def request_paced(bench: Bench, purchase: Outcome, kbps: int) -> None:
    sent = [m for m in bench.acquirer.sent_by_terminal(SALE.mti) if m.stan == purchase.stan]
    got = [m for m in bench.acquirer.received(SALE.mti) if m.stan == purchase.stan]
    assert sent and got, f"STAN {purchase.stan} missing on the wire (sent {sent}, got {got})"
    took = got[-1].t - sent[-1].t
    deferred = bench.network.stats().to_host.frames_deferred
    assert deferred > 0, "the injector held no frame towards the acquirer"
    # The smallest 0200 of this terminal is over 100 bytes: at least 800 bits on the link.
    floor = 800 / (kbps * 1000.0)
    assert took >= floor, (f"the request crossed in {took * 1000:.1f} ms, faster than "
                           f"{floor * 1000:.1f} ms at {kbps} kbit/s")


@needs(Capability.NETWORK)
@when("the terminal's network link goes down")
@when("终端网络链路断开")
def link_down(bench: Bench) -> None:
    bench.inject(FaultSpec.of("carrier_loss"))


@needs(Capability.NETWORK)
@when("the terminal's network link comes back")
@when("终端网络链路恢复")
def link_back(bench: Bench) -> None:
    from protocols.faults import FaultKind

    assert bench.clear_faults(FaultKind("carrier_loss")), "the link was not down"
    assert bench.network.has_carrier(), "the injector still holds the terminal's link down"


@then("the sign-in fails saying the network link is down")
@then("签到失败并提示网络未连接")
def sign_in_no_link(sign_in: Outcome) -> None:
    assert not sign_in.ok and sign_in.result == "COMMS_ERROR", \
        f"sign-in answered {sign_in.result} {sign_in.display!r}"
    assert "NO NETWORK LINK" in sign_in.display, \
        f"the display does not say the link is down: {sign_in.display!r}"


@needs(Capability.WIRE)
@then("the terminal put nothing on the wire while its link was down")
@then("链路断开期间终端没有向网络发送任何数据")
def nothing_on_wire(bench: Bench) -> None:
    assert not bench.network.has_carrier(), "the terminal's link is up: nothing was down"
    sent = bench.acquirer.sent_by_terminal("0800")
    assert not sent, f"the terminal sent {len(sent)} sign-in(s) with its link down"

"""Steps that make the card fail between the test card and the terminal's slot (the card bank's
relay): no answer, pulled out at a command, a refusal, damaged data, a slow chip.

A failure is named in the cardholder's or field engineer's words and mapped here to a
:class:`~protocols.faults.FaultSpec` of the card bank (:data:`CHIP_FAILURES`).  The Thens prove
from the card's side (the relay's trace and the fault ledger, on the event stream's clock) that
the terminal met the failure, not only what it displayed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType

from pytest_bdd import given, parsers, then, when

from protocols.ecr import EventCode, Prompt
from protocols.faults import FaultKind, FaultSpec, Target
from protocols.transactions import SALE
from rigs.bench import Bench
from rigs.capabilities import Capability, needs
from rigs.cardholder import CARD_REMOVED_BOUND, pay_by_chip
from rigs.errors import NoResponse
from rigs.events import Event, Source, matching
from rigs.faults import FaultRecord
from rigs.terminal import Outcome
from steps.parsers import step

CHIP_FAILURES: Mapping[str, FaultSpec] = MappingProxyType({
    "gives no answer": FaultSpec.of(FaultKind.CARD_MUTE),
    "is pulled out as the terminal asks it for its cryptogram":
        FaultSpec.of(FaultKind.CARD_PULLED, ins="GENERATE AC", nth=1),
    "is pulled out while the terminal reads its second record":
        FaultSpec.of(FaultKind.CARD_PULLED, ins="READ RECORD", nth=2),
    "has its payment application blocked":
        FaultSpec.of(FaultKind.CARD_STATUS_WORD, ins="SELECT", sw="6A81", times=0),
    "refuses to give its cryptogram":
        FaultSpec.of(FaultKind.CARD_STATUS_WORD, ins="GENERATE AC", sw="6985", times=0),
    "returns damaged record data":
        FaultSpec.of(FaultKind.CARD_CORRUPT, ins="READ RECORD", offset=2, times=0),
    "answers every command two seconds late": FaultSpec.of(FaultKind.CARD_SLOW, ms=2000.0),
})
"""How a chip fails, in words → the card bank's fault."""


def _chip_failure(failure: str) -> FaultSpec:
    try:
        return CHIP_FAILURES[failure]
    except KeyError:
        raise AssertionError(f"no chip failure {failure!r}; known: "
                             f"{', '.join(sorted(CHIP_FAILURES))}") from None


_FAILURE_RE = "(?P<failure>" + "|".join(re.escape(f) for f in CHIP_FAILURES) + ")"


@needs(Capability.CARDS)
@given(parsers.re("the good card's chip " + _FAILURE_RE), target_fixture="chip_fault")
def chip_fails(bench: Bench, failure: str) -> FaultRecord:
    return bench.inject(_chip_failure(failure))


@needs(Capability.CARDS)
@given(step("the good card's chip answers every command {ms:d} milliseconds late"),
       target_fixture="chip_fault")
def chip_slow(bench: Bench, ms: int) -> FaultRecord:
    return bench.inject(FaultSpec.of(FaultKind.CARD_SLOW, ms=float(ms)))


@needs(Capability.CARDS)
@when("the chip is healthy again")
@when("芯片恢复正常")
def chip_healthy(bench: Bench) -> None:
    cleared = [r for r in bench.faults.active() if r.target is Target.CARDS]
    assert cleared, "no card fault was active"
    for rec in cleared:
        bench.clear_fault(rec)


def _fault_events(bench: Bench, rec: FaultRecord) -> list[Event]:
    return bench.events.events(matching(source=Source.CARDS, kind="fault", name=rec.kind.value))


@needs(Capability.CARDS)
@then("the card's trace shows the chip failing where the terminal met it")
@then("卡片交互记录显示芯片在终端访问时出错")
def trace_shows_failure(bench: Bench, chip_fault: FaultRecord) -> None:
    struck = _fault_events(bench, chip_fault)
    assert struck, (f"the card bank never applied {chip_fault.spec.describe()}: the terminal did "
                    f"not reach the command it was armed on")
    first = struck[0]
    bench.sync_faults()
    assert chip_fault.fired, f"fault #{chip_fault.id} is not marked fired in the fault ledger"
    if chip_fault.kind is FaultKind.CARD_PULLED:
        ins = str(chip_fault.spec.params["ins"])
        commands = bench.events.events(matching(source=Source.CARDS, kind="c-apdu", name=ins))
        nth = int(chip_fault.spec.params["nth"])
        assert len(commands) >= nth and commands[nth - 1].seq < first.seq, \
            f"the card left the slot before the terminal's {ins} number {nth}"
        later = [e for e in bench.events.events(matching(source=Source.CARDS, kind="c-apdu"))
                 if e.seq > first.seq]
        assert not later, (f"the terminal sent {len(later)} command(s) to a card that had left: "
                           f"{', '.join(e.name for e in later)}")
        # The bank opens card-detect from its own thread, after the command was answered
        # absent: the terminal's CARD_REMOVED may follow its card-error outcome.
        try:
            bench.events.wait_for(matching(source=Source.TERMINAL, name=EventCode.CARD_REMOVED),
                                  CARD_REMOVED_BOUND, since=first.seq,
                                  what="CARD_REMOVED from the terminal")
        except NoResponse as exc:
            raise AssertionError(f"the terminal never said the card was removed: {exc}") from None
    elif chip_fault.kind is FaultKind.CARD_MUTE:
        answered = bench.events.events(matching(source=Source.CARDS, kind="atr", name="ATR"))
        assert not answered, "the card gave an ATR although it was mute"


@needs(Capability.CARDS)
@then(step("the card's trace shows every answer at least {ms:d} milliseconds after its command"))
def every_answer_late(bench: Bench, ms: int) -> None:
    apdus = bench.events.events(lambda e: e.source is Source.CARDS and e.kind in ("c-apdu",
                                                                                  "r-apdu"))
    pairs = [(c, r) for c, r in zip(apdus, apdus[1:], strict=False)
             if c.kind == "c-apdu" and r.kind == "r-apdu"]
    assert len(pairs) >= 4, f"only {len(pairs)} command/answer pairs in the card's trace"
    quick = [f"{c.name} answered after {1000 * (r.t - c.t):.0f} ms" for c, r in pairs
             if r.t - c.t < ms / 1000.0]
    assert not quick, f"answers quicker than {ms} ms: {'; '.join(quick)}"


# -- the stripe reads badly (TS-04, OP-06) ------------------------------------------------------
SALE_CODE = SALE.ecr_code
@needs(Capability.CARDS)
@given(step("the stripe reader misreads the next {n:d} swipes"), target_fixture="stripe_fault")
@given(step("刷卡器接下来{n:d}次读磁条出错"), target_fixture="stripe_fault")
def stripe_misreads(bench: Bench, n: int) -> FaultRecord:
    assert n >= 1, f"misreads {n} swipes: at least one"
    return bench.inject(FaultSpec.of(FaultKind.STRIPE_UNREADABLE, how="lrc", times=n))


@needs(Capability.CARDS)
@given("no swipe can be read: the stripe is worn out", target_fixture="stripe_fault")
@given("磁条磨损，每次刷卡都读不出来", target_fixture="stripe_fault")
def stripe_worn_out(bench: Bench) -> FaultRecord:
    return bench.inject(FaultSpec.of(FaultKind.STRIPE_UNREADABLE, how="lrc", times=0))


@needs(Capability.CARDS)
@given("the next swipe is too fast for the reader", target_fixture="stripe_fault")
@given("下一次刷卡太快，磁道数据读不全", target_fixture="stripe_fault")
def swipe_too_fast(bench: Bench) -> FaultRecord:
    return bench.inject(FaultSpec.of(FaultKind.STRIPE_UNREADABLE, how="data", times=1))


@needs(Capability.CARDS)
@then(step("the card bank spoiled {n:d} swipes and the terminal met each one"))
@then(step("卡座记录显示{n:d}次刷卡被读坏，终端每次都作出了反应"))
def swipes_spoiled(bench: Bench, stripe_fault: FaultRecord, n: int) -> None:
    """From the card bank's side: its fault ledger counts *n* spoiled swipes; each was followed
    by the terminal asking for another swipe or ending the payment, before the next swipe."""
    spoiled = _fault_events(bench, stripe_fault)
    bench.sync_faults()
    assert len(spoiled) == n, (f"the card bank spoiled {len(spoiled)} swipe(s), expected {n}: "
                               f"{'; '.join(e.detail for e in spoiled) or 'none'}")
    assert len(stripe_fault.fired) == n, \
        f"fault #{stripe_fault.id} fired {len(stripe_fault.fired)} time(s) in the ledger, not {n}"
    swipes = bench.events.events(matching(source=Source.CARDS, kind="event", name="swipe"))
    for event in spoiled:
        later = sorted(s.seq for s in swipes if s.seq > event.seq)
        before = later[1] if len(later) > 1 else None  # [0] is the spoiled swipe itself
        answers = bench.events.events(
            lambda e: e.source is Source.TERMINAL and (e.name == Prompt.SWIPE_AGAIN or (
                e.kind == "response" and e.name == SALE_CODE)), since=event.seq)
        answered = next((e for e in answers if before is None or e.seq < before), None)
        assert answered is not None, (f"the terminal neither asked for another swipe nor "
                                      f"ended the payment after: {event.detail}")


# -- the cardholder types a wrong PIN (TS-07) ---------------------------------------------------
def wrong_pin(pin: str) -> str:
    """A PIN of the same length that is not *pin* (every digit one up, 9 → 0)."""
    return "".join(str((int(d) + 1) % 10) for d in pin)


@needs(Capability.CARDS)
@when(step("the cardholder tries to pay {amount:Amount} by chip with the good card and a wrong "
           "PIN"), target_fixture="purchase")
@when(step("持卡人用好卡插卡支付{amount:Amount}元并输入错误密码"), target_fixture="purchase")
def pays_with_wrong_pin(bench: Bench, amount: int) -> Outcome:
    return pay_by_chip(bench, amount, "good", wrong_pin(bench.card_pin("good")))


@needs(Capability.CARDS)
@when(step("the cardholder tries {n:d} times to pay {amount:Amount} by chip with the good card "
           "and a wrong PIN"), target_fixture="purchases")
@when(step("持卡人连续{n:d}次用好卡插卡支付{amount:Amount}元并输入错误密码"),
      target_fixture="purchases")
def pays_n_times_wrong_pin(bench: Bench, n: int, amount: int) -> list[Outcome]:
    pin = wrong_pin(bench.card_pin("good"))
    return [pay_by_chip(bench, amount, "good", pin) for _ in range(n)]


@needs(Capability.WIRE)
@then(parsers.parse("the acquirer answered the attempts with codes {codes}"))
@then(parsers.parse("收单机构依次应答{codes}"))
def attempts_answered(bench: Bench, purchases: list[Outcome], codes: str) -> None:
    expected = [c.strip() for c in re.split(r",|\band\b|和|、", codes) if c.strip()]
    got = [p.response_code for p in purchases]
    assert got == expected, f"the terminal showed host codes {got}, expected {expected}"
    answered = {m.stan: m.response_code for m in bench.acquirer.answered("0210")}
    on_wire = [answered.get(p.stan) for p in purchases]
    assert on_wire == expected, f"the acquirer's answers on the wire were {on_wire}"


@needs(Capability.WIRE)
@then("every attempt carried an encrypted PIN block to the acquirer")
@then("每次请求都带有加密的密码块")
def pin_block_sent(bench: Bench, purchases: list[Outcome]) -> None:
    stans = {p.stan for p in purchases}
    requests = [m for m in bench.acquirer.received("0200") if m.stan in stans]
    assert len(requests) == len(stans), f"{len(requests)} requests on the wire for {len(stans)}"
    missing = [m.stan for m in requests if "52" not in m.fields]
    assert not missing, f"no PIN block (field 52) in the requests with STAN {missing}"


@needs(Capability.LEDGER)
@then("the acquirer charged nothing for it")
@then("收单机构没有扣款")
def charged_nothing(bench: Bench, purchase: Outcome) -> None:
    charged = [e for e in bench.acquirer.booked()
               if e.stan == purchase.stan and e.mti == "0200" and e.booked]
    assert not charged, f"the acquirer booked {len(charged)} charge(s) for STAN {purchase.stan}"


@needs(Capability.WIRE)
@then("the purchase is declined by the card after the acquirer approved it")
@then("收单机构批准后卡片拒绝了交易")
def card_declined_after_approval(bench: Bench, purchase: Outcome) -> None:
    assert not purchase.ok and purchase.reason == "card_declined", \
        f"expected the card's decline, got {purchase.result} reason {purchase.reason!r}"
    answered = [m for m in bench.acquirer.answered("0210") if m.stan == purchase.stan]
    assert answered and answered[-1].response_code == "00", \
        f"the acquirer's answer on the wire for STAN {purchase.stan}: " \
        f"{answered[-1].describe() if answered else 'none'}"
    second = bench.events.events(matching(source=Source.CARDS, kind="c-apdu",
                                          name="GENERATE AC"))
    assert len(second) >= 2, "the terminal never asked the card for its second cryptogram"

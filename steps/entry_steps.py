"""Steps about every way to pay: chip, stripe, tap; online PIN, offline PIN, signature, no
verification; fallback to the stripe; two cards in the contactless field.

The cardholder robot (:mod:`rigs.cardholder`) presents the card and answers the terminal.  The
Thens prove how the card was read and the cardholder verified from outside the terminal's word:
the entry mode and the PIN block in the request that crossed the wire (field 22, field 52), and
the card's own trace (VERIFY for an offline PIN, the contactless channel for a tap).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from pytest_bdd import then, when

from protocols.ecr import Cvm, EntryMode, Prompt
from protocols.iso8583 import PosEntry
from rigs.acquirer import WireMessage
from rigs.bench import Bench
from rigs.capabilities import Capability, needs
from rigs.cardholder import Cardholder, pay
from rigs.events import Source, matching
from rigs.terminal import Outcome
from steps.card_fault_steps import wrong_pin
from steps.parsers import step

ENTRY_WORDS: Mapping[str, EntryMode] = MappingProxyType({
    "chip": EntryMode.CHIP, "stripe": EntryMode.SWIPE, "tap": EntryMode.TAP,
    "插卡": EntryMode.CHIP, "刷卡": EntryMode.SWIPE, "闪付": EntryMode.TAP,
})
CVM_WORDS: Mapping[str, Cvm] = MappingProxyType({
    "online PIN": Cvm.ONLINE_PIN, "offline PIN": Cvm.OFFLINE_PIN,
    "signature": Cvm.SIGNATURE, "no verification": Cvm.NO_CVM,
    "联机密码": Cvm.ONLINE_PIN, "脱机密码": Cvm.OFFLINE_PIN, "签名": Cvm.SIGNATURE,
    "免密": Cvm.NO_CVM,
})
#: Field 22 (POS entry mode) the terminal must send for each way the card was read.
ENTRY_CODES: Mapping[EntryMode, str] = MappingProxyType({
    EntryMode.CHIP: PosEntry.CHIP.value, EntryMode.SWIPE: PosEntry.SWIPE.value,
    EntryMode.TAP: PosEntry.TAP.value,
})


def _entry(word: str) -> EntryMode:
    try:
        return ENTRY_WORDS[word]
    except KeyError:
        raise AssertionError(f"no way to pay {word!r}; known: {', '.join(ENTRY_WORDS)}") from None


def _cvm(word: str) -> Cvm:
    try:
        return CVM_WORDS[word]
    except KeyError:
        raise AssertionError(f"no CVM {word!r}; known: {', '.join(CVM_WORDS)}") from None


def _cardholder(bench: Bench, card: str, entry: EntryMode) -> Cardholder:
    pin = bench.config.cards.bank[card].pin if bench.config.cards else None
    return Cardholder(card, entry, pin=pin)


@needs(Capability.CARDS)
@when(step("the cardholder pays {amount:Amount} by {entry} with the {card} card"),
      target_fixture="purchase")
@when(step("持卡人用{card}卡{entry}支付{amount:Amount}元"), target_fixture="purchase")
def pays_by(bench: Bench, amount: int, entry: str, card: str) -> Outcome:
    return pay(bench, amount, _cardholder(bench, card, _entry(entry)))


@needs(Capability.CARDS)
@when(step("the cardholder pays {amount:Amount} by tap with the {card} card while another "
           "card is in the field"), target_fixture="purchase")
@when(step("持卡人用{card}卡闪付{amount:Amount}元时感应区还有另一张卡"),
      target_fixture="purchase")
def pays_with_two_cards(bench: Bench, amount: int, card: str) -> Outcome:
    who = _cardholder(bench, card, EntryMode.TAP)
    who.second_card = "good" if card != "good" else "credit"
    return pay(bench, amount, who)


@needs(Capability.CARDS)
@when(step("the cardholder pays {amount:Amount} by chip with the {card} card, typing a wrong "
           "PIN first"), target_fixture="purchase")
@when(step("持卡人用{card}卡插卡支付{amount:Amount}元，先输错一次密码"),
      target_fixture="purchase")
def pays_after_wrong_pin(bench: Bench, amount: int, card: str) -> Outcome:
    who = _cardholder(bench, card, EntryMode.CHIP)
    assert who.pin is not None, f"card {card} has no PIN in the bench file"
    who.pins_after_wrong = [who.pin]
    who.pin = wrong_pin(who.pin)
    return pay(bench, amount, who)


@needs(Capability.CARDS)
@when(step("the cardholder pays {amount:Amount} by chip with the {card} card whose chip fails, "
           "then swipes it when the terminal asks"), target_fixture="purchase")
@when(step("持卡人用{card}卡插卡支付{amount:Amount}元，芯片读取失败后按提示刷卡"),
      target_fixture="purchase")
def pays_by_fallback(bench: Bench, amount: int, card: str) -> Outcome:
    who = _cardholder(bench, card, EntryMode.CHIP)
    who.chip_retries = 5  # the terminal decides when to fall back; the robot keeps trying
    return pay(bench, amount, who)


@then(step("the purchase is approved, read by {entry} and verified by {cvm}"))
@then(step("交易成功，读卡方式为{entry}，验证方式为{cvm}"))
def approved_as(bench: Bench, purchase: Outcome, entry: str, cvm: str) -> None:
    mode, method = _entry(entry), _cvm(cvm)
    assert purchase.ok and purchase.response_code == "00", \
        f"purchase not approved: {purchase.result} {purchase.reason or ''} " \
        f"(host code {purchase.response_code or '-'}, display {purchase.display!r})"
    assert purchase.entry_mode == mode, f"read by {purchase.entry_mode}, expected {mode}"
    assert purchase.cvm == method, f"verified by {purchase.cvm}, expected {method}"


@needs(Capability.WIRE)
@then(step("the acquirer received it as read by {entry} with {cvm}"))
@then(step("收单机构收到的请求显示读卡方式为{entry}、验证方式为{cvm}"))
def wire_entry(bench: Bench, purchase: Outcome, entry: str, cvm: str) -> None:
    mode, method = _entry(entry), _cvm(cvm)
    request = _request_of(bench, purchase)
    got = request.fields.get("22", "")
    assert got.startswith(ENTRY_CODES[mode][:2]), \
        f"field 22 on the wire is {got!r}, expected {ENTRY_CODES[mode]} ({mode.value})"
    has_pin_block = "52" in request.fields
    assert has_pin_block == (method is Cvm.ONLINE_PIN), \
        f"a PIN block (field 52) {'is' if has_pin_block else 'is not'} on the wire with " \
        f"{method.value}"


def _request_of(bench: Bench, purchase: Outcome) -> WireMessage:
    requests = [m for m in bench.acquirer.received("0200") if m.stan == purchase.stan]
    assert requests, f"no purchase request with STAN {purchase.stan} reached the acquirer"
    return requests[-1]


@needs(Capability.WIRE)
@then("the acquirer received it as a fallback from chip to stripe")
@then("收单机构收到的请求标明为芯片降级刷卡")
def wire_fallback(bench: Bench, purchase: Outcome) -> None:
    assert purchase.ok and purchase.fallback, \
        f"not an approved fallback: {purchase.result} fallback={purchase.fallback}"
    request = _request_of(bench, purchase)
    got = request.fields.get("22", "")
    assert got == PosEntry.FALLBACK.value, \
        f"field 22 on the wire is {got!r}, expected {PosEntry.FALLBACK.value} (fallback)"
    chip_tries = bench.events.events(matching(source=Source.TERMINAL,
                                              name=Prompt.RETRY_CHIP))
    assert chip_tries, "the terminal never asked to retry the chip before falling back"


@needs(Capability.CARDS)
@then("the card checked the PIN itself, refusing the wrong one first")
@then("卡片自行校验密码，先拒绝了错误的密码")
def card_checked_pin(bench: Bench) -> None:
    verifies = bench.events.events(matching(source=Source.CARDS, kind="r-apdu"))
    answers = [e.name for e in verifies if e.data.get("ins_name") == "VERIFY"]
    assert len(answers) >= 2, f"the card answered {len(answers)} VERIFY command(s)"
    assert answers[0].startswith("63C"), f"the first PIN was answered {answers[0]}, not 63Cx"
    assert answers[-1] == "9000", f"the last PIN was answered {answers[-1]}"


@then("the receipt says the signature was captured")
@then("签购单上注明已采集签名")
def receipt_signed(bench: Bench, purchase: Outcome) -> None:
    assert purchase.signature_captured, "the answer says no signature was captured"
    assert any("SIGNATURE CAPTURED" in r for r in bench.terminal.receipts), \
        "no receipt says the signature was captured"


@then("the terminal asked for one card only before it read the card")
@then("终端提示只放一张卡后才读卡")
def asked_one_card(bench: Bench) -> None:
    asked = bench.events.find(matching(source=Source.TERMINAL, name=Prompt.ONE_CARD_ONLY))
    assert asked is not None, "the terminal never said more than one card was in the field"


@then("the terminal asked for the chip instead of the stripe")
@then("终端提示改用芯片")
def asked_for_chip(bench: Bench) -> None:
    asked = bench.events.find(matching(source=Source.TERMINAL, name=Prompt.INSERT_CHIP))
    assert asked is not None, "the terminal took the chip card's stripe without asking for the chip"

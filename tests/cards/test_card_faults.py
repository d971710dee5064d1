"""Card fault rules (rigs.cardfaults): every kind, counting, clamping, the ledger, and a rule's bug
never passing for a fault.  Pure: no PC/SC, no threads."""

from __future__ import annotations

from typing import Any

import pytest

from protocols.errors import ConfigError
from protocols.faults import FAULT_KINDS, FaultKind, FaultSpec, Target
from rigs.cardfaults import (
    PASS,
    RULE_KINDS,
    CardAction,
    CardCorrupt,
    CardFaultCore,
    CardMessage,
    CardMute,
    CardPulled,
    CardSlow,
    CardStatusWord,
    CardVerdict,
    RuleFailed,
    Stage,
    StripeUnreadable,
)
from rigs.cards import PcscCardBank
from rigs.transport import serial_transport

H = bytes.fromhex
SELECT = H("00A404000E325041592E5359532E444446303100")
READ_1 = H("00B2010C00")
READ_2 = H("00B2020C00")
GEN_AC = H("80AE80001D") + bytes(29) + b"\x00"
GET_RESPONSE = H("00C0000010")
RECORD = H("7011") + H("5F24033012315F25032001019F0702FF00") + H("9000")   # 19 data bytes
AC_OK = H("771E9F2701809F360200019F2608A1A2A3A4A5A6A7A89F100707010103A000009000")


def cmd(capdu: bytes) -> CardMessage:
    return CardMessage(Stage.COMMAND, capdu, b"", capdu[1])


def resp(capdu: bytes, rapdu: bytes) -> CardMessage:
    return CardMessage(Stage.RESPONSE, capdu, rapdu, capdu[1])


def spec(kind: FaultKind, **params: object) -> FaultSpec:
    return FaultSpec.of(kind, **params)


def test_every_card_kind_has_a_rule_and_only_those() -> None:
    cards = {k for k, ks in FAULT_KINDS.items() if ks.target is Target.CARDS}
    assert set(RULE_KINDS) == cards
    for kind in cards:   # each factory builds from a spec with its defaults
        params = {"ins": "SELECT", "sw": "6985", "ms": 10.0}
        wanted = {k: v for k, v in params.items() if k in FAULT_KINDS[kind].params}
        assert callable(RULE_KINDS[kind](spec(kind, **wanted)))


# --- the rules ------------------------------------------------------------------------------------

def test_mute_answers_power_on_and_every_command_mute() -> None:
    rule = CardMute.from_spec(spec(FaultKind.CARD_MUTE))
    assert rule(CardMessage(Stage.POWER_ON)) == CardVerdict.mute("power on answered mute (no ATR)")
    assert rule(cmd(SELECT)) == CardVerdict.mute("SELECT answered mute")
    assert rule(cmd(GEN_AC)).action is CardAction.MUTE
    assert rule(resp(READ_1, RECORD)) is PASS
    assert rule(CardMessage(Stage.ANSWER, b"", H("3B00"))) is PASS


def test_pulled_counts_the_instruction_and_fires_once_at_the_nth() -> None:
    rule = CardPulled.from_spec(spec(FaultKind.CARD_PULLED, ins="B2", nth=2))
    assert rule(cmd(SELECT)) is PASS                 # another instruction: not counted
    assert rule(resp(READ_1, RECORD)) is PASS        # responses are not commands
    assert rule(cmd(READ_1)) is PASS                 # the 1st READ RECORD
    assert rule(cmd(SELECT)) is PASS
    pulled = rule(cmd(READ_2))                       # the 2nd: the card leaves
    assert pulled.action is CardAction.PULL
    assert pulled.what == ("the card left the slot at READ RECORD #2 (answered absent, "
                           "card-detect opens)")
    assert rule(cmd(READ_1)) is PASS and rule(cmd(READ_2)) is PASS   # one-shot


def test_pulled_by_name_at_the_first() -> None:
    rule = CardPulled.from_spec(spec(FaultKind.CARD_PULLED, ins="GENERATE AC"))
    assert rule(cmd(READ_1)) is PASS
    assert rule(cmd(GEN_AC)).action is CardAction.PULL
    assert rule(cmd(GEN_AC)) is PASS


def test_status_word_replaces_the_answer_by_the_sw_alone_times() -> None:
    rule = CardStatusWord.from_spec(spec(FaultKind.CARD_STATUS_WORD, ins="GENERATE AC",
                                         sw="6985", times=2))
    assert rule(cmd(GEN_AC)) is PASS
    assert rule(resp(READ_1, RECORD)) is PASS
    first = rule(resp(GEN_AC, AC_OK))
    assert first == CardVerdict.replace(
        H("6985"), f"GENERATE AC answered 6985 instead of 9000, {len(AC_OK) - 2} data byte(s) "
                   f"dropped")
    assert rule(resp(GEN_AC, H("6A81"))) == CardVerdict.replace(
        H("6985"), "GENERATE AC answered 6985 instead of 6A81")
    assert rule(resp(GEN_AC, AC_OK)) is PASS         # times=2 spent


def test_status_word_times_zero_is_every_one() -> None:
    rule = CardStatusWord(0xA4, 0x6A81, times=0)
    for _ in range(5):
        assert rule(resp(SELECT, H("6F00840E9000"))).data == H("6A81")


@pytest.mark.parametrize(("offset", "index", "clamped"), [(0, 0, False), (3, 3, False),
                                                          (18, 18, False), (19, 18, True),
                                                          (500, 18, True)])
def test_corrupt_flips_one_data_byte_clamped_to_the_last(offset: int, index: int,
                                                         clamped: bool) -> None:
    rule = CardCorrupt.from_spec(spec(FaultKind.CARD_CORRUPT, ins="READ RECORD", offset=offset))
    verdict = rule(resp(READ_1, RECORD))
    assert verdict.action is CardAction.REPLACE
    expected = bytearray(RECORD)
    expected[index] ^= 0xFF
    assert verdict.data == bytes(expected)
    assert verdict.data[-2:] == H("9000")             # SW kept
    assert sum(a != b for a, b in zip(verdict.data, RECORD, strict=True)) == 1
    assert verdict.what.startswith(f"READ RECORD response data byte {index} of 19 flipped "
                                   f"(XOR FF)")
    assert ("past the data" in verdict.what) is clamped
    assert RECORD.hex() not in verdict.what.lower()   # never the data itself


def test_corrupt_leaves_a_response_without_data_alone_and_uncounted() -> None:
    rule = CardCorrupt(0xB2, offset=0, times=1)
    assert rule(resp(READ_1, H("6A83"))) is PASS       # no data: not counted
    assert rule(resp(READ_1, H("9000"))) is PASS
    assert rule(resp(SELECT, RECORD)) is PASS          # another instruction
    assert rule(resp(READ_1, RECORD)).action is CardAction.REPLACE
    assert rule(resp(READ_2, RECORD)) is PASS          # times=1 spent


def test_corrupt_times_zero_and_counting() -> None:
    every = CardCorrupt(0xB2, times=0)
    assert all(every(resp(READ_1, RECORD)).action is CardAction.REPLACE for _ in range(4))
    two = CardCorrupt(0xB2, times=2)
    got = [two(resp(READ_1, RECORD)).action for _ in range(3)]
    assert got == [CardAction.REPLACE, CardAction.REPLACE, CardAction.PASS]


def test_slow_holds_every_answer_the_card_gives() -> None:
    rule = CardSlow.from_spec(spec(FaultKind.CARD_SLOW, ms=100.0))
    atr = rule(CardMessage(Stage.ANSWER, b"", H("3B6500002063CB6600")))
    assert atr == CardVerdict.hold(0.1, "ATR held 100 ms")
    answer = rule(CardMessage(Stage.ANSWER, READ_1, RECORD, 0xB2))
    assert answer == CardVerdict.hold(0.1, "READ RECORD answer held 100 ms")
    for stage in (Stage.POWER_ON, Stage.COMMAND, Stage.RESPONSE):
        assert rule(CardMessage(stage, READ_1, RECORD, 0xB2)) is PASS


def test_stripe_unreadable_spoils_the_next_swipes_only() -> None:
    rule = StripeUnreadable.from_spec(spec(FaultKind.STRIPE_UNREADABLE, times=2))
    swipe = CardMessage(Stage.SWIPE, card="magstripe")
    assert swipe.what == "swipe"
    first = rule(swipe)
    assert (first.action, first.how) == (CardAction.MISREAD, "lrc")
    assert first.what == ("swipe 1 of 2 of card magstripe read badly: LRC of each track wrong "
                          "(a dirty stripe)")
    assert rule(swipe).what.startswith("swipe 2 of 2")
    assert rule(swipe) is PASS  # the third reads well
    for stage in (Stage.POWER_ON, Stage.COMMAND, Stage.RESPONSE, Stage.ANSWER):
        assert rule(CardMessage(stage, READ_1, RECORD, 0xB2)) is PASS


def test_stripe_unreadable_every_swipe_and_cut_data() -> None:
    rule = StripeUnreadable.from_spec(spec(FaultKind.STRIPE_UNREADABLE, how="data", times=0))
    verdicts = [rule(CardMessage(Stage.SWIPE, card="good")) for _ in range(5)]
    assert {v.how for v in verdicts} == {"data"}
    assert verdicts[-1].what.startswith("swipe 5 of card good read badly: track 2 cut short")
    with pytest.raises(ConfigError, match="how must be one of lrc, data, got 'smudge'"):
        StripeUnreadable("smudge")


def test_a_misread_anywhere_but_a_swipe_or_spoiled_an_unknown_way_is_a_rule_failure() -> None:
    core = _core_with(lambda msg: CardVerdict.misread("lrc", "x"))
    with pytest.raises(RuleFailed, match="verdict misread at command of SELECT"):
        core.judge(Stage.COMMAND, 2.0, SELECT)
    core = _core_with(lambda msg: CardVerdict.misread("upside down", "x"))
    with pytest.raises(RuleFailed, match="a misread swipe is spoiled one of lrc, data ways, "
                                         "got 'upside down'"):
        core.judge(Stage.SWIPE, 2.0, card="good")


# --- the core: verdicts, the ledger, a rule's bug -------------------------------------------------

def test_core_refuses_other_targets_naming_the_kind() -> None:
    core = CardFaultCore(owner="PcscCardBank(cards)")
    with pytest.raises(ConfigError, match=r"^PcscCardBank\(cards\): apply\(cable_pull\("
                                          r"direction=both\)\): cable_pull is a network fault; "
                                          r"the card bank carries out card faults only "
                                          r"\(card_mute, card_pulled"):
        core.add(spec(FaultKind.CABLE_PULL), 1.0)
    with pytest.raises(ConfigError, match="paper_out is a switch fault"):
        core.add(spec(FaultKind.PAPER_OUT), 1.0)
    with pytest.raises(ConfigError, match="apply\\(\\) takes a FaultSpec, got dict"):
        core.add({"kind": "card_mute"}, 1.0)  # type: ignore[arg-type]
    limited = CardFaultCore({FaultKind.CARD_MUTE: CardMute.from_spec})
    with pytest.raises(ConfigError, match="kind card_slow has no rule in this card bank; it "
                                          "has card_mute"):
        limited.add(spec(FaultKind.CARD_SLOW, ms=5.0), 1.0)
    assert not core.ledger() and not core.any_active


def test_core_judges_records_trips_and_clears() -> None:
    core = CardFaultCore()
    sw = core.add(spec(FaultKind.CARD_STATUS_WORD, ins="GENERATE AC", sw="6985", times=0), 10.0)
    slow = core.add(spec(FaultKind.CARD_SLOW, ms=50.0), 11.0)
    assert (sw.id, slow.id) == (1, 2) and sw.active and sw.armed == 10.0
    assert core.judge(Stage.COMMAND, 12.0, GEN_AC) == (PASS, [])
    verdict, trips = core.judge(Stage.RESPONSE, 12.5, GEN_AC, AC_OK)
    assert verdict.data == H("6985")
    assert [(t.n, t.rule_id, t.kind, t.wall) for t in trips] == [
        (1, 1, FaultKind.CARD_STATUS_WORD, 12.5)]
    assert trips[0].describe().startswith("fault #1 card_status_word: GENERATE AC answered 6985 "
                                          "instead of 9000")
    verdict, trips = core.judge(Stage.ANSWER, 12.6, GEN_AC, H("6985"))
    assert verdict.action is CardAction.HOLD and verdict.hold_s == pytest.approx(0.05)
    assert trips[0].what == "GENERATE AC answer held 50 ms"
    ledger = {r.id: r for r in core.ledger()}
    assert ledger[1].fired == [12.5] and ledger[2].fired == [12.6]
    assert ledger[1].fired_count == 1 and ledger[1].trips[0].n == 1
    assert [t.n for t in core.trips()] == [1, 2] and [t.n for t in core.trips(after=1)] == [2]

    cleared = core.clear(1, 13.0)
    assert not cleared.active and cleared.cleared == 13.0
    assert core.judge(Stage.RESPONSE, 14.0, GEN_AC, AC_OK)[0] is PASS   # no longer judged
    assert [r.id for r in core.active()] == [2]
    with pytest.raises(ConfigError, match=r"clear\(\): rule #1 card_status_word\(.*\) was "
                                          r"already cleared"):
        core.clear(1, 15.0)
    with pytest.raises(ConfigError, match=r"no card fault rule #9 \(rules kept: #1, #2\)"):
        core.clear(9, 15.0)
    assert [r.id for r in core.clear_all(16.0)] == [2]
    assert not core.any_active and len(core.ledger()) == 2      # cleared ones are kept...
    core.forget_cleared()
    assert core.ledger() == []                                  # ...until a new scenario


def test_core_first_rule_not_passing_decides() -> None:
    core = CardFaultCore()
    core.add(spec(FaultKind.CARD_STATUS_WORD, ins="READ RECORD", sw="6A83", times=1), 1.0)
    core.add(spec(FaultKind.CARD_CORRUPT, ins="READ RECORD", times=1), 1.0)
    first, trips = core.judge(Stage.RESPONSE, 2.0, READ_1, RECORD)
    assert first.data == H("6A83") and [t.rule_id for t in trips] == [1]
    second, trips = core.judge(Stage.RESPONSE, 3.0, READ_2, RECORD)   # sw spent: corrupt's turn
    assert second.data[-2:] == H("9000") and second.data != RECORD
    assert [t.rule_id for t in trips] == [2]
    assert [r.fired_count for r in core.ledger()] == [1, 1]


def test_core_mute_before_pull_and_power_on() -> None:
    core = CardFaultCore()
    core.add(spec(FaultKind.CARD_MUTE), 1.0)
    core.add(spec(FaultKind.CARD_PULLED, ins="SELECT"), 1.0)
    assert core.judge(Stage.POWER_ON, 2.0)[0].action is CardAction.MUTE
    assert core.judge(Stage.COMMAND, 3.0, SELECT)[0].action is CardAction.MUTE
    assert core.ledger()[1].fired == []                 # the pull never saw the command
    core.clear(1, 4.0)
    verdict, trips = core.judge(Stage.COMMAND, 5.0, SELECT)
    assert verdict.action is CardAction.PULL and trips[0].rule_id == 2


def test_get_response_after_61xx_answers_the_command_it_completes() -> None:
    """T=0: READ RECORD → 61xx (no data: not counted) → GET RESPONSE → the record, which is the
    READ RECORD's answer; a GET RESPONSE not following 61xx is its own instruction."""
    core = CardFaultCore()
    core.add(spec(FaultKind.CARD_CORRUPT, ins="READ RECORD", offset=0, times=0), 1.0)

    def exchange(capdu: bytes, rapdu: bytes) -> bytes:
        verdict, _ = core.judge(Stage.RESPONSE, 2.0, capdu, rapdu)
        final = verdict.data if verdict.action is CardAction.REPLACE else rapdu
        core.judge(Stage.ANSWER, 2.0, capdu, final)
        return final

    assert exchange(READ_1, H("6114")) == H("6114")
    got = exchange(GET_RESPONSE, RECORD)
    assert got[0] == RECORD[0] ^ 0xFF
    assert exchange(GET_RESPONSE, RECORD) == RECORD     # no 61xx before it
    assert exchange(READ_1, H("6114")) == H("6114")
    core.judge(Stage.POWER_ON, 3.0)                     # a reset forgets the pending 61xx
    assert exchange(GET_RESPONSE, RECORD) == RECORD
    assert [r.fired_count for r in core.ledger()] == [1]


class _Raises:
    def __call__(self, msg: CardMessage) -> CardVerdict:
        raise IndexError("index out of range")


def _core_with(rule: Any) -> CardFaultCore:
    """A core whose card_mute kind builds *rule* (a broken one, on purpose)."""
    core = CardFaultCore({FaultKind.CARD_MUTE: lambda s: rule})
    core.add(spec(FaultKind.CARD_MUTE), 1.0)
    return core


def test_a_rule_raising_is_a_rule_failure_naming_it_never_a_fault() -> None:
    core = _core_with(_Raises())
    with pytest.raises(RuleFailed, match=r"^card fault rule #1 card_mute\(\) raised IndexError: "
                                         r"index out of range at command of SELECT$"):
        core.judge(Stage.COMMAND, 2.0, SELECT)
    assert core.ledger()[0].fired == []


@pytest.mark.parametrize(("returned", "message"), [
    ("mute", r"returned str, not a CardVerdict, at power on of power on"),
    (CardVerdict.hold(1.0, "x"), r"verdict hold at power on of power on; that stage carries out "
                                 r"mute, pass"),
    (CardVerdict.pull("x"), r"verdict pull at power on"),
    (CardVerdict(CardAction.HOLD, hold_s=float("nan")), r"verdict hold at power on"),
])
def test_a_verdict_the_stage_cannot_carry_out_is_a_rule_failure(returned: object,
                                                                 message: str) -> None:
    core = _core_with(lambda msg: returned)
    with pytest.raises(RuleFailed, match=message):
        core.judge(Stage.POWER_ON, 2.0)


def test_a_replacement_without_sw_or_an_endless_hold_is_a_rule_failure() -> None:
    core = CardFaultCore({FaultKind.CARD_MUTE: lambda s: (  # type: ignore[dict-item]
        lambda msg: CardVerdict.replace(b"\x90", "x") if msg.stage is Stage.RESPONSE
        else CardVerdict.hold(float("inf"), "y") if msg.stage is Stage.ANSWER else PASS)})
    core.add(spec(FaultKind.CARD_MUTE), 1.0)
    with pytest.raises(RuleFailed, match="a replaced R-APDU needs SW1 SW2, got 1 byte"):
        core.judge(Stage.RESPONSE, 2.0, SELECT, H("9000"))
    with pytest.raises(RuleFailed, match="hold of inf s is not a finite time >= 0"):
        core.judge(Stage.ANSWER, 2.0, SELECT, H("9000"))


def test_ledger_keeps_active_rules_and_drops_the_oldest_cleared() -> None:
    core = CardFaultCore(ledger_kept=2)
    core.add(spec(FaultKind.CARD_MUTE), 1.0)
    core.add(spec(FaultKind.CARD_SLOW, ms=1.0), 2.0)
    with pytest.raises(ConfigError, match="2 rules are active, the most this card bank keeps"):
        core.add(spec(FaultKind.CARD_MUTE), 3.0)
    core.clear(1, 4.0)
    assert core.add(spec(FaultKind.CARD_MUTE), 5.0).id == 3
    assert [r.id for r in core.ledger()] == [2, 3]


def test_trips_kept_per_rule_are_bounded_but_all_counted() -> None:
    core = CardFaultCore()
    core.add(spec(FaultKind.CARD_SLOW, ms=1.0), 0.0)
    for i in range(60):
        core.judge(Stage.ANSWER, float(i), READ_1, RECORD)
    (record,) = core.ledger()
    assert record.fired_count == 60 and len(record.fired) == 50
    assert record.fired[0] == 10.0 and record.fired[-1] == 59.0


# --- the bank's fault API, without a reader or a probe ----------------------------------------------

def test_bank_apply_refuses_a_network_fault_naming_the_kind() -> None:
    bank = PcscCardBank("cards", serial_transport("loop://"), {"good": "R0"})
    with pytest.raises(ConfigError, match=r"^PcscCardBank\(cards\): apply\(drop_message\(.*\)\): "
                                          r"drop_message is a network fault"):
        bank.apply(FaultSpec.of(FaultKind.DROP_MESSAGE, mti="0210"))
    rule = bank.apply(FaultSpec.of(FaultKind.CARD_SLOW, ms=5.0))
    assert [r.id for r in bank.active_faults()] == [rule]
    with pytest.raises(ConfigError, match=r"clear\(\) takes a rule id \(int\), got '1'"):
        bank.clear("1")  # type: ignore[arg-type]
    bank.clear(rule)
    assert bank.active_faults() == [] and bank.fault_ledger()[0].id == rule
    assert "fault #1 card_slow(ms=5.0) armed" in bank.trace_text()
    assert "rule #1 card_slow(ms=5.0): cleared, fired 0 time(s)" in bank.faults_text()
    bank.clear_trace()
    assert bank.fault_ledger() == [] and bank.trace_text() == ""

"""Entry modes and cardholder verification in the pure firmware (docs/terminal-behaviour.md,
"Entry modes", "Cardholder verification", "Second GENERATE AC"): swipe and fallback (OP-06,
TS-04), tap under and over the contactless CVM limit and collisions (OP-07), offline PIN right,
wrong and blocked (TS-07), signature (OP-11), the second GENERATE AC (TC, AAC, not supported).
Fake services, the memory journal; every job's result is given by hand."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from protocols import tlv
from protocols.ecr import Cvm, Key, MsgCode
from protocols.iso8583 import PosEntry
from protocols.magstripe import stripe_of
from protocols.transactions import SALE
from sim.terminal.emv import CardRead, KernelState, PinCheck, SecondAc
from sim.terminal.firmware import (
    Action,
    AuthJob,
    ChipJob,
    FirstAcJob,
    SecondAcJob,
    SendHarness,
    StartJob,
    State,
    TapJob,
    TerminalFirmware,
    VerifyJob,
)
from sim.terminal.journal import EntryState, MemoryJournal
from sim.terminal.nvram import MemoryNvram
from sim.terminal.printer import SIGNATURE_CAPTURED
from tests.terminal.fakes import (
    MASKED,
    NOW,
    PAN,
    FakeAuthResult,
    FakeSignInResult,
    FirmwareHands,
    codes,
    ecr_out,
    fast_profile,
    final,
    job_of,
)

PU = SALE.ecr_code
CDOL2 = bytes.fromhex("8A02" "910A" "9505" "9F3704")
OFF = SendHarness({"t": "card_power", "on": False})


def chip_card(*, cvm: str = Cvm.ONLINE_PIN, cryptogram: str = "ARQC", cdol2: bool = True,
              pin_tries: int | None = None, signature_too: bool = False) -> CardRead:
    """A card as the kernel's first step leaves it: read, CVM chosen, still powered."""
    records = {0x8D: CDOL2} if cdol2 else {}
    return CardRead(pan=PAN, pan_seq=1, expiry="3012",
                    track2_equivalent=PAN + "D30122200000000000", aid="A000000333010101",
                    app_label="UnionPay Debit",
                    icc_data=b"" if not cryptogram else b"\x9f\x27\x01\x80",
                    cvm=str(cvm), cryptogram_type=cryptogram, entry="chip",
                    signature_too=signature_too, pin_tries=pin_tries, powered=True,
                    state=KernelState(records, {}))


def tap_card(cvm: str = Cvm.NO_CVM) -> CardRead:
    return dataclasses.replace(chip_card(cvm=cvm, cdol2=False), entry="tap", powered=False)


def tracks(service_code: str, *, bad: bool = False) -> dict[str, str]:
    stripe = stripe_of(PAN, "UNIONPAY/TEST CARD", "3012", service_code, bad_lrc=bad)
    return {"track1": stripe.encoded(1), "track2": stripe.encoded(2)}


class Till(FirmwareHands):
    """A booted, logged-in, signed-in terminal and the hands to drive it."""

    def __init__(self, **profile: Any) -> None:
        self.journal = MemoryJournal()
        self.fw = TerminalFirmware(fast_profile(**profile), MemoryNvram(), journal=self.journal,
                                   clock=lambda: NOW, rng=lambda n: bytes(range(1, n + 1)))
        self.boot()
        assert codes(self.req(MsgCode.LOGIN, op="01", pw="0000")) == ["LI:OK"]
        job = job_of(self.req(MsgCode.SIGN_IN))
        assert codes(self.done(job, FakeSignInResult())) == ["SI:APPROVED"]

    def done(self, job: Any, value: Any = None, failure: str = "", reason: str = "") -> \
            list[Action]:
        return self.result(job, value, failure, reason, f"card {reason}" if reason else "")

    def keys(self, *keys: str) -> list[Action]:
        out: list[Action] = []
        for k in keys:
            out = self.req(MsgCode.KEY, k=k)
        return out

    def sale(self, amount: str = "1000") -> list[Action]:
        out = self.req(PU, amt=amount, cur="156")
        assert codes(out) == ["PG:INSERT_CARD"]
        return out

    def print_out(self) -> list[Action]:
        """Advance until the receipts are out and the final answer came."""
        out: list[Action] = []
        for _ in range(4):
            out += self.advance(0.02)
        return out


# -- magstripe (OP-06, TS-04) ------------------------------------------------------------------

def test_a_swiped_chip_card_is_told_to_insert_its_chip() -> None:
    till = Till(fallback_after=3)
    till.sale()
    assert codes(till.hw(t="swipe", **tracks("220"))) == ["PG:INSERT_CHIP"]
    assert till.fw.state is State.WAIT_CARD and till.fw._pending_job is None


def test_a_bad_read_asks_for_another_swipe() -> None:
    till = Till()
    till.sale()
    assert codes(till.hw(t="swipe", **tracks("101", bad=True))) == ["PG:SWIPE_AGAIN"]
    assert codes(till.hw(t="swipe", track1="", track2="")) == ["PG:SWIPE_AGAIN"]
    assert till.fw.state is State.WAIT_CARD


def test_the_terminal_gives_up_after_swipe_tries_bad_reads_and_sends_nothing() -> None:
    till = Till(swipe_tries=3)
    till.sale()
    assert codes(till.hw(t="swipe", **tracks("101", bad=True))) == ["PG:SWIPE_AGAIN"]
    assert codes(till.hw(t="swipe", track1="", track2="")) == ["PG:SWIPE_AGAIN"]
    out = till.hw(t="swipe", **tracks("101", bad=True))
    msg = final(out)
    assert (msg.get("rc"), msg.get("reason")) == ("CARD_ERROR", "unreadable")
    assert "READ ERROR" in msg.get("text", "")
    assert not [a for a in out if isinstance(a, StartJob)], "a bad swipe started a host job"
    assert till.fw.state is State.IDLE and till.fw._txn is None


def test_bad_swipes_are_counted_per_transaction() -> None:
    till = Till(swipe_tries=2)
    till.sale()
    assert codes(till.hw(t="swipe", **tracks("101", bad=True))) == ["PG:SWIPE_AGAIN"]
    assert codes(till.req(MsgCode.CANCEL)) == ["CN:OK", "PU:CANCELLED"]
    till.sale()  # a new transaction starts counting from zero
    assert codes(till.hw(t="swipe", **tracks("101", bad=True))) == ["PG:SWIPE_AGAIN"]
    out = till.hw(t="swipe", **tracks("101"))  # a good swipe: the purchase goes on
    assert isinstance(job_of(out), AuthJob)


def test_swipe_tries_zero_keeps_asking() -> None:
    till = Till(swipe_tries=0)
    till.sale()
    for _ in range(6):
        assert codes(till.hw(t="swipe", **tracks("101", bad=True))) == ["PG:SWIPE_AGAIN"]
    assert till.fw.state is State.WAIT_CARD


@pytest.mark.parametrize(("service_code", "pin"), [("101", False), ("120", True),
                                                   ("506", True), ("502", False)])
def test_a_magstripe_card_goes_online_with_pin_or_signature_by_its_service_code(
        service_code: str, pin: bool) -> None:
    till = Till()
    till.sale()
    out = till.hw(t="swipe", **tracks(service_code))
    if pin:
        assert codes(out) == ["PG:ENTER_PIN"]
        out = till.keys("1", "2", "3", "4", Key.ENTER)
    auth = job_of(out)
    assert isinstance(auth, AuthJob)
    assert auth.pos_entry == PosEntry.SWIPE == "021"
    assert (auth.pin, auth.card.icc_data) == ("1234" if pin else None, b"")
    assert auth.card.track2_equivalent == f"{PAN}D3012{service_code}0000000000"
    (entry,) = till.journal.entries()
    assert (entry.entry_mode, entry.pos_entry, entry.cvm) == (
        "swipe", "021", "online_pin" if pin else "signature")
    assert till.journal.card_data(entry.id).track2.startswith(PAN + "D3012")  # type: ignore


def test_signature_after_approval_is_captured_and_marked_on_the_receipt() -> None:
    till = Till()
    till.sale("2500")
    auth = job_of(till.hw(t="swipe", **tracks("101")))
    out = till.done(auth, FakeAuthResult())
    assert codes(out) == ["PG:SIGNATURE"] and till.fw.state is State.SIGNATURE
    assert till.req(MsgCode.KEY, k="5") == []            # not a pad key
    out = till.req(MsgCode.KEY, k=Key.ENTER) + till.print_out()
    assert codes(out)[:1] == ["PG:PRINTING"]
    merchant = ecr_out(out)[1].get("text")
    assert SIGNATURE_CAPTURED in merchant and "持卡人签名 SIGNATURE:" in merchant
    assert f"{MASKED} S" in merchant and PAN not in merchant
    msg = final(out)
    assert (msg.get("rc"), msg.get("entry"), msg.get("cvm"), msg.get("sig")) == (
        "APPROVED", "swipe", "signature", "1")
    (entry,) = till.journal.entries()
    assert entry.signature and entry.printed


def test_signature_not_given_in_time_leaves_the_paper_signature_line() -> None:
    till = Till(signature_s=1.0)
    till.sale()
    till.done(job_of(till.hw(t="swipe", **tracks("101"))), FakeAuthResult())
    assert till.advance(0.9) == []
    out = till.advance(0.2) + till.print_out()
    assert SIGNATURE_CAPTURED not in ecr_out(out)[1].get("text")
    assert (final(out).get("rc"), final(out).get("sig")) == ("APPROVED", "0")
    assert not till.journal.entries()[0].signature


def test_cancel_during_the_signature_prints_for_a_paper_signature() -> None:
    till = Till()
    till.sale()
    till.done(job_of(till.hw(t="swipe", **tracks("101"))), FakeAuthResult())
    out = till.req(MsgCode.CANCEL) + till.print_out()
    assert codes(out)[0] == "CN:OK" and final(out).get("rc") == "APPROVED"
    assert final(out).get("sig") == "0"


def test_fallback_after_n_chip_failures_sends_801() -> None:
    till = Till(fallback_after=3, chip_retry_s=3.0)
    till.sale()
    prompts = []
    for n in range(3):
        out = till.hw(t="card", present=True)
        chip = job_of(out)
        assert isinstance(chip, ChipJob)
        out = till.done(chip, failure="card", reason="mute")
        prompts.append(codes(out)[-1])
        assert ecr_out(out)[-1].get("failures") == str(n + 1)
        assert till.fw.state is State.WAIT_CARD
        if n < 2:   # take it out for the next try
            assert codes(till.hw(t="card", present=False)) == ["EV:CARD_REMOVED"]
    assert prompts == ["PG:RETRY_CHIP", "PG:RETRY_CHIP", "PG:SWIPE_CARD"]
    out = till.hw(t="swipe", **tracks("220"))                  # the chip card's stripe
    assert codes(out) == ["PG:ENTER_PIN"]                      # 220: third digit 0, PIN
    auth = job_of(till.keys("1", "2", "3", "4", Key.ENTER))
    assert auth.pos_entry == PosEntry.FALLBACK == "801"
    out = till.done(auth, FakeAuthResult()) + till.print_out()
    msg = final(out)
    assert (msg.get("rc"), msg.get("entry"), msg.get("fallback")) == ("APPROVED", "swipe", "1")
    assert f"{MASKED} F" in ecr_out(out)[1].get("text")
    (entry,) = till.journal.entries()
    assert (entry.entry_mode, entry.pos_entry) == ("swipe", "801")


def test_before_n_failures_a_swiped_chip_card_is_still_refused() -> None:
    till = Till(fallback_after=3)
    till.sale()
    till.done(job_of(till.hw(t="card", present=True)), failure="card", reason="mute")
    assert codes(till.hw(t="swipe", **tracks("220"))) == ["PG:INSERT_CHIP"]


def test_a_chip_left_in_the_slot_after_failing_ends_as_card_error() -> None:
    till = Till(fallback_after=3, chip_retry_s=3.0)
    till.sale()
    out = till.done(job_of(till.hw(t="card", present=True)), failure="card",
                    reason="unsupported")
    assert codes(out) == ["PG:RETRY_CHIP"]
    assert till.advance(2.9) == []
    msg = final(till.advance(0.2))
    assert (msg.get("rc"), msg.get("reason")) == ("CARD_ERROR", "unsupported")
    assert till.fw.state is State.IDLE


@pytest.mark.parametrize("reason", ["absent", "sw 6a81", "sw 6283"])
def test_a_pulled_card_or_a_refusal_is_no_read_failure(reason: str) -> None:
    till = Till(fallback_after=3)
    till.sale()
    out = till.done(job_of(till.hw(t="card", present=True)), failure="card", reason=reason)
    assert (final(out).get("rc"), final(out).get("reason")) == ("CARD_ERROR", reason)


def test_without_fallback_a_chip_failure_ends_at_once() -> None:
    till = Till(fallback_after=0)
    till.sale()
    out = till.done(job_of(till.hw(t="card", present=True)), failure="card", reason="mute")
    assert (final(out).get("rc"), final(out).get("reason")) == ("CARD_ERROR", "mute")


# -- contactless (OP-07) -----------------------------------------------------------------------

def test_a_tap_under_the_cvm_limit_goes_online_without_cvm() -> None:
    till = Till(contactless_cvm_limit=30000)
    till.sale("30000")
    out = till.hw(t="field", cards=1)
    tap = job_of(out)
    assert isinstance(tap, TapJob) and not tap.cvm_required
    assert codes(out) == ["PG:READING_CARD"]
    auth = job_of(till.done(tap, tap_card()))
    assert (auth.pin, auth.pos_entry) == (None, "071")
    msg = final(till.done(auth, FakeAuthResult()) + till.print_out())
    assert (msg.get("rc"), msg.get("entry"), msg.get("cvm")) == ("APPROVED", "tap", "no_cvm")


def test_a_tap_over_the_cvm_limit_asks_for_the_online_pin() -> None:
    till = Till(contactless_cvm_limit=30000)
    till.sale("30001")
    tap = job_of(till.hw(t="field", cards=1))
    assert tap.cvm_required
    assert codes(till.done(tap, tap_card(Cvm.ONLINE_PIN))) == ["PG:ENTER_PIN"]
    auth = job_of(till.keys("4", "3", "2", "1", Key.ENTER))
    assert (auth.pin, auth.pos_entry) == ("4321", "071")


def test_two_cards_in_the_field_are_a_collision_until_one_is_left() -> None:
    till = Till()
    till.sale()
    assert codes(till.hw(t="field", cards=2)) == ["PG:ONE_CARD_ONLY"]
    assert till.fw.state is State.WAIT_CARD and till.fw._pending_job is None
    tap = job_of(till.hw(t="field", cards=1))
    assert isinstance(tap, TapJob)
    # the reader's anticollision found two after all: wait again
    out = till.done(tap, failure="card", reason="collision")
    assert codes(out) == ["PG:ONE_CARD_ONLY"] and till.fw.state is State.WAIT_CARD


def test_a_collision_can_be_cancelled() -> None:
    till = Till()
    till.sale()
    till.hw(t="field", cards=2)
    assert codes(till.req(MsgCode.CANCEL)) == ["CN:OK", "PU:CANCELLED"]


def test_a_card_in_the_field_before_the_sale_is_read_at_once() -> None:
    till = Till()
    assert till.hw(t="field", cards=1) == []               # idle: nothing to read for
    out = till.req(PU, amt="100", cur="156")
    assert codes(out) == ["PG:INSERT_CARD", "PG:READING_CARD"]
    assert isinstance(job_of(out), TapJob)


# -- offline PIN (TS-07) -----------------------------------------------------------------------

def _offline(till: Till) -> None:
    till.sale()
    chip = job_of(till.hw(t="card", present=True))
    out = till.done(chip, chip_card(cvm=Cvm.OFFLINE_PIN, cryptogram="", pin_tries=3))
    assert codes(out) == ["PG:ENTER_PIN"]


def test_offline_pin_right_goes_online_without_a_pin_block() -> None:
    till = Till()
    _offline(till)
    verify = job_of(till.keys("1", "2", "3", "4", Key.ENTER))
    assert isinstance(verify, VerifyJob) and verify.pin == "1234"
    assert "1234" not in repr(verify) and till.fw.state is State.READING_CARD
    first = job_of(till.done(verify, PinCheck(True)))
    assert isinstance(first, FirstAcJob) and first.pin_verified
    auth = job_of(till.done(first, dataclasses.replace(first.card, cryptogram_type="ARQC")))
    assert isinstance(auth, AuthJob) and auth.pin is None and auth.pos_entry == "051"
    assert till.journal.entries()[0].cvm == "offline_pin"


def test_offline_pin_wrong_says_tries_left_then_the_right_one_pays() -> None:
    till = Till()
    _offline(till)
    verify = job_of(till.keys("9", "9", "9", "9", Key.ENTER))
    out = till.done(verify, PinCheck(False, 2))
    assert codes(out) == ["PG:WRONG_PIN", "PG:ENTER_PIN"]
    wrong = ecr_out(out)[0]
    assert wrong.get("tries") == "2" and wrong.get("text") == "密码错 剩余2次 WRONG PIN 2 TRIES LEFT"
    assert till.fw.state is State.PIN_ENTRY
    verify = job_of(till.keys("1", "2", "3", "4", Key.ENTER))
    assert verify.pin == "1234"                        # not "99991234": the entry was cleared
    assert isinstance(job_of(till.done(verify, PinCheck(True))), FirstAcJob)


def test_offline_pin_blocked_declines_and_powers_the_card_off() -> None:
    till = Till()
    _offline(till)
    verify = job_of(till.keys("9", "9", "9", "9", Key.ENTER))
    out = till.done(verify, PinCheck(False, 0))
    assert codes(out) == ["PG:PIN_BLOCKED", "PU:DECLINED"]
    assert OFF in out
    msg = final(out)
    assert (msg.get("reason"), msg.get("text")) == ("pin_blocked", "密码已锁 PIN BLOCKED")
    assert "hrc" not in msg.fields
    (entry,) = till.journal.entries()
    assert (entry.state, entry.result) == (EntryState.REFUSED, "DECLINED")


def test_a_pin_already_blocked_is_declined_without_asking_it() -> None:
    till = Till()
    till.sale()
    chip = job_of(till.hw(t="card", present=True))
    out = till.done(chip, chip_card(cvm=Cvm.OFFLINE_PIN, cryptogram="", pin_tries=0))
    assert codes(out) == ["PG:PIN_BLOCKED", "PU:DECLINED"]


def test_a_card_that_declines_at_its_first_generate_ac_is_declined_offline() -> None:
    till = Till()
    till.sale()
    out = till.done(job_of(till.hw(t="card", present=True)), chip_card(cryptogram="AAC"))
    msg = final(out)
    assert (msg.get("rc"), msg.get("reason")) == ("DECLINED", "card_declined")
    assert OFF in out and not [a for a in out if isinstance(a, StartJob)]


# -- second GENERATE AC ------------------------------------------------------------------------

def _approved_online(till: Till, card: CardRead, answer: FakeAuthResult) -> list[Action]:
    till.sale()
    till.done(job_of(till.hw(t="card", present=True)), card)
    auth = job_of(till.keys("1", "2", "3", "4", Key.ENTER))
    return till.done(auth, answer)


@dataclasses.dataclass
class Answer0210(FakeAuthResult):
    icc_response: bytes = b""


ISSUER_AUTH = bytes.fromhex("0102030405060708") + b"00"


def test_the_card_takes_the_approval_with_a_tc() -> None:
    till = Till()
    out = _approved_online(till, chip_card(), Answer0210(
        icc_response=tlv.encode(0x91, ISSUER_AUTH)))
    second = job_of(out)
    assert isinstance(second, SecondAcJob)
    assert (second.approve, second.response_code, second.issuer_auth) == (True, "00",
                                                                        ISSUER_AUTH)
    out = till.done(second, SecondAc("TC")) + till.print_out()
    assert out[0] == OFF
    assert final(out).get("rc") == "APPROVED"
    assert till.journal.pending_reversals() == []


def test_a_card_that_declines_the_approval_is_reversed() -> None:
    till = Till()
    second = job_of(_approved_online(till, chip_card(), Answer0210()))
    out = till.done(second, SecondAc("AAC"))
    msg = final(out)
    assert (msg.get("rc"), msg.get("reason"), msg.get("hrc")) == ("DECLINED", "card_declined",
                                                                 "00")
    assert "冲正" in msg.get("text") and OFF in out
    (entry,) = till.journal.pending_reversals()
    assert entry.reversal_reason == "06"


def test_a_card_without_the_second_generate_ac_keeps_the_approval() -> None:
    till = Till()
    second = job_of(_approved_online(till, chip_card(), Answer0210()))
    out = till.done(second, SecondAc("unsupported", detail="6D00")) + till.print_out()
    assert final(out).get("rc") == "APPROVED" and not till.journal.pending_reversals()


def test_a_card_without_cdol2_gets_no_second_generate_ac() -> None:
    till = Till()
    out = _approved_online(till, chip_card(cdol2=False), Answer0210())
    assert not [a for a in out if isinstance(a, StartJob)] and OFF in out
    assert codes(out) == ["PG:PRINTING"]


def test_a_card_pulled_at_the_second_generate_ac_is_reversed() -> None:
    till = Till()
    second = job_of(_approved_online(till, chip_card(), Answer0210()))
    out = till.done(second, failure="card", reason="absent")
    msg = final(out)
    assert (msg.get("rc"), msg.get("reason")) == ("CARD_ERROR", "removed")
    assert till.journal.pending_reversals()[0].reversal_reason == "06"


def test_a_host_decline_is_given_to_the_card_as_an_aac_request() -> None:
    till = Till()
    out = _approved_online(till, chip_card(), Answer0210(response_code="51", approved=False,
                                                         auth_code=None))
    second = job_of(out)
    assert (second.approve, second.response_code) == (False, "51")
    msg = final(till.done(second, SecondAc("AAC")))
    assert (msg.get("rc"), msg.get("hrc")) == ("DECLINED", "51")
    assert not till.journal.pending_reversals()


def test_signature_cvm_on_a_chip_card_follows_the_tc() -> None:
    till = Till()
    till.sale()
    auth = job_of(till.done(job_of(till.hw(t="card", present=True)),
                            chip_card(cvm=Cvm.SIGNATURE)))
    assert isinstance(auth, AuthJob) and auth.pin is None
    second = job_of(till.done(auth, Answer0210()))
    assert codes(till.done(second, SecondAc("TC"))) == ["PG:SIGNATURE"]
    out = till.req(MsgCode.KEY, k=Key.ENTER) + till.print_out()
    msg = final(out)
    assert (msg.get("cvm"), msg.get("sig"), msg.get("entry")) == ("signature", "1", "chip")


def test_a_chip_card_pulled_during_pin_entry_is_a_card_error_a_swipe_card_is_not() -> None:
    till = Till()
    till.sale()
    till.done(job_of(till.hw(t="card", present=True)), chip_card())
    out = till.hw(t="card", present=False)
    assert final(out).get("rc") == "CARD_ERROR" and OFF in out
    till.sale()
    assert codes(till.hw(t="swipe", **tracks("120"))) == ["PG:ENTER_PIN"]
    assert codes(till.hw(t="card", present=True)) == ["EV:CARD_INSERTED"]
    assert codes(till.hw(t="card", present=False)) == ["EV:CARD_REMOVED"]
    assert till.fw.state is State.PIN_ENTRY

"""Root only: a swipe and a tap through the real relay (private pcscd + vpcd card process +
PcscCardBank + SimProbe on a pty), read by the terminal's own stripe reader code and
contactless kernel on the harness side; the trace and the event stream hold no track data."""

from __future__ import annotations

import datetime
import threading
import time
from typing import Any

import pytest

from protocols.errors import DecodeError
from protocols.faults import FaultKind, FaultSpec
from protocols.magstripe import encode_track, stripe_of
from rigs.cards import PcscCardBank
from rigs.errors import ConfigError
from rigs.events import EventStream, Source, matching
from sim.card.emv import load_profile
from sim.terminal.emv import CardError, TxnParams, read_contactless
from sim.terminal.stripe import is_chip_card, read_swipe
from tests.cards.conftest import GOOD, needs_root
from tests.cards.probe_host import PtyProbeHost

pytestmark = needs_root

PROFILE = load_profile(GOOD)
PAN = PROFILE.pan
TXN = TxnParams(2_000, datetime.date(2026, 5, 4), bytes.fromhex("0A0B0C0D"))


class FieldSlot:
    """The terminal's contactless reader (sim.terminal.emv.Slot) over harness messages."""

    def __init__(self, host: PtyProbeHost) -> None:
        self.host = host

    def power_on(self, timeout: float) -> bytes:
        self.host.send({"t": "cl_power", "on": True})
        return bytes.fromhex(self._wait("cl_atr", timeout)["atr"])

    def transmit(self, capdu: bytes, timeout: float) -> bytes:
        self.host.send({"t": "cl_capdu", "data": capdu.hex()})
        return bytes.fromhex(self._wait("cl_rapdu", timeout)["data"])

    def power_off(self) -> None:
        self.host.send({"t": "cl_power", "on": False})

    def _wait(self, kind: str, timeout: float) -> dict[str, Any]:
        msg = self.host.expect(kind, timeout)
        if "error" in msg:
            raise CardError(msg["error"], f"{kind} error from the field")
        return msg


def _trace_with(bank: PcscCardBank, wanted: str, bound: float) -> str:
    """The trace once it holds *wanted* (the relay answers in its own thread), bounded."""
    deadline = time.monotonic() + bound
    while wanted not in (text := bank.trace_text()):
        assert time.monotonic() < deadline, f"no {wanted!r} in the trace within {bound} s"
        threading.Event().wait(0.01)
    return text


def _no_card_data(bank: PcscCardBank, stream: EventStream, track2: str) -> None:
    text = bank.trace_text() + "\n" + stream.timeline()
    body = track2[1:track2.index("?")]
    assert PAN not in text and body not in text and body.replace("=", "D") not in text


def test_swipe_through_the_relay(relay: tuple[PcscCardBank, PtyProbeHost]) -> None:
    bank, host = relay
    stream = EventStream()
    bank.event_sink = stream
    host.expect("card", 1.0)
    bank.swipe("good")                       # stripe image read off the chip: no card sheet
    msg = host.expect("swipe", 2.0)
    card = read_swipe(msg["track1"], msg["track2"])
    assert (card.pan, card.expiry, card.service_code) == (PAN, PROFILE.expiry,
                                                          PROFILE.service_code)
    assert is_chip_card(card.service_code) and card.entry == "swipe"
    assert msg["track1"].startswith(f"%B{PAN}^")
    _no_card_data(bank, stream, msg["track2"])
    assert "swipe good: track 1" in bank.trace_text()

    bank.swipe("good", bad_read=True)        # the stripe read badly: the LRC is wrong
    bad = host.expect("swipe", 2.0)
    with pytest.raises(DecodeError, match="LRC"):
        read_swipe(bad["track1"], bad["track2"])
    assert bad["track2"][:-1] == msg["track2"][:-1]

    stripe = stripe_of("6214830000000025", "TEST/MUTE", "3012", "101")
    bank.set_stripe("mute", track1=stripe.encoded(1), track2=stripe.encoded(2))
    bank.swipe("mute")                       # a card sheet's tracks: the chip is not asked
    assert read_swipe("", host.expect("swipe", 2.0)["track2"]).service_code == "101"
    with pytest.raises(ConfigError, match=r"track 2: character 3 is not a track 2 character"):
        bank.set_stripe("mute", track2=";62A" + stripe.encoded(2)[4:])
    damaged = stripe_of("6214830000000025", "TEST/MUTE", "3012", "101", bad_lrc=True)
    bank.set_stripe("mute", track2=damaged.encoded(2))    # a damaged stripe's card sheet
    bank.swipe("mute")
    with pytest.raises(DecodeError, match="LRC"):
        read_swipe("", host.expect("swipe", 2.0)["track2"])
    bank.insert("good")
    with pytest.raises(ConfigError, match="the card is in the slot"):
        bank.swipe("good")
    bank.restore_nominal()
    assert bank.is_nominal()


def test_a_stripe_fault_spoils_swipes_and_is_in_the_ledger(
        relay: tuple[PcscCardBank, PtyProbeHost]) -> None:
    bank, host = relay
    stream = EventStream()
    bank.event_sink = stream
    host.expect("card", 1.0)
    rule = bank.apply(FaultSpec.of(FaultKind.STRIPE_UNREADABLE, how="data", times=1))
    bank.swipe("good")                       # cut short after the PAN, with a right LRC
    cut = host.expect("swipe", 2.0)
    with pytest.raises(DecodeError, match="without separator"):
        read_swipe(cut["track1"], cut["track2"])
    assert cut["track2"] == encode_track(2, PAN)
    bank.swipe("good")                       # the fault was for one swipe: this one reads
    assert read_swipe("", host.expect("swipe", 2.0)["track2"]).pan == PAN
    lrc_rule = bank.apply(FaultSpec.of(FaultKind.STRIPE_UNREADABLE, times=0))
    for _ in range(2):
        bank.swipe("good")
        with pytest.raises(DecodeError, match="LRC"):
            read_swipe("", host.expect("swipe", 2.0)["track2"])
    ledger = {r.id: r for r in bank.fault_ledger()}
    assert ledger[rule].fired_count == 1 and ledger[lrc_rule].fired_count == 2
    trips = stream.events(matching(source=Source.CARDS, kind="fault",
                                   name=FaultKind.STRIPE_UNREADABLE.value))
    assert [t.detail.split(": ", 1)[1] for t in trips] == [
        "swipe 1 of 1 of card good read badly: track 2 cut short after the PAN, LRC right "
        "(a swipe too fast)",
        "swipe 1 of card good read badly: LRC of each track wrong (a dirty stripe)",
        "swipe 2 of card good read badly: LRC of each track wrong (a dirty stripe)"]
    assert "track 2 cut short" in bank.trace_text()
    _no_card_data(bank, stream, encode_track(2, PAN + "=3012"))
    bank.clear(lrc_rule)
    bank.swipe("good")
    assert read_swipe("", host.expect("swipe", 2.0)["track2"]).pan == PAN
    bank.restore_nominal()
    assert bank.is_nominal()


def test_tap_through_the_relay(relay: tuple[PcscCardBank, PtyProbeHost]) -> None:
    bank, host = relay
    stream = EventStream()
    bank.event_sink = stream
    host.expect("card", 1.0)
    bank.tap("good")
    assert host.expect("field", 1.0) == {"t": "field", "cards": 1}
    assert bank.field == ("good",) and not bank.is_nominal()
    read = read_contactless(FieldSlot(host), TXN, cvm_required=False)
    assert (read.pan, read.entry, read.cvm, read.cryptogram_type) == (PAN, "tap", "no_cvm",
                                                                      "ARQC")
    text = _trace_with(bank, "terminal reset its contactless field", 2.0)   # POWER_OFF, ACKed
    assert "(contactless)" in text
    assert "621483******0017" in text and PAN not in text
    commands = [e.name for e in stream.events(matching(source=Source.CARDS, kind="c-apdu"))]
    assert commands[0] == "SELECT" and "GET PROCESSING OPTIONS" in commands

    bank.tap_both("good", "mute")            # two cards: the reader sees a collision
    assert host.expect("field", 1.0) == {"t": "field", "cards": 2}
    with pytest.raises(CardError) as err:
        read_contactless(FieldSlot(host), TXN, cvm_required=False)
    assert err.value.reason == "collision"
    bank.take_away()
    assert host.expect("field", 1.0) == {"t": "field", "cards": 0}
    assert bank.field == () and bank.is_nominal()

    bank.tap("good")
    host.expect("field", 1.0)
    bank.restore_nominal()                   # the field is emptied too
    assert host.expect("field", 1.0) == {"t": "field", "cards": 0} and bank.is_nominal()

"""Property tests of the card simulator: any C-APDU, in any state of a session, is answered
with a status word (never an exception), and a refused one leaves the card's counters alone."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from protocols.apdu import CommandApdu
from protocols.errors import DecodeError
from sim.card.emv import SimEmvCard, load_profile
from tests.cards.conftest import CARDS_DIR

H = bytes.fromhex
SESSION = [H("00A404000E315041592E5359532E444446303100"), H("00A4040008A00000033301010100"),
           H("80A8000014831200000001234501560156250630" "00A1B2C3D4" "00")]
INS = [0xA4, 0xB2, 0xA8, 0xCA, 0xAE, 0x20, 0xC0, 0x84, 0x88]


@st.composite
def capdus(draw: st.DrawFn) -> bytes:
    """Mostly EMV-shaped (a known CLA and INS, Lc right or wrong), sometimes any bytes."""
    if draw(st.integers(0, 4)) == 0:
        return draw(st.binary(max_size=300))
    head = bytes([draw(st.sampled_from([0x00, 0x80, 0x84, 0xFF, draw(st.integers(0, 255))])),
                  draw(st.sampled_from(INS)), draw(st.integers(0, 255)),
                  draw(st.integers(0, 255))])
    data = draw(st.binary(max_size=260))
    lc = draw(st.one_of(st.just(len(data) & 0xFF), st.integers(0, 255)))
    le = draw(st.one_of(st.just(b""), st.binary(min_size=1, max_size=2)))
    return head + (bytes([lc]) + data if data or draw(st.booleans()) else b"") + le


def _parses(capdu: bytes) -> bool:
    try:
        CommandApdu.from_bytes(capdu)
    except DecodeError:
        return False
    return True


@given(st.sampled_from(["good", "offline_pin", "contactless", "blocked", "pin_exhausted",
                        "credit", "decline_gac"]),
       st.integers(0, len(SESSION)), st.lists(capdus(), min_size=1, max_size=6))
def test_any_capdu_gets_a_status_word(name: str, steps: int, commands: list[bytes]) -> None:
    card = SimEmvCard(load_profile(CARDS_DIR / f"{name}.yaml"))
    card.power_on()
    for capdu in SESSION[:steps]:
        card.apdu(capdu)
    for capdu in commands:
        atc, tries = card.atc, card.pin_try_counter
        rapdu = card.apdu(capdu)
        assert len(rapdu) >= 2, capdu.hex()
        sw1 = rapdu[-2]
        assert sw1 == 0x90 or 0x61 <= sw1 <= 0x6F, rapdu.hex()
        if _parses(capdu) and capdu[0] not in (0x00, 0x80):  # EMV speaks classes 00 and 80
            assert rapdu == H("6E00"), capdu.hex()
        if sw1 in (0x67, 0x6A, 0x6B, 0x6D, 0x6E):  # refused outright: nothing counted
            assert (card.atc, card.pin_try_counter) == (atc, tries), capdu.hex()

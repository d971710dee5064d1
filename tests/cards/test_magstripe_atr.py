"""protocols.atr (the one ATR check) and protocols.magstripe (the one track layout and LRC),
with values worked out by hand from ISO/IEC 7816-3 and ISO/IEC 7811-2."""

from __future__ import annotations

import pytest

from protocols.atr import atr_problem, parse_atr
from protocols.errors import DecodeError
from protocols.magstripe import decode_track, encode_track, lrc, stripe_of, track1_data


def test_the_bench_atr_is_t0_direct_with_five_historical_bytes() -> None:
    atr = parse_atr(bytes.fromhex("3B6500002063CB6600"))
    assert (atr.convention, atr.protocols) == ("direct", (0,))
    assert atr.interface == (("TB1", 0x00), ("TC1", 0x00))
    assert atr.historical == bytes.fromhex("2063CB6600")


def test_a_t1_atr_needs_its_tck() -> None:
    body = bytes.fromhex("3B888001" "4A434F5032314000")     # TD1 80 (T=0), TD2 01 (T=1)
    atr = parse_atr(body + bytes([0x5C]))                   # 88^80^01^4A^…^00 = 5C
    assert atr.protocols == (0, 1)
    with pytest.raises(DecodeError, match=r"expected at offset 12; the ATR ends there"):
        parse_atr(body)
    with pytest.raises(DecodeError, match=r"TCK at offset 12 is 06; T0..TCK XOR to 5A, "
                                          r"expected 00 \(TCK 5C\)"):
        parse_atr(body + bytes([0x06]))


@pytest.mark.parametrize(("atr", "says"), [
    ("3B", r"1 bytes; an ATR is 2 to 33 bytes"),
    ("3A6500002063CB6600", r"TS at offset 0 is 3A; expected 3B"),
    ("3B6500002063CB", r"T0 announces 5 historical bytes from offset 4, only 3 follow"),
    ("3B6500002063CB660000", r"1 byte\(s\) after the end at offset 9"),
    ("3B80", r"TD1 expected at offset 2"),
])
def test_broken_atrs_name_the_offset(atr: str, says: str) -> None:
    with pytest.raises(DecodeError, match=says):
        parse_atr(bytes.fromhex(atr))
    assert atr_problem(bytes.fromhex(atr)) is not None


def test_lrc_worked_by_hand() -> None:
    # track 2 ";12=3?": data bits B ^ 1 ^ 2 ^ D ^ 3 ^ F = 9 → '9'
    assert lrc(2, ";12=3?") == "9"
    assert encode_track(2, "12=3") == ";12=3?9"
    # track 1 "%B1^A^?": 05 ^ 22 ^ 11 ^ 3E ^ 21 ^ 3E ^ 1F = 08 → chr(0x20 + 8) = '('
    assert encode_track(1, "B1^A^") == "%B1^A^?("
    assert encode_track(2, "12=3", bad_lrc=True) == ";12=3?8"


@pytest.mark.parametrize(("track", "raw", "says"), [
    (2, ";12=3?8", r"track 2: LRC error \(character 6"),
    (2, "12=3?9", r"no start sentinel ';'"),
    (2, ";12=3?", r"end sentinel '\?' expected at character 4"),
    (2, ";12A3?9", r"character 3 is not a track 2 character"),
    (1, "%B1^a^?(", r"character 4 is not a track 1 character"),
])
def test_decode_track_refuses_and_never_shows_data(track: int, raw: str, says: str) -> None:
    with pytest.raises(DecodeError, match=says) as err:
        decode_track(track, raw)
    assert "12=3" not in str(err.value)


def test_track_lengths_are_bounded() -> None:
    with pytest.raises(DecodeError, match=r"track 2: 41 characters"):
        encode_track(2, "1" * 38)
    with pytest.raises(DecodeError, match="the name is 27 characters"):
        track1_data("6214830000000017", "N" * 27, "3012", "220")


def test_stripe_of_derives_both_tracks_and_hides_them() -> None:
    stripe = stripe_of("6214830000000017", "UNIONPAY/TEST CARD", "3012", "220")
    assert decode_track(2, stripe.encoded(2)) == "6214830000000017=30122200000000000"
    assert decode_track(1, stripe.encoded(1)).startswith("B6214830000000017^UNIONPAY/TEST CARD^")
    assert "6214830000000017" not in repr(stripe)


def test_no_such_track_and_other_digits_are_decode_errors() -> None:
    """``decode_track(3, …)`` used to raise ValueError; a PAN of superscript digits passed
    ``isdigit()``."""
    with pytest.raises(DecodeError, match=r"^track 3: there is no such track; expected 1 or 2$"):
        decode_track(3, ";12=3?9")
    with pytest.raises(DecodeError, match=r"^track 2: PAN must be digits$"):
        stripe_of("621483000000001²", "A B", "3012", "220")

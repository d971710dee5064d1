"""Digits mean ASCII 0-9: ``str.isdigit()`` also says yes to superscripts, fullwidth and other
scripts' digits, which must never pass for a PAN, a PIN, a numeric ISO 8583 field or a swiped
track (issue 11's bad-input list)."""

from __future__ import annotations

import pytest

from protocols.crypto import pin_block_clear
from protocols.digits import ascii_digits
from protocols.errors import RigError
from protocols.iso8583 import encode_message
from protocols.masking import mask_pan
from sim.terminal.stripe import read_swipe

NOT_ASCII = ("²", "１２３４", "١٢٣٤", "12³4")


def test_only_ascii_digits_are_digits() -> None:
    assert ascii_digits("0123456789")
    assert not ascii_digits("") and not ascii_digits("12a") and not ascii_digits(" 12")
    for text in NOT_ASCII:
        assert text.isdigit() and not ascii_digits(text)


@pytest.mark.parametrize("pin", ["１２３４", "١٢٣٤", "12³4"])
def test_a_pin_of_other_digits_is_refused(pin: str) -> None:
    with pytest.raises(RigError):
        pin_block_clear(pin, "6214830000000017")


def test_a_pan_of_other_digits_is_refused_and_never_shown_as_a_pan() -> None:
    with pytest.raises(RigError):
        pin_block_clear("1234", "６２１４８３００００００００１７")
    assert mask_pan("６２１４８３００００００００１７") == "*" * 16


def test_a_numeric_field_of_other_digits_is_not_encoded() -> None:
    with pytest.raises(RigError, match="field 4 must be decimal digits"):
        encode_message({"t": "0200", "3": "000000", "4": "0000000001²0", "11": "000001"})


def test_a_track_of_other_digits_is_a_bad_swipe() -> None:
    with pytest.raises(RigError):
        read_swipe("", ";６２１４８３００００００００１７=30122201?0")

"""One list of sensitive EMV tags (protocols.masking.SENSITIVE_TAGS) and one masked renderer over
protocols.tlv: the APDU trace and ISO 8583 field 55 mask by tag, so an AID or a label is shown in
clear and only card data is masked."""

from __future__ import annotations

import pytest

from protocols import tlv
from protocols.iso8583 import describe
from protocols.masking import SENSITIVE_TAGS, TagMask, mask_pan, render_tlv
from rigs.cards import render_apdu

PAN = "6214830000000017"
AID = "A000000333010101"
LABEL = b"UnionPay Debit"
TRACK2 = PAN + "D30122201234567F"


def _record() -> bytes:
    return tlv.encode(0x70, tlv.encode_many([
        (0x4F, bytes.fromhex(AID)), (0x50, LABEL), (0x5A, bytes.fromhex(PAN)),
        (0x57, bytes.fromhex(TRACK2)), (0x5F20, b"UNIONPAY/TEST CARD"),
    ]))


def test_r_apdu_shows_aid_and_label_masks_pan_blanks_track() -> None:
    text = render_apdu("R-APDU", _record() + b"\x90\x00")
    assert f"4F08{AID}" in text                              # AID in clear, not A000000*****0101
    assert f"500E{LABEL.hex().upper()}" in text             # label in clear
    assert "5A08[621483******0017]" in text                  # PAN first 6 / last 4
    assert "5710[blanked]" in text and "5F2012[blanked]" in text
    assert PAN not in text and "D3012" not in text
    assert b"UNIONPAY/TEST CARD".hex().upper() not in text
    assert text.startswith("704B{") and text.endswith("} 9000")


def test_fci_and_select_show_the_aid() -> None:
    fci = tlv.encode(0x6F, tlv.encode(0x84, bytes.fromhex(AID))
                     + tlv.encode(0xA5, tlv.encode(0x50, LABEL)))
    assert f"8408{AID}" in render_apdu("R-APDU", fci + b"\x90\x00")
    assert render_apdu("C-APDU", bytes.fromhex(f"00A4040008{AID}00")) == f"00A4040008{AID}00"


def test_field_55_uses_the_same_list() -> None:
    icc = tlv.encode_many([(0x9F26, bytes(8)), (0x4F, bytes.fromhex(AID))]
                          + [(tag, bytes.fromhex("62148300000000171234")) for tag in SENSITIVE_TAGS])
    field55 = describe({"55": icc.hex().upper()})["55"]
    trace = render_apdu("R-APDU", icc + b"\x90\x00")
    assert PAN not in field55 and PAN not in trace
    assert f"4F={AID}" in field55 and f"4F08{AID}" in trace
    for tag, how in SENSITIVE_TAGS.items():
        name = tlv.tag_bytes(tag).hex().upper()
        assert f"{name}=[redacted 10 bytes]" in field55
        shown = mask_pan("62148300000000171234") if how is TagMask.PAN else "blanked"
        assert f"{name}0A[{shown}]" in trace


@pytest.mark.parametrize("style", ["apdu", "fields"])
def test_bad_tlv_is_a_note_never_an_exception(style: str) -> None:
    data = tlv.encode(0x9F36, b"\x00\x01") + bytes.fromhex("5A08" + PAN[:8])  # PAN cut short
    text = render_tlv(data, style=style)  # type: ignore[arg-type]
    first = "9F36020001" if style == "apdu" else "9F36=0001"
    assert text == (f"{first} [not BER-TLV from offset 5: tag 5A at offset 5: value of 8 bytes "
                    f"expected at offset 7, only 4 left; 6 bytes not shown]")
    assert PAN not in render_apdu("R-APDU", bytes.fromhex("5A" + "FF" + PAN) + b"\x90\x00")


def test_a_pan_masked_in_a_capture_is_shown_masked_and_never_taken_for_a_pan() -> None:
    assert mask_pan("621483FFFFFF0058") == "621483******0058"  # masked in place (F nibbles)
    assert mask_pan("6214830000000058") == "621483******0058"  # a real PAN
    assert mask_pan("62148FFFFFF0058") == "*" * 15  # not the masked shape: all hidden

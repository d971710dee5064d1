from __future__ import annotations

import pytest

from protocols import tlv
from protocols.apdu import CommandApdu, ResponseApdu, StatusWordError, sw_text
from protocols.errors import DecodeError
from protocols.masking import render_tlv


def test_encode_multibyte_tag_and_long_lengths() -> None:
    assert tlv.encode(0x9F26, bytes(8)) == bytes.fromhex("9F2608") + bytes(8)
    assert tlv.encode(0x70, bytes(200))[:3] == bytes.fromhex("7081C8")
    assert tlv.encode(0x70, bytes(300))[:4] == bytes.fromhex("7082012C")
    assert tlv.encode_length(127) == b"\x7f"
    assert tlv.encode_length(128) == b"\x81\x80"


def test_decode_nested_with_offsets() -> None:
    raw = bytes.fromhex("6F0B 8402 A0B0 A505 9F38 0201 02".replace(" ", ""))
    (fci,) = tlv.decode(raw)
    assert fci.tag == 0x6F and fci.constructed
    assert [c.tag for c in fci.children] == [0x84, 0xA5]
    pdol = fci.find(0x9F38)
    assert pdol is not None and pdol.value == b"\x01\x02" and pdol.offset == 8
    assert tlv.flatten(raw) == {0x84: b"\xa0\xb0", 0x9F38: b"\x01\x02"}
    assert tlv.find(raw, 0x9F38) == b"\x01\x02"


def test_decode_long_length_and_padding() -> None:
    raw = b"\x00" + tlv.encode(0x70, tlv.encode(0x5A, bytes(130))) + b"\xff"
    (rec,) = tlv.decode(raw)
    assert rec.offset == 1 and rec.children[0].value == bytes(130)


def test_decode_errors_name_tag_and_offset() -> None:
    with pytest.raises(DecodeError, match=r"^TLV: tag 9F26 at offset 0: value of 8 bytes "
                                          r"expected at offset 3, only 2 left"):
        tlv.decode(bytes.fromhex("9F26080102"))
    with pytest.raises(DecodeError, match=r"^TLV: tag 9F… at offset 2 is truncated"):
        tlv.decode(bytes.fromhex("5A009F"))
    with pytest.raises(DecodeError, match=r"^TLV: tag 70 at offset 0: bad length byte 84 at "
                                          r"offset 1 \(expected 00-7F or 81-83\)"):
        tlv.decode(bytes.fromhex("7084"))
    # error inside a constructed value reports the absolute offset
    with pytest.raises(DecodeError, match=r"tag 5A at offset 2: value of 5 bytes expected at "
                                          r"offset 4, only 1 left"):
        tlv.decode(bytes.fromhex("70035A0501"))


def test_dol_parse_build_split() -> None:
    dol = tlv.parse_dol(bytes.fromhex("9F0206 5F2A02 9F3704 5003".replace(" ", "")))
    assert dol == [tlv.DolEntry(0x9F02, 6), tlv.DolEntry(0x5F2A, 2), tlv.DolEntry(0x9F37, 4),
                   tlv.DolEntry(0x50, 3)]
    data = tlv.build_dol(dol, {0x9F02: b"\x12\x34", 0x5F2A: b"\x01\x56\x99", 0x50: b"ABCD"})
    assert data.hex() == "000000001234" "5699" "00000000" "414243"
    assert tlv.split_dol(dol, data)[0x50] == b"ABC"
    with pytest.raises(DecodeError, match=r"^DOL: tag 9F37 at offset 3: length expected at "
                                          r"offset 5, data ends"):
        tlv.parse_dol(bytes.fromhex("9F02069F37"))
    with pytest.raises(DecodeError, match=r"expected 15 bytes for 4 entries, got 2"):
        tlv.split_dol(dol, b"\x00\x00")


@pytest.mark.parametrize(("raw", "case", "data", "le"), [
    ("00A40400", 1, "", None),
    ("00B2010C00", 2, "", 256),
    ("00A4040002A0B0", 3, "a0b0", None),
    ("00A4040002A0B000", 4, "a0b0", 256),
    ("80CA9F3605", 2, "", 5),
])
def test_command_apdu_cases(raw: str, case: int, data: str, le: int | None) -> None:
    cmd = CommandApdu.from_bytes(bytes.fromhex(raw))
    assert (cmd.case, cmd.data.hex(), cmd.le) == (case, data, le)
    assert cmd.to_bytes() == bytes.fromhex(raw)


def test_command_apdu_errors() -> None:
    with pytest.raises(DecodeError, match=r"^C-APDU: header needs 4 bytes, got 3: 00 a4 04"):
        CommandApdu.from_bytes(bytes.fromhex("00A404"))
    with pytest.raises(DecodeError, match=r"^C-APDU: Lc=5 at offset 4 but 2 bytes follow "
                                          r"\(expected 5 or 6\)"):
        CommandApdu.from_bytes(bytes.fromhex("00A4040005A0B0"))


def test_response_apdu_and_sw() -> None:
    r = ResponseApdu.from_bytes(bytes.fromhex("6F009000"))
    assert r.ok and r.data == b"\x6f\x00" and r.check() == b"\x6f\x00"
    with pytest.raises(StatusWordError, match=r"^SW 6A82 \(file or application not found\): "
                                              r"SELECT") as err:
        ResponseApdu.from_bytes(bytes.fromhex("6A82")).check("SELECT")
    assert err.value.sw == 0x6A82
    assert sw_text(0x6110) == "6110 (16 more bytes available)"
    with pytest.raises(DecodeError, match="R-APDU: needs at least SW1 SW2"):
        ResponseApdu.from_bytes(b"\x90")


def _nested(levels: int, inner: bytes = tlv.encode(0x5A, b"\x01")) -> bytes:
    """*levels* constructed templates (70) around *inner*."""
    for _ in range(levels):
        inner = tlv.encode(0x70, inner)
    return inner


def test_nesting_is_bounded_by_max_depth() -> None:
    ok = _nested(tlv.MAX_DEPTH - 1)  # the primitive 5A is at depth MAX_DEPTH
    assert tlv.flatten(ok) == {0x5A: b"\x01"} and tlv.find(ok, 0x5A) == b"\x01"
    too_deep = _nested(tlv.MAX_DEPTH)
    deepest = 2 * (tlv.MAX_DEPTH - 1)  # each 70 with its length takes 2 bytes here
    with pytest.raises(tlv.TlvError, match=rf"^TLV: constructed tag 70 at offset {deepest} is "
                                           rf"at depth {tlv.MAX_DEPTH}; its value would nest "
                                           rf"deeper than {tlv.MAX_DEPTH} levels$") as err:
        tlv.decode(too_deep)
    assert err.value.offset == deepest


def test_thousands_of_nested_templates_are_a_tlv_error_not_a_recursion_error() -> None:
    """Every walker (decode, flatten, find, the masked renderer) used to end in RecursionError
    on a few thousand nested constructed tags (2 bytes each: E0 or 70 with a short length)."""
    raw = _nested(3000)
    for walk in (tlv.decode, tlv.flatten, lambda d: tlv.find(d, 0x5A)):
        with pytest.raises(tlv.TlvError, match="would nest deeper than"):
            walk(raw)
    assert "would nest deeper than" in render_tlv(raw)


@pytest.mark.parametrize(("raw", "offset"), [
    ("9F818101", 0),            # 9F 81 81 01 announces a 4th tag byte
    ("5A01009F8181818101", 3),  # a 5-byte tag after a good object
])
def test_tags_longer_than_three_bytes_are_refused_with_their_offset(raw: str,
                                                                    offset: int) -> None:
    with pytest.raises(tlv.TlvError, match=rf"^TLV: tag 9F8181… at offset {offset} is longer "
                                           rf"than 3 bytes \(byte {offset + 2} announces "
                                           rf"another\)") as err:
        tlv.decode(bytes.fromhex(raw))
    assert err.value.offset == offset
    (three,) = tlv.decode(bytes.fromhex("9F810101AA"))
    assert (three.tag, three.value) == (0x9F8101, b"\xaa")
    with pytest.raises(ValueError, match="tag 9F818101 is 4 bytes; at most 3"):
        tlv.encode(0x9F818101, b"")


def test_dol_errors_are_tlv_errors_naming_the_dol() -> None:
    with pytest.raises(tlv.TlvError, match=r"^DOL: tag 9F8181… at offset 3 is longer than 3 "
                                           r"bytes"):
        tlv.parse_dol(bytes.fromhex("9F0206" "9F81818101" "04"))
    with pytest.raises(tlv.TlvError, match=r"^DOL: tag 9F… at offset 0 is truncated"):
        tlv.parse_dol(b"\x9f")
    with pytest.raises(tlv.TlvError, match=r"^DOL data: expected 6 bytes for 1 entries, got 7"):
        tlv.split_dol([tlv.DolEntry(0x9F02, 6)], bytes(7))

from __future__ import annotations

import pytest

from protocols import tlv
from protocols.apdu import CommandApdu, ResponseApdu, StatusWordError, sw_text
from protocols.errors import DecodeError


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
